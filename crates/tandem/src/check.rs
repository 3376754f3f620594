//! `tandem check`: like `haproxy -c` and `nginx -t`, a one-screen summary and
//! exit 0, or every error and exit 1.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use tandem_config::Config;

pub fn run(path: &Path) -> anyhow::Result<ExitCode> {
    match tandem_config::load(path) {
        Ok(config) => {
            if let Err(e) = kernel_path(&config) {
                eprintln!("{}: {e}", path.display());
                eprintln!(
                    "{}: the configuration is valid but this host cannot run it",
                    path.display()
                );
                return Ok(ExitCode::FAILURE);
            }
            print!("{}", summary(&config, &path.display().to_string()));
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            eprintln!(
                "{}: {} error(s), configuration is not valid",
                path.display(),
                errors.0.len()
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

/// With `forwarding: nat` services: that `nft` is there and the kernel
/// accepts their table (`nft -c`, a dry run that needs CAP_NET_ADMIN and
/// changes nothing), so that a start would not fail on them.
fn kernel_path(config: &Config) -> Result<(), tandem_nat::NatError> {
    let nat = tandem_config::Forwarding::Nat;
    if !config.services.iter().any(|s| s.forwarding == nat) {
        return Ok(());
    }
    tandem_nat::Nft::locate()?.check(&tandem_nat::render_config(config).text)
}

/// The summary printed for a valid file.
pub fn summary(config: &Config, origin: &str) -> String {
    let mut out = String::new();
    let backends: usize = config.services.iter().map(|s| s.backends.len()).sum();
    let _ = writeln!(
        out,
        "{origin}: configuration is valid: {} service(s), {backends} backend(s), {} vrrp instance(s)",
        config.services.len(),
        config.vrrp.instances.len()
    );
    let _ = writeln!(
        out,
        "\n{:<20} {:<5} {:<24} {:<18} {:<8} BACKENDS",
        "SERVICE", "PROTO", "LISTEN", "SCHEDULER", "HEALTH"
    );
    for s in &config.services {
        let _ = writeln!(
            out,
            "{:<20} {:<5} {:<24} {:<18} {:<8} {}",
            s.name,
            s.protocol.as_str(),
            s.listen.to_string(),
            s.scheduler.as_str(),
            s.health.kind.as_str(),
            s.backends.len()
        );
        for b in &s.backends {
            let mut line = format!("    {}", b.address);
            if let Some(name) = &b.name {
                let _ = write!(line, " ({name})");
            }
            let _ = write!(line, " weight {}", b.weight);
            if b.backup {
                line.push_str(" backup");
            }
            let _ = writeln!(out, "{line}");
        }
    }
    for i in &config.vrrp.instances {
        let vips: Vec<String> = i
            .virtual_ips
            .iter()
            .map(|v| format!("{}/{}", v.address, v.prefix_len))
            .collect();
        let _ = writeln!(
            out,
            "\nvrrp {}: interface {} vrid {} priority {} vips {}",
            i.name,
            i.interface,
            i.virtual_router_id,
            i.priority,
            vips.join(", ")
        );
    }
    if let Some(r) = &config.routing {
        let _ = writeln!(
            out,
            "\nrouting: table {} protocol {} device {}, VIPs on {}, withdraw delay {:?}",
            r.table, r.protocol, r.device, r.vip_interface, r.withdraw_delay
        );
        for v in &r.vips {
            let _ = writeln!(out, "    {} follows {}", v.address, v.services.join(", "));
        }
    }
    let mut warnings: Vec<String> = config
        .vrrp
        .instances
        .iter()
        .flat_map(|i| {
            tandem_vrrp::tracking_warnings(i)
                .into_iter()
                .map(move |w| format!("vrrp {}: {w}", i.name))
        })
        .collect();
    if let Some(r) = &config.routing {
        warnings.extend(routing_warnings(r, &config.services, &read_sysctl));
    }
    if !warnings.is_empty() {
        let _ = writeln!(out);
        for w in warnings {
            let _ = writeln!(out, "warning: {w}");
        }
    }
    out
}

/// What may be wrong with a routing section on this host, or with the
/// services it follows: no service listening where the VIP's traffic
/// arrives, and ARP settings that let every node answer for the VIP.
fn routing_warnings(
    routing: &tandem_config::Routing,
    services: &[tandem_config::Service],
    sysctl: &dyn Fn(&str) -> Option<String>,
) -> Vec<String> {
    let mut out = Vec::new();
    for v in &routing.vips {
        let listens = services.iter().any(|s| {
            let ip = s.listen.socket_addr().ip();
            v.services.contains(&s.name) && (ip == v.address || ip.is_unspecified())
        });
        if !listens {
            out.push(format!(
                "routing: none of the services {} follows listens on {} (or a wildcard): announced traffic would find no listener",
                v.address,
                v.services.join(", ")
            ));
        }
    }
    if routing.vips.iter().any(|v| v.address.is_ipv4()) {
        let rules = [
            (
                "arp_ignore",
                1,
                "this node answers ARP for the VIP on every interface",
            ),
            (
                "arp_announce",
                2,
                "this node may send ARP requests from the VIP",
            ),
        ];
        for (key, want, effect) in rules {
            let path = format!("net/ipv4/conf/all/{key}");
            match sysctl(&path).and_then(|v| v.trim().parse::<u32>().ok()) {
                Some(now) if now >= want => {}
                Some(now) => out.push(format!(
                    "routing: net.ipv4.conf.all.{key} is {now}, not {want}: with the VIP on {}, {effect} (see docs/bgp.md, \"The VIP on each node\")",
                    routing.vip_interface
                )),
                None => {}
            }
        }
    }
    out
}

fn read_sysctl(path: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/sys/{path}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(listen: &str) -> Config {
        let text = format!("services:\n  - name: api\n    listen: {listen}\n    backends: [{{ address: 127.0.0.1:6443 }}]\nrouting:\n  vips: [{{ address: 198.18.100.1, services: [api] }}]\n");
        tandem_config::parse(&text, "t.yaml").unwrap()
    }

    #[test]
    fn routing_warnings_name_a_missing_listener_and_arp_settings() {
        let c = config("198.18.100.2:8443");
        let sysctl = |p: &str| {
            Some(
                if p.ends_with("arp_ignore") {
                    "0\n"
                } else {
                    "2\n"
                }
                .to_owned(),
            )
        };
        let w = routing_warnings(c.routing.as_ref().unwrap(), &c.services, &sysctl);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].contains("none of the services 198.18.100.1 follows listens on"),
            "{w:?}"
        );
        assert!(
            w[1].contains("net.ipv4.conf.all.arp_ignore is 0, not 1"),
            "{w:?}"
        );

        let c = config("0.0.0.0:8443");
        let good = |_: &str| Some("2\n".to_owned());
        assert!(routing_warnings(c.routing.as_ref().unwrap(), &c.services, &good).is_empty());
        let summary = summary(&c, "t.yaml");
        assert!(
            summary.contains("routing: table 250 protocol 250 device tandem-routes, VIPs on lo"),
            "{summary}"
        );
        assert!(summary.contains("198.18.100.1 follows api"), "{summary}");
    }
}
