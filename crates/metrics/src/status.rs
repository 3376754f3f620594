//! The status document: what `/status` serves as JSON and `tandem status`
//! prints as a table. Filled in by the binary, which sees every component.

use std::fmt::Write as _;

use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    pub version: String,
    pub config_file: String,
    pub uptime_seconds: u64,
    pub reload: ReloadStatus,
    pub services: Vec<ServiceStatus>,
    pub vrrp: Vec<VrrpStatus>,
    /// Announced VIPs (the `routing` section); empty without one.
    pub routing: Vec<RouteStatus>,
    /// The node is in maintenance: every announced VIP withdrawn.
    pub maintenance: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadStatus {
    #[serde(rename = "ok")]
    pub reloads_ok: u64,
    #[serde(rename = "failed")]
    pub reloads_failed: u64,
    /// Unix time of the last successful load (start or reload).
    pub last_success_unix: u64,
    /// The error of the last reload, if the last reload failed.
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ServiceStatus {
    pub name: String,
    pub protocol: String,
    pub listen: String,
    pub scheduler: String,
    pub active: u64,
    /// UDP services: sessions open now.
    pub udp_sessions: Option<u64>,
    pub backends: Vec<BackendStatus>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct BackendStatus {
    pub name: String,
    pub address: String,
    /// `up`, `down` or `draining`.
    pub state: String,
    pub weight: u32,
    pub backup: bool,
    pub active: u64,
    pub total: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub last_check: Option<CheckStatus>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckStatus {
    pub ok: bool,
    pub detail: String,
    pub seconds_ago: u64,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct VrrpStatus {
    pub instance: String,
    pub interface: String,
    pub state: String,
    pub priority: u32,
    pub master: Option<String>,
    pub virtual_ips: Vec<String>,
}

/// One VIP of the `routing` section.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RouteStatus {
    pub vip: String,
    pub services: Vec<String>,
    /// The route is in tandem's table now: the routing daemon announces it.
    pub announced: bool,
    /// `announced`, or why not (`withdrawn: service `api` has no available backend`).
    pub reason: String,
}

impl Status {
    /// The JSON document `/status` serves, one line with a newline at the end.
    pub fn to_json(&self) -> String {
        let mut out =
            serde_json::to_string(self).expect("the status document has string keys only");
        out.push('\n');
        out
    }

    /// The table `tandem status` prints.
    pub fn to_table(&self) -> String {
        let mut rows = vec![[
            "SERVICE",
            "LISTEN",
            "SCHEDULER",
            "BACKEND",
            "STATE",
            "ACTIVE",
            "TOTAL",
            "BYTES IN",
            "BYTES OUT",
            "LAST CHECK",
        ]
        .map(str::to_owned)];
        for s in &self.services {
            let listen = match s.udp_sessions {
                Some(n) => format!("{}/{} ({n} sessions)", s.listen, s.protocol),
                None => format!("{}/{}", s.listen, s.protocol),
            };
            for (i, b) in s.backends.iter().enumerate() {
                let (name, listen, scheduler) = if i == 0 {
                    (s.name.clone(), listen.clone(), s.scheduler.clone())
                } else {
                    (String::new(), String::new(), String::new())
                };
                let mut backend = b.name.clone();
                if b.name != b.address {
                    let _ = write!(backend, " ({})", b.address);
                }
                if b.backup {
                    backend.push_str(" [backup]");
                }
                let check = match &b.last_check {
                    Some(c) => format!(
                        "{} {}s ago",
                        if c.ok {
                            "ok".to_owned()
                        } else {
                            c.detail.clone()
                        },
                        c.seconds_ago
                    ),
                    None => "-".to_owned(),
                };
                rows.push([
                    name,
                    listen,
                    scheduler,
                    backend,
                    b.state.clone(),
                    b.active.to_string(),
                    b.total.to_string(),
                    human_bytes(b.bytes_in),
                    human_bytes(b.bytes_out),
                    check,
                ]);
            }
        }
        let mut out = render(&rows);
        if !self.vrrp.is_empty() {
            let mut vrows = vec![[
                "VRRP INSTANCE",
                "INTERFACE",
                "STATE",
                "PRIORITY",
                "MASTER",
                "VIRTUAL IPS",
            ]
            .map(str::to_owned)];
            for v in &self.vrrp {
                vrows.push([
                    v.instance.clone(),
                    v.interface.clone(),
                    v.state.clone(),
                    v.priority.to_string(),
                    v.master.clone().unwrap_or_else(|| "-".to_owned()),
                    v.virtual_ips.join(", "),
                ]);
            }
            out.push('\n');
            out.push_str(&render(&vrows));
        }
        if !self.routing.is_empty() {
            let mut rrows = vec![["ROUTED VIP", "SERVICES", "ANNOUNCED", "WHY"].map(str::to_owned)];
            for r in &self.routing {
                rrows.push([
                    r.vip.clone(),
                    r.services.join(", "),
                    if r.announced { "yes" } else { "no" }.to_owned(),
                    r.reason.clone(),
                ]);
            }
            out.push('\n');
            out.push_str(&render(&rrows));
        }
        if self.maintenance {
            out.push_str(
                "\nnode in MAINTENANCE: routes withdrawn (`tandem maintenance off` to end)\n",
            );
        }
        let r = &self.reload;
        let _ = write!(
            out,
            "\nconfig {} (reloads: {} ok, {} failed)",
            self.config_file, r.reloads_ok, r.reloads_failed
        );
        if let Some(e) = &r.last_error {
            let _ = write!(
                out,
                "\nlast reload FAILED, still running the previous config: {e}"
            );
        }
        out.push('\n');
        out
    }
}

fn render<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// 1536 → "1.5K", like `ls -h`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["", "K", "M", "G", "T", "P"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n}")
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Status {
        Status {
            version: "0.1.0".into(),
            config_file: "/etc/tandem/tandem.yaml".into(),
            services: vec![ServiceStatus {
                name: "api".into(),
                protocol: "tcp".into(),
                listen: "198.18.0.100:8443".into(),
                scheduler: "least_connections".into(),
                backends: vec![
                    BackendStatus {
                        name: "node1".into(),
                        address: "198.18.0.11:6443".into(),
                        state: "up".into(),
                        weight: 1,
                        active: 3,
                        total: 10,
                        bytes_in: 2048,
                        ..Default::default()
                    },
                    BackendStatus {
                        name: "198.18.0.12:6443".into(),
                        address: "198.18.0.12:6443".into(),
                        state: "down".into(),
                        last_check: Some(CheckStatus {
                            ok: false,
                            detail: "status 500".into(),
                            seconds_ago: 2,
                            duration_ms: 3,
                        }),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn table_has_one_row_per_backend() {
        let t = sample().to_table();
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("SERVICE"));
        assert!(lines[1].starts_with("api "));
        assert!(lines[1].contains("node1 (198.18.0.11:6443)"));
        assert!(lines[1].contains("2.0K"));
        assert!(lines[2].contains("status 500 2s ago"));
        assert!(
            lines[2].starts_with("  "),
            "service columns blank on later rows"
        );
    }

    #[test]
    fn routed_vips_and_maintenance_get_their_rows() {
        let mut s = sample();
        s.routing = vec![
            RouteStatus {
                vip: "198.18.100.1".into(),
                services: vec!["api".into()],
                announced: true,
                reason: "announced".into(),
            },
            RouteStatus {
                vip: "2001:2::1".into(),
                services: vec!["api".into(), "dns".into()],
                announced: false,
                reason: "withdrawn: node in maintenance".into(),
            },
        ];
        s.maintenance = true;
        let t = s.to_table();
        assert!(
            t.contains("ROUTED VIP    SERVICES  ANNOUNCED  WHY\n"),
            "{t}"
        );
        assert!(
            t.contains("198.18.100.1  api       yes        announced\n"),
            "{t}"
        );
        assert!(
            t.contains("2001:2::1     api, dns  no         withdrawn: node in maintenance\n"),
            "{t}"
        );
        assert!(t.contains("node in MAINTENANCE"), "{t}");
        let j = s.to_json();
        assert!(j.contains(r#""routing":[{"vip":"198.18.100.1","services":["api"],"announced":true,"reason":"announced"}"#), "{j}");
        assert!(j.contains(r#""maintenance":true"#), "{j}");
    }

    #[test]
    fn json_names_every_field() {
        let j = sample().to_json();
        for key in [
            "\"services\":[",
            "\"state\":\"down\"",
            "\"last_check\":{\"ok\":false",
            "\"last_error\":null",
            "\"vrrp\":[]",
        ] {
            assert!(j.contains(key), "{key} in {j}");
        }
    }

    #[test]
    fn json_keeps_the_documented_shape_field_for_field() {
        let expected = concat!(
            r#"{"version":"0.1.0","config_file":"/etc/tandem/tandem.yaml","uptime_seconds":0,"#,
            r#""reload":{"ok":0,"failed":0,"last_success_unix":0,"last_error":null},"#,
            r#""services":[{"name":"api","protocol":"tcp","listen":"198.18.0.100:8443","#,
            r#""scheduler":"least_connections","active":0,"udp_sessions":null,"backends":["#,
            r#"{"name":"node1","address":"198.18.0.11:6443","state":"up","weight":1,"backup":false,"#,
            r#""active":3,"total":10,"bytes_in":2048,"bytes_out":0,"last_check":null},"#,
            r#"{"name":"198.18.0.12:6443","address":"198.18.0.12:6443","state":"down","weight":0,"#,
            r#""backup":false,"active":0,"total":0,"bytes_in":0,"bytes_out":0,"#,
            r#""last_check":{"ok":false,"detail":"status 500","seconds_ago":2,"duration_ms":3}}]}],"#,
            r#""vrrp":[],"routing":[],"maintenance":false}"#,
            "\n"
        );
        assert_eq!(sample().to_json(), expected);
        let mut escaped = sample();
        escaped.reload.last_error = Some("line 3: \"x\"\n\u{1}".into());
        assert!(escaped
            .to_json()
            .contains(r#""last_error":"line 3: \"x\"\n\u0001""#));
    }

    #[test]
    fn human_bytes_rounds_like_ls() {
        assert_eq!(human_bytes(0), "0");
        assert_eq!(human_bytes(1023), "1023");
        assert_eq!(human_bytes(1536), "1.5K");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0G");
    }
}
