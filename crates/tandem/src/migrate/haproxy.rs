//! Reads the parts of a haproxy.cfg that map to an L4 tandem service:
//! `defaults` timeouts, `frontend` binds in `mode tcp`, and `backend` servers
//! with their balance algorithm and health check.

use tandem_config::SchedulerKind;

use super::Refusal;

#[derive(Debug, Default)]
pub struct HaproxyConfig {
    pub file: String,
    pub defaults: Defaults,
    pub frontends: Vec<Frontend>,
    pub backends: Vec<Backend>,
    pub notes: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Defaults {
    pub connect_timeout_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    pub check_timeout_ms: Option<u64>,
    pub retries: Option<u32>,
    pub mode_http: bool,
}

#[derive(Debug, Default)]
pub struct Frontend {
    pub name: String,
    pub line: usize,
    pub bind_host: Option<String>,
    pub bind_port: u16,
    pub backend: String,
}

#[derive(Debug)]
pub struct Backend {
    pub name: String,
    pub scheduler: SchedulerKind,
    pub servers: Vec<Server>,
    pub check: Check,
    pub inter_ms: u64,
    pub rise: u32,
    pub fall: u32,
    pub check_timeout_ms: Option<u64>,
}

#[derive(Debug)]
pub struct Server {
    pub name: String,
    pub address: String,
    pub weight: Option<u32>,
    pub backup: bool,
}

#[derive(Debug)]
pub enum Check {
    None,
    Tcp,
    Http {
        tls: bool,
        path: String,
        expect_status: Vec<u16>,
        verify: Verify,
    },
}

#[derive(Debug)]
pub enum Verify {
    None,
    Ca(String),
}

/// HAProxy times: a number is milliseconds; units us, ms, s, m, h, d.
fn time_ms(v: &str) -> Option<u64> {
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (n, unit) = v.split_at(split);
    let n: u64 = n.parse().ok()?;
    // Checked: a time too large for u64 milliseconds is no time at all.
    match unit {
        "" | "ms" => Some(n),
        "us" => Some(n / 1000),
        "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        _ => None,
    }
}

#[derive(Default)]
struct Section {
    kind: String,
    name: String,
    line: usize,
    lines: Vec<(usize, Vec<String>)>,
}

/// Server and default-server parameters that matter to the health check.
#[derive(Default, Clone)]
struct ServerParams {
    check: bool,
    check_ssl: bool,
    verify_none: bool,
    ca_file: Option<String>,
    inter_ms: Option<u64>,
    rise: Option<u32>,
    fall: Option<u32>,
    weight: Option<u32>,
    backup: bool,
}

fn server_params(words: &[String], params: &mut ServerParams, unknown: &mut Vec<String>) {
    let mut i = 0;
    while i < words.len() {
        let next = words.get(i + 1).map(String::as_str);
        match words[i].as_str() {
            "check" => params.check = true,
            "check-ssl" | "ssl" => params.check_ssl = true,
            "verify" => {
                params.verify_none = next == Some("none");
                i += 1;
            }
            "ca-file" => {
                params.ca_file = next.map(str::to_owned);
                i += 1;
            }
            "inter" => {
                params.inter_ms = next.and_then(time_ms);
                i += 1;
            }
            "rise" => {
                params.rise = next.and_then(|v| v.parse().ok());
                i += 1;
            }
            "fall" => {
                params.fall = next.and_then(|v| v.parse().ok());
                i += 1;
            }
            "weight" => {
                params.weight = next.and_then(|v| v.parse().ok());
                i += 1;
            }
            "backup" => params.backup = true,
            // Accepted and dropped: tuning with no tandem meaning.
            "downinter" | "fastinter" | "slowstart" | "maxconn" | "maxqueue" | "port" | "sni"
            | "check-sni" | "alpn" | "check-alpn" => i += 1,
            "resolvers" | "init-addr" => {
                unknown.push(words[i].clone());
                i += 1;
            }
            other => unknown.push(other.to_owned()),
        }
        i += 1;
    }
}

pub fn parse(text: &str, file: &str) -> Result<HaproxyConfig, Vec<Refusal>> {
    let mut sections: Vec<Section> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("");
        let words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        let Some(first) = words.first() else {
            continue;
        };
        let starts_section = !raw.starts_with(char::is_whitespace)
            && matches!(
                first.as_str(),
                "global"
                    | "defaults"
                    | "frontend"
                    | "backend"
                    | "listen"
                    | "resolvers"
                    | "peers"
                    | "userlist"
                    | "cache"
                    | "program"
                    | "http-errors"
                    | "ring"
                    | "mailers"
            );
        if starts_section {
            sections.push(Section {
                kind: first.clone(),
                name: words.get(1).cloned().unwrap_or_default(),
                line: n + 1,
                lines: Vec::new(),
            });
        } else if let Some(s) = sections.last_mut() {
            s.lines.push((n + 1, words));
        }
    }

    let mut refusals = Vec::new();
    let refuse = |refusals: &mut Vec<Refusal>, line: usize, message: String| {
        refusals.push(Refusal {
            file: file.to_owned(),
            line,
            message,
        });
    };
    let mut config = HaproxyConfig {
        file: file.to_owned(),
        ..Default::default()
    };
    let mut default_server = ServerParams::default();
    for s in &sections {
        match s.kind.as_str() {
            "global" => config.notes.push(
                "haproxy `global` section dropped (logging, daemon and limits are tandem's own)"
                    .to_owned(),
            ),
            "defaults" => {
                for (line, w) in &s.lines {
                    let v = w.get(1).map(String::as_str);
                    match (w[0].as_str(), v) {
                        ("mode", Some("http")) => config.defaults.mode_http = true,
                        ("mode", _) => config.defaults.mode_http = false,
                        ("retries", Some(r)) => config.defaults.retries = r.parse().ok(),
                        ("timeout", Some("connect")) => {
                            config.defaults.connect_timeout_ms = w.get(2).and_then(|t| time_ms(t))
                        }
                        ("timeout", Some("client" | "server" | "tunnel")) => {
                            let t = w.get(2).and_then(|t| time_ms(t));
                            config.defaults.idle_timeout_ms =
                                config.defaults.idle_timeout_ms.max(t);
                        }
                        ("timeout", Some("check")) => {
                            config.defaults.check_timeout_ms = w.get(2).and_then(|t| time_ms(t))
                        }
                        ("default-server", _) => {
                            let mut unknown = Vec::new();
                            server_params(&w[1..], &mut default_server, &mut unknown);
                        }
                        ("timeout" | "log" | "option" | "balance" | "maxconn", _) => {}
                        (k, _) => refuse(
                            &mut refusals,
                            *line,
                            format!("defaults: `{k}` is not understood"),
                        ),
                    }
                }
            }
            "frontend" | "listen" => {
                let mut f = Frontend {
                    name: s.name.clone(),
                    line: s.line,
                    ..Default::default()
                };
                let mut http = config.defaults.mode_http;
                for (line, w) in &s.lines {
                    match w[0].as_str() {
                        "bind" => {
                            let Some(addr) = w.get(1) else { continue };
                            let (host, port) = addr.rsplit_once(':').unwrap_or(("", addr));
                            f.bind_host = (!host.is_empty())
                                .then(|| host.trim_matches(['[', ']']).to_owned());
                            match port.parse() {
                                Ok(p) => f.bind_port = p,
                                Err(_) => refuse(
                                    &mut refusals,
                                    *line,
                                    format!("{} {}: bind `{addr}` needs one port", s.kind, s.name),
                                ),
                            }
                            if w.iter().any(|x| x == "ssl") {
                                refuse(&mut refusals, *line, format!("{} {}: TLS termination (`bind … ssl`) is not L4; tandem passes TLS through", s.kind, s.name));
                            }
                        }
                        "mode" => http = w.get(1).is_some_and(|m| m == "http"),
                        "default_backend" => f.backend = w.get(1).cloned().unwrap_or_default(),
                        "option" | "log" | "timeout" | "maxconn" => {}
                        "use_backend" | "acl" | "http-request" | "tcp-request" => {
                            refuse(&mut refusals, *line, format!("{} {}: `{}` (content switching) has no tandem equivalent: one listen address, one backend set", s.kind, s.name, w[0]));
                        }
                        _ if s.kind == "listen" => {}
                        k => refuse(
                            &mut refusals,
                            *line,
                            format!("frontend {}: `{k}` is not understood", s.name),
                        ),
                    }
                }
                if http {
                    refuse(&mut refusals, s.line, format!("{} {}: `mode http` — tandem is a layer-4 (TCP/UDP) balancer; use `mode tcp`", s.kind, s.name));
                }
                if s.kind == "listen" {
                    f.backend = s.name.clone();
                }
                config.frontends.push(f);
            }
            _ => {}
        }
        if s.kind == "backend" || s.kind == "listen" {
            let mut b = Backend {
                name: s.name.clone(),
                scheduler: SchedulerKind::RoundRobin,
                servers: Vec::new(),
                check: Check::None,
                inter_ms: 2000,
                rise: 2,
                fall: 3,
                check_timeout_ms: config.defaults.check_timeout_ms,
            };
            let mut httpchk: Option<(String, String)> = None;
            let mut expect_status = vec![200u16];
            let mut check_connect_ssl = false;
            let mut params_seen = default_server.clone();
            let mut any_check = false;
            for (line, w) in &s.lines {
                let v = w.get(1).map(String::as_str);
                match (w[0].as_str(), v) {
                    ("balance", Some(alg)) => {
                        b.scheduler = match alg {
                            "roundrobin" | "static-rr" => SchedulerKind::RoundRobin,
                            "leastconn" => SchedulerKind::LeastConnections,
                            "source" => SchedulerKind::SourceHash,
                            "random" => SchedulerKind::Random,
                            other => {
                                refuse(
                                    &mut refusals,
                                    *line,
                                    format!(
                                        "backend {}: `balance {other}` has no tandem equivalent",
                                        s.name
                                    ),
                                );
                                SchedulerKind::RoundRobin
                            }
                        }
                    }
                    ("option", Some("httpchk")) => {
                        let method = w.get(2).cloned().unwrap_or_else(|| "OPTIONS".to_owned());
                        let uri = w.get(3).cloned().unwrap_or_else(|| "/".to_owned());
                        httpchk = Some((method, uri));
                    }
                    // A TCP check is what tandem does without an HTTP one.
                    ("option", Some("tcp-check" | "ssl-hello-chk")) => {}
                    ("http-check", Some("send")) => {
                        let mut method = "GET".to_owned();
                        let mut uri = "/".to_owned();
                        for pair in w[2..].chunks(2) {
                            match (pair[0].as_str(), pair.get(1)) {
                                ("meth", Some(m)) => method = m.clone(),
                                ("uri", Some(u)) => uri = u.clone(),
                                _ => {}
                            }
                        }
                        httpchk = Some((method, uri));
                    }
                    ("http-check", Some("expect")) => {
                        match (w.get(2).map(String::as_str), w.get(3)) {
                            (Some("status"), Some(codes)) => {
                                expect_status =
                                    codes.split(',').filter_map(|c| c.parse().ok()).collect();
                                if expect_status.is_empty() {
                                    refuse(&mut refusals, *line, format!("backend {}: `http-check expect status {codes}` (ranges and regexes are not supported)", s.name));
                                }
                            }
                            _ => refuse(
                                &mut refusals,
                                *line,
                                format!(
                                    "backend {}: only `http-check expect status N` converts",
                                    s.name
                                ),
                            ),
                        }
                    }
                    ("http-check", Some("connect")) => {
                        check_connect_ssl = w.iter().any(|x| x == "ssl")
                    }
                    ("default-server", _) => {
                        let mut unknown = Vec::new();
                        server_params(&w[1..], &mut params_seen, &mut unknown);
                    }
                    ("server", _) => {
                        let (Some(name), Some(addr)) = (w.get(1), w.get(2)) else {
                            refuse(
                                &mut refusals,
                                *line,
                                format!("backend {}: `server` needs a name and an address", s.name),
                            );
                            continue;
                        };
                        let mut p = params_seen.clone();
                        let mut unknown = Vec::new();
                        server_params(&w[3..], &mut p, &mut unknown);
                        for u in unknown {
                            refuse(
                                &mut refusals,
                                *line,
                                format!(
                                    "backend {}: server {name}: `{u}` is not supported",
                                    s.name
                                ),
                            );
                        }
                        if addr.parse::<std::net::SocketAddr>().is_err() {
                            refuse(&mut refusals, *line, format!("backend {}: server {name}: `{addr}` is not IP:PORT (tandem does not resolve host names)", s.name));
                        }
                        any_check |= p.check;
                        if let Some(i) = p.inter_ms {
                            b.inter_ms = i;
                        }
                        if let Some(r) = p.rise {
                            b.rise = r;
                        }
                        if let Some(f) = p.fall {
                            b.fall = f;
                        }
                        check_connect_ssl |= p.check_ssl;
                        params_seen.verify_none = p.verify_none;
                        params_seen.ca_file = p.ca_file.clone().or(params_seen.ca_file.take());
                        b.servers.push(Server {
                            name: name.clone(),
                            address: addr.clone(),
                            weight: p.weight,
                            backup: p.backup,
                        });
                    }
                    ("mode", Some("http")) => refuse(
                        &mut refusals,
                        *line,
                        format!("backend {}: `mode http` — tandem is layer 4", s.name),
                    ),
                    (
                        "mode" | "option" | "timeout" | "log" | "retries" | "bind"
                        | "default_backend",
                        _,
                    ) => {}
                    (k, _) if s.kind == "listen" => refuse(
                        &mut refusals,
                        *line,
                        format!("listen {}: `{k}` is not understood", s.name),
                    ),
                    (k, _) => refuse(
                        &mut refusals,
                        *line,
                        format!("backend {}: `{k}` is not understood", s.name),
                    ),
                }
            }
            if any_check {
                b.check = match httpchk {
                    Some((method, path)) => {
                        if method != "GET" {
                            config.notes.push(format!(
                                "backend {}: health check method {method} became GET",
                                s.name
                            ));
                        }
                        Check::Http {
                            tls: check_connect_ssl,
                            path,
                            expect_status,
                            verify: match (&params_seen.ca_file, params_seen.verify_none) {
                                (Some(ca), false) => Verify::Ca(ca.clone()),
                                _ => Verify::None,
                            },
                        }
                    }
                    None => Check::Tcp,
                };
            }
            config.backends.push(b);
        }
    }
    if config.frontends.is_empty() {
        refuse(&mut refusals, 1, "no frontend or listen section".to_owned());
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
    fn a_time_too_large_for_milliseconds_is_not_a_time() {
        assert_eq!(time_ms("90s"), Some(90_000));
        assert_eq!(time_ms("99999999999999999d"), None);
        let text = "defaults\n  timeout connect 99999999999999999d\nfrontend f\n  bind :8443\n  default_backend b\nbackend b\n  server s1 10.0.0.1:6443\n";
        let _ = parse(text, "haproxy.cfg");
    }
}
