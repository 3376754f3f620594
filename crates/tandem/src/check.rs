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
    let warnings: Vec<String> = config
        .vrrp
        .instances
        .iter()
        .flat_map(|i| {
            tandem_vrrp::tracking_warnings(i)
                .into_iter()
                .map(move |w| format!("vrrp {}: {w}", i.name))
        })
        .collect();
    if !warnings.is_empty() {
        let _ = writeln!(out);
        for w in warnings {
            let _ = writeln!(out, "warning: {w}");
        }
    }
    out
}
