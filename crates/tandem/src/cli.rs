//! The command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

pub const DEFAULT_CONFIG: &str = "/etc/tandem/tandem.yaml";

/// A virtual IP (VRRP) and a TCP/UDP load balancer in one daemon.
#[derive(Debug, Parser)]
#[command(name = "tandem", version, about)]
pub struct Cli {
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// Log level or filter (error, warn, info, debug, trace, or e.g. `tandem_listener=debug`).
    #[arg(long, default_value = "info", global = true)]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon with a configuration file.
    Run {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Check a configuration file: print a summary and exit 0, or every error and exit 1.
    Check {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Show services, backends, health and VIP state of a running tandem as a table.
    Status {
        #[command(flatten)]
        admin: AdminArgs,
        /// Print the raw JSON document instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Stop sending new connections to a backend; open ones continue.
    Drain {
        service: String,
        /// The backend's name, or its address.
        backend: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Undo `drain`: the backend takes new connections again.
    Enable {
        service: String,
        backend: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Node maintenance: `on` withdraws every routed VIP (the `routing` section), `off` lets health decide again.
    Maintenance {
        #[arg(value_enum)]
        state: OnOff,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Remove tandem's routes from its routing table (systemd's ExecStopPost, after a crash).
    FlushRoutes {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Ask a running tandem to reload its configuration file (like SIGHUP).
    Reload {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Convert a keepalived.conf and a haproxy.cfg (as in kubeadm's HA guide) into a tandem configuration.
    Migrate {
        /// keepalived.conf and/or haproxy.cfg (told apart by their content).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print a ready configuration for a kubeadm control plane (VIP + apiservers).
    InitConfig(InitConfigArgs),
    /// Run three local backends with tandem in front of them, and print what to try.
    Demo {
        /// The port tandem listens on (127.0.0.1).
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// The port of the admin endpoint: status page, metrics, drain/enable (127.0.0.1).
        #[arg(long, default_value_t = 9901)]
        admin_port: u16,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

/// How to reach a running tandem's admin endpoint.
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// The configuration file, read for `admin.listen` and `admin.token_file`.
    #[arg(short, long, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// The admin endpoint (overrides the file; default 127.0.0.1:9901).
    #[arg(long)]
    pub admin: Option<String>,
    /// A file holding the bearer token (overrides the file's `admin.token_file`).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
}

/// `tandem init-config --vip 198.18.0.100/24 --interface eth0 --backends A:6443,B:6443,C:6443 --priority 150`
#[derive(Debug, clap::Args)]
pub struct InitConfigArgs {
    /// The virtual IP with its prefix length, e.g. 198.18.0.100/24.
    #[arg(long)]
    pub vip: String,
    /// The interface that carries the VIP and the VRRP adverts.
    #[arg(long)]
    pub interface: String,
    /// The kube-apiservers, IP:PORT, comma-separated.
    #[arg(long)]
    pub backends: String,
    /// This node's VRRP priority (1-254; the highest healthy node holds the VIP).
    #[arg(long, default_value_t = 100)]
    pub priority: u8,
    /// The port tandem listens on at the VIP (not 6443: kube-apiserver has it).
    #[arg(long, default_value_t = 8443)]
    pub port: u16,
    /// The VRRP virtual router id, the same on every node.
    #[arg(long, default_value_t = 51)]
    pub vrid: u8,
    /// The service name.
    #[arg(long, default_value = "kube-apiserver")]
    pub name: String,
    /// Verify the apiservers' certificates with this CA (default: `tls.verify: false`).
    #[arg(long)]
    pub ca_file: Option<String>,
}
