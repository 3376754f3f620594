//! Reads the parts of a keepalived.conf that map to tandem: `vrrp_instance`
//! and the `vrrp_script`s they track.

use super::Refusal;

#[derive(Debug, Default)]
pub struct KeepalivedConfig {
    pub instances: Vec<Instance>,
    pub notes: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Instance {
    pub name: String,
    pub interface: String,
    pub virtual_router_id: u8,
    pub priority: u8,
    pub advert_interval_ms: u64,
    pub preempt: bool,
    pub preempt_delay_ms: Option<u64>,
    pub virtual_ips: Vec<String>,
    pub unicast_peers: Vec<String>,
    pub track: Option<Track>,
    pub notify_master: Option<String>,
    pub notify_backup: Option<String>,
    pub notify_fault: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Track {
    pub script: String,
    pub command: String,
    pub weight: i32,
}

/// A statement: its words, its line, and the block that follows it, if any.
#[derive(Debug)]
struct Node {
    words: Vec<String>,
    line: usize,
    children: Vec<Node>,
}

fn tokenize(text: &str) -> Vec<(String, usize)> {
    let mut tokens = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let mut chars = raw.chars().peekable();
        let mut word = String::new();
        while let Some(c) = chars.next() {
            match c {
                '#' | '!' if word.is_empty() => break,
                '"' => {
                    for c in chars.by_ref() {
                        if c == '"' {
                            break;
                        }
                        word.push(c);
                    }
                    tokens.push((std::mem::take(&mut word), n + 1));
                }
                '{' | '}' => {
                    if !word.is_empty() {
                        tokens.push((std::mem::take(&mut word), n + 1));
                    }
                    tokens.push((c.to_string(), n + 1));
                }
                c if c.is_whitespace() => {
                    if !word.is_empty() {
                        tokens.push((std::mem::take(&mut word), n + 1));
                    }
                }
                c => word.push(c),
            }
        }
        if !word.is_empty() {
            tokens.push((word, n + 1));
        }
        tokens.push(("\n".to_owned(), n + 1));
    }
    tokens
}

fn parse_nodes(tokens: &[(String, usize)], pos: &mut usize) -> Vec<Node> {
    let mut nodes = Vec::new();
    let mut words = Vec::new();
    let mut line = 0;
    while *pos < tokens.len() {
        let (t, l) = &tokens[*pos];
        *pos += 1;
        match t.as_str() {
            "{" => {
                let children = parse_nodes(tokens, pos);
                // A block with no keyword before it is on the line of its `{`.
                let line = if words.is_empty() { *l } else { line };
                nodes.push(Node {
                    words: std::mem::take(&mut words),
                    line,
                    children,
                });
            }
            "}" => break,
            "\n" => {
                if !words.is_empty() {
                    nodes.push(Node {
                        words: std::mem::take(&mut words),
                        line,
                        children: Vec::new(),
                    });
                }
            }
            _ => {
                if words.is_empty() {
                    line = *l;
                }
                words.push(t.clone());
            }
        }
    }
    if !words.is_empty() {
        nodes.push(Node {
            words,
            line,
            children: Vec::new(),
        });
    }
    nodes
}

/// Keywords that have no tandem equivalent but change nothing tandem does.
const DROPPED: &[(&str, &str)] = &[
    (
        "state",
        "tandem starts as backup and elects by priority, whatever `state` says",
    ),
    (
        "authentication",
        "VRRP version 3 has no authentication; tandem speaks version 3",
    ),
    ("vrrp_version", "tandem speaks VRRP version 3"),
    (
        "unicast_src_ip",
        "tandem uses the interface's primary address",
    ),
    ("garp_master_delay", "see `garp` in docs/vrrp.md"),
    ("garp_master_repeat", "see `garp` in docs/vrrp.md"),
    ("garp_master_refresh", "see `garp` in docs/vrrp.md"),
    ("dont_track_primary", "not needed"),
];

/// How deep `{` blocks may nest.
const MAX_DEPTH: usize = 16;

pub fn parse(text: &str, file: &str) -> Result<KeepalivedConfig, Vec<Refusal>> {
    let tokens = tokenize(text);
    // Blocks nest by recursion: refuse what no keepalived.conf needs (they
    // nest three deep) before it can exhaust the stack.
    let mut depth = 0usize;
    for (t, line) in &tokens {
        match t.as_str() {
            "{" => depth += 1,
            "}" => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth > MAX_DEPTH {
            return Err(vec![Refusal {
                file: file.to_owned(),
                line: *line,
                message: format!("blocks nested deeper than {MAX_DEPTH}"),
            }]);
        }
    }
    let mut pos = 0;
    let nodes = parse_nodes(&tokens, &mut pos);
    let mut refusals = Vec::new();
    let refuse = |refusals: &mut Vec<Refusal>, line: usize, message: String| {
        refusals.push(Refusal {
            file: file.to_owned(),
            line,
            message,
        });
    };
    let mut config = KeepalivedConfig::default();
    let mut scripts: Vec<(String, Track)> = Vec::new();
    for node in &nodes {
        match node.words.first().map(String::as_str) {
            Some("global_defs") => {
                config.notes.push("global_defs dropped (router_id, script security and mail settings have no tandem equivalent)".to_owned());
            }
            Some("vrrp_script") => {
                let name = node.words.get(1).cloned().unwrap_or_default();
                let mut track = Track {
                    script: name.clone(),
                    command: String::new(),
                    weight: 0,
                };
                for c in &node.children {
                    match (c.words.first().map(String::as_str), c.words.get(1)) {
                        (Some("script"), Some(cmd)) => track.command = cmd.clone(),
                        (Some("weight"), Some(w)) => match w.parse() {
                            Ok(w) => track.weight = w,
                            Err(_) => refuse(
                                &mut refusals,
                                c.line,
                                format!("vrrp_script {name}: weight `{w}` is not a number"),
                            ),
                        },
                        (
                            Some("interval" | "fall" | "rise" | "timeout" | "user" | "init_fail"),
                            _,
                        ) => {}
                        (Some(k), _) => refuse(
                            &mut refusals,
                            c.line,
                            format!("vrrp_script {name}: `{k}` is not supported"),
                        ),
                        (None, _) => {}
                    }
                }
                scripts.push((name, track));
            }
            Some("vrrp_instance") => {}
            Some(
                k @ ("vrrp_sync_group"
                | "virtual_server"
                | "virtual_server_group"
                | "track_file"
                | "track_process"
                | "static_ipaddress"
                | "static_routes"),
            ) => {
                refuse(
                    &mut refusals,
                    node.line,
                    format!("`{k}` has no tandem equivalent"),
                );
            }
            Some(k) => refuse(&mut refusals, node.line, format!("`{k}` is not understood")),
            None => {}
        }
    }
    for node in nodes
        .iter()
        .filter(|n| n.words.first().is_some_and(|w| w == "vrrp_instance"))
    {
        let mut i = Instance {
            name: node
                .words
                .get(1)
                .cloned()
                .unwrap_or_else(|| "vrrp".to_owned()),
            priority: 100,
            advert_interval_ms: 1000,
            preempt: true,
            ..Default::default()
        };
        let name = i.name.clone();
        for c in &node.children {
            let key = c.words.first().map(String::as_str).unwrap_or("");
            let value = c.words.get(1).map(String::as_str);
            let number = |refusals: &mut Vec<Refusal>, max: u64| -> Option<u64> {
                match value
                    .and_then(|v| v.parse::<u64>().ok())
                    .filter(|v| *v <= max)
                {
                    Some(v) => Some(v),
                    None => {
                        refuse(
                            refusals,
                            c.line,
                            format!("vrrp_instance {name}: `{key}` needs a number up to {max}"),
                        );
                        None
                    }
                }
            };
            match key {
                "interface" => i.interface = value.unwrap_or_default().to_owned(),
                "virtual_router_id" => i.virtual_router_id = number(&mut refusals, 255).unwrap_or(0) as u8,
                "priority" => i.priority = number(&mut refusals, 255).unwrap_or(100) as u8,
                "advert_int" => match value.and_then(|v| v.parse::<f64>().ok()) {
                    Some(s) if s > 0.0 => i.advert_interval_ms = ((s * 100.0).round() as u64) * 10,
                    _ => refuse(&mut refusals, c.line, format!("vrrp_instance {name}: advert_int needs seconds")),
                },
                "nopreempt" => i.preempt = false,
                "preempt_delay" => i.preempt_delay_ms = number(&mut refusals, 1000).map(|s| s * 1000),
                "virtual_ipaddress" => {
                    for v in &c.children {
                        if let Some(addr) = v.words.first() {
                            i.virtual_ips.push(addr.clone());
                        }
                        if v.words.iter().any(|w| w == "dev") {
                            config.notes.push(format!("vrrp_instance {name}: `dev` on a virtual IP dropped: tandem puts the VIPs on the instance's interface"));
                        }
                    }
                }
                "unicast_peer" => i.unicast_peers.extend(c.children.iter().filter_map(|p| p.words.first().cloned())),
                "track_script" => {
                    let names: Vec<&String> = c.children.iter().filter_map(|s| s.words.first()).collect();
                    if names.len() > 1 {
                        refuse(&mut refusals, c.line, format!("vrrp_instance {name}: more than one track_script"));
                    }
                    if let Some(script) = names.first() {
                        match scripts.iter().find(|(n, _)| n == *script) {
                            Some((_, t)) => i.track = Some(t.clone()),
                            None => refuse(&mut refusals, c.line, format!("vrrp_instance {name}: track_script `{script}` is not defined")),
                        }
                    }
                }
                "notify_master" => i.notify_master = value.map(str::to_owned),
                "notify_backup" => i.notify_backup = value.map(str::to_owned),
                "notify_fault" => i.notify_fault = value.map(str::to_owned),
                k if DROPPED.iter().any(|(d, _)| *d == k) => {
                    let why = DROPPED.iter().find(|(d, _)| *d == k).map_or("", |(_, w)| *w);
                    config.notes.push(format!("vrrp_instance {name}: `{k}` dropped: {why}"));
                }
                "use_vmac" | "vmac_xmit_base" => refuse(&mut refusals, c.line, format!("vrrp_instance {name}: `{key}`: tandem does not use a virtual MAC")),
                "track_interface" => refuse(&mut refusals, c.line, format!("vrrp_instance {name}: `track_interface` is not supported (tandem tracks services)")),
                k => refuse(&mut refusals, c.line, format!("vrrp_instance {name}: `{k}` is not understood")),
            }
        }
        if i.interface.is_empty() || i.virtual_router_id == 0 || i.virtual_ips.is_empty() {
            refuse(&mut refusals, node.line, format!("vrrp_instance {name}: needs interface, virtual_router_id and virtual_ipaddress"));
        }
        config.instances.push(i);
    }
    if config.instances.is_empty() {
        refuse(&mut refusals, 1, "no vrrp_instance".to_owned());
    }
    if refusals.is_empty() {
        Ok(config)
    } else {
        Err(refusals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_without_a_keyword_is_refused_at_its_line() {
        // Found by the cargo-fuzz target migrate: the refusal said line 0.
        let text = "vrrp_instance VI_1 {\n    interface eth0\n    {\n    }\n}\n";
        let refusals = parse(text, "keepalived.conf").unwrap_err();
        assert!(refusals.iter().all(|r| r.line >= 1), "{refusals:?}");
        assert!(refusals.iter().any(|r| r.line == 3), "{refusals:?}");
    }

    #[test]
    fn deeply_nested_blocks_are_refused_not_a_stack_overflow() {
        let text = "vrrp_instance VI_1 ".to_owned() + &"{\n".repeat(200_000);
        let refusals = parse(&text, "keepalived.conf").unwrap_err();
        assert_eq!(refusals[0].line, 17, "{}", refusals[0]);
        assert!(refusals[0].message.contains("nested deeper than 16"));
    }
}
