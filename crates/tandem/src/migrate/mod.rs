//! `tandem migrate`: converts the keepalived.conf and haproxy.cfg of the
//! kubeadm HA guide (and configurations like them) into one tandem
//! configuration. What it cannot convert faithfully it refuses, naming the
//! file, line and keyword; what it drops on purpose it says in a note.

pub(crate) mod haproxy;
pub(crate) mod keepalived;

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};

pub use haproxy::HaproxyConfig;
pub use keepalived::KeepalivedConfig;

/// The result of a conversion: the YAML, and notes on what changed meaning.
#[derive(Debug)]
pub struct Converted {
    pub yaml: String,
    pub notes: Vec<String>,
}

/// Something that cannot be converted: where, and why.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub file: String,
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

pub fn run(files: &[std::path::PathBuf]) -> anyhow::Result<ExitCode> {
    let mut keepalived = None;
    let mut haproxy = None;
    let mut refusals = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let name = path.display().to_string();
        match detect(path, &text) {
            Some(Kind::Keepalived) => match keepalived::parse(&text, &name) {
                Ok(k) => keepalived = Some(k),
                Err(mut r) => refusals.append(&mut r),
            },
            Some(Kind::Haproxy) => match haproxy::parse(&text, &name) {
                Ok(h) => haproxy = Some(h),
                Err(mut r) => refusals.append(&mut r),
            },
            None => bail!(
                "{name}: neither a keepalived.conf (no vrrp_instance) nor a haproxy.cfg (no frontend, backend or listen section)"
            ),
        }
    }
    if !refusals.is_empty() {
        for r in &refusals {
            eprintln!("cannot convert: {r}");
        }
        bail!(
            "{} part(s) cannot be converted; nothing was written",
            refusals.len()
        );
    }
    let converted = convert(keepalived.as_ref(), haproxy.as_ref()).map_err(|r| {
        for e in &r {
            eprintln!("cannot convert: {e}");
        }
        anyhow::anyhow!(
            "{} part(s) cannot be converted; nothing was written",
            r.len()
        )
    })?;
    if let Err(errors) = tandem_config::parse(&converted.yaml, "<migrated>") {
        bail!(
            "the converted configuration does not pass `tandem check`:\n{errors}\n---\n{}",
            converted.yaml
        );
    }
    for n in &converted.notes {
        eprintln!("note: {n}");
    }
    print!("{}", converted.yaml);
    Ok(ExitCode::SUCCESS)
}

enum Kind {
    Keepalived,
    Haproxy,
}

fn detect(path: &Path, text: &str) -> Option<Kind> {
    let words: Vec<&str> = text
        .lines()
        .map(|l| l.split(['#', '!']).next().unwrap_or("").trim())
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    if words.contains(&"vrrp_instance") {
        return Some(Kind::Keepalived);
    }
    if words
        .iter()
        .any(|w| matches!(*w, "frontend" | "backend" | "listen"))
    {
        return Some(Kind::Haproxy);
    }
    match path.extension().and_then(|e| e.to_str()) {
        Some("cfg") => Some(Kind::Haproxy),
        Some("conf") if path.to_string_lossy().contains("keepalived") => Some(Kind::Keepalived),
        _ => None,
    }
}

/// Quotes a YAML string when it needs it.
fn q(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-/:".contains(c))
        && !s.is_empty()
    {
        s.to_owned()
    } else {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

fn duration(ms: u64) -> String {
    if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Builds the tandem configuration from what the two files said.
pub fn convert(
    keepalived: Option<&KeepalivedConfig>,
    haproxy: Option<&HaproxyConfig>,
) -> Result<Converted, Vec<Refusal>> {
    let mut notes = Vec::new();
    let mut y = String::new();
    let _ = writeln!(
        y,
        "# Converted by `tandem migrate`; review, then `tandem check -c FILE`."
    );
    let _ = writeln!(y, "admin:\n  listen: 127.0.0.1:9901");
    let vips: Vec<String> = keepalived
        .map(|k| {
            k.instances
                .iter()
                .flat_map(|i| {
                    i.virtual_ips
                        .iter()
                        .map(|v| v.split('/').next().unwrap_or(v).to_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    let mut service_names = Vec::new();
    if let Some(h) = haproxy {
        let d = &h.defaults;
        let _ = writeln!(y, "defaults:");
        let _ = writeln!(
            y,
            "  connect_timeout: {}",
            duration(d.connect_timeout_ms.unwrap_or(3000))
        );
        let idle = d.idle_timeout_ms.map_or("1h".to_owned(), duration);
        let _ = writeln!(y, "  idle_timeout: {idle}");
        if d.idle_timeout_ms.is_some_and(|ms| ms < 3_600_000) {
            notes.push(format!(
                "idle_timeout {idle} comes from HAProxy's `timeout client/server`; kube watches and `kubectl exec` are often silent longer: consider 1h"
            ));
        }
        if let Some(r) = d.retries {
            let _ = writeln!(y, "  connect_retries: {r}");
        }
        let _ = writeln!(y, "services:");
        for f in &h.frontends {
            let backend = h
                .backends
                .iter()
                .find(|b| b.name == f.backend)
                .ok_or_else(|| {
                    vec![Refusal {
                        file: h.file.clone(),
                        line: f.line,
                        message: format!(
                            "frontend {}: default_backend `{}` is not defined",
                            f.name, f.backend
                        ),
                    }]
                })?;
            let listen = match (f.bind_host.as_deref(), vips.as_slice()) {
                (None | Some("*" | "0.0.0.0" | "::"), [vip]) => {
                    notes.push(format!(
                        "frontend {}: `bind *:{}` became the VIP {vip}:{} (tandem binds it with IP_FREEBIND on every node)",
                        f.name, f.bind_port, f.bind_port
                    ));
                    format!("{vip}:{}", f.bind_port)
                }
                (None | Some("*"), _) => format!("0.0.0.0:{}", f.bind_port),
                (Some(host), _) if host.contains(':') => format!("\"[{host}]:{}\"", f.bind_port),
                (Some(host), _) => format!("{host}:{}", f.bind_port),
            };
            if f.bind_port == 6443 {
                notes.push(format!(
                    "frontend {}: listening on port 6443 clashes with kube-apiserver on a control-plane node; use 8443 (and the same port in --control-plane-endpoint)",
                    f.name
                ));
            }
            service_names.push(f.name.clone());
            let _ = writeln!(y, "  - name: {}", q(&f.name));
            let _ = writeln!(y, "    listen: {listen}");
            let _ = writeln!(y, "    scheduler: {}", backend.scheduler.as_str());
            let _ = writeln!(y, "    backends:");
            for s in &backend.servers {
                let mut line = format!(
                    "      - {{ address: \"{}\", name: {}",
                    s.address,
                    q(&s.name)
                );
                if let Some(w) = s.weight {
                    let _ = write!(line, ", weight: {w}");
                }
                if s.backup {
                    line.push_str(", backup: true");
                }
                line.push_str(" }");
                let _ = writeln!(y, "{line}");
            }
            match &backend.check {
                haproxy::Check::None => {}
                haproxy::Check::Tcp => {
                    let _ = writeln!(y, "    health:\n      type: tcp");
                    write_timing(&mut y, backend);
                }
                haproxy::Check::Http {
                    tls,
                    path,
                    expect_status,
                    verify,
                } => {
                    let _ = writeln!(
                        y,
                        "    health:\n      type: {}",
                        if *tls { "https" } else { "http" }
                    );
                    let _ = writeln!(y, "      path: {}", q(path));
                    let _ = writeln!(
                        y,
                        "      expect_status: [{}]",
                        expect_status
                            .iter()
                            .map(u16::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    write_timing(&mut y, backend);
                    if *tls {
                        match verify {
                            haproxy::Verify::None => {
                                let _ = writeln!(y, "      tls: {{ verify: false }}   # or ca_file: /etc/kubernetes/pki/ca.crt + server_name: kubernetes");
                            }
                            haproxy::Verify::Ca(ca) => {
                                let _ = writeln!(y, "      tls: {{ ca_file: {} }}", q(ca));
                            }
                        }
                    }
                    if path == "/healthz" {
                        notes.push(format!(
                            "backend {}: the check uses /healthz as in the kubeadm guide; /readyz turns red as soon as an apiserver starts shutting down, so new connections move away earlier",
                            backend.name
                        ));
                    }
                }
            }
        }
    } else {
        notes.push("no haproxy.cfg: the configuration has a VIP and no service".to_owned());
    }
    if let Some(k) = keepalived {
        let _ = writeln!(y, "vrrp:\n  instances:");
        for i in &k.instances {
            let _ = writeln!(y, "    - name: {}", q(&i.name));
            let _ = writeln!(y, "      interface: {}", q(&i.interface));
            let _ = writeln!(y, "      virtual_router_id: {}", i.virtual_router_id);
            let _ = writeln!(y, "      priority: {}", i.priority);
            let _ = writeln!(
                y,
                "      advert_interval: {}",
                duration(i.advert_interval_ms)
            );
            if !i.preempt {
                let _ = writeln!(y, "      preempt: false");
            }
            if let Some(ms) = i.preempt_delay_ms {
                let _ = writeln!(y, "      preempt_delay: {}", duration(ms));
            }
            let vips: Vec<String> = i
                .virtual_ips
                .iter()
                .map(|v| {
                    if v.contains('/') {
                        v.clone()
                    } else {
                        format!("{v}/32")
                    }
                })
                .collect();
            let _ = writeln!(y, "      virtual_ips: [{}]", vips.join(", "));
            if !i.unicast_peers.is_empty() {
                let _ = writeln!(y, "      unicast_peers: [{}]", i.unicast_peers.join(", "));
            }
            if let Some(track) = &i.track {
                if service_names.is_empty() {
                    notes.push(format!(
                        "vrrp_instance {}: track_script {} dropped: there is no service to track",
                        i.name, track.script
                    ));
                } else {
                    let weight = if track.weight < 0 { track.weight } else { -60 };
                    let _ = writeln!(
                        y,
                        "      track: {{ services: [{}], weight: {weight} }}",
                        service_names.join(", ")
                    );
                    notes.push(format!(
                        "vrrp_instance {}: track_script {} (`{}`) became tracking of the service's health checks: priority {weight} while no backend is healthy",
                        i.name, track.script, track.command
                    ));
                    notes.push(format!(
                        "vrrp_instance {}: while tracked services are down this node advertises {} + ({weight}) = {}: the VIP moves only to a peer whose priority is higher than that",
                        i.name,
                        i.priority,
                        i32::from(i.priority) + weight
                    ));
                }
            }
            let hooks: Vec<String> = [
                ("master", &i.notify_master),
                ("backup", &i.notify_backup),
                ("fault", &i.notify_fault),
            ]
            .into_iter()
            .filter_map(|(event, cmd)| cmd.as_ref().map(|c| format!("{event}: {}", q(c))))
            .collect();
            if !hooks.is_empty() {
                let _ = writeln!(y, "      notify: {{ {} }}", hooks.join(", "));
            }
        }
        notes.extend(k.notes.iter().cloned());
    }
    if let Some(h) = haproxy {
        notes.extend(h.notes.iter().cloned());
    }
    Ok(Converted { yaml: y, notes })
}

fn write_timing(y: &mut String, b: &haproxy::Backend) {
    let _ = writeln!(y, "      interval: {}", duration(b.inter_ms));
    let timeout = b.check_timeout_ms.unwrap_or(1000).min(b.inter_ms);
    let _ = writeln!(y, "      timeout: {}", duration(timeout));
    let _ = writeln!(y, "      rise: {}", b.rise);
    let _ = writeln!(y, "      fall: {}", b.fall);
}
