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
    /// Run three local backends with tandem in front of them, and print what to try.
    Demo {
        /// The port tandem listens on (127.0.0.1).
        #[arg(long, default_value_t = 8080)]
        port: u16,
    },
}
