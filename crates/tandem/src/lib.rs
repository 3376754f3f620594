//! The tandem binary as a library: command line, logging, wiring of the
//! components, signals and exit codes. This is the only crate that touches the
//! process (signals, resource limits, exit codes); the libraries it wires
//! never do.
//!
//! `run` reads and validates the whole configuration before it binds anything,
//! binds every listener before it accepts on any, and on SIGTERM/SIGINT stops
//! accepting, drains for `drain_timeout`, cuts what is left and exits 0.

mod admin_client;
mod check;
mod cli;
mod daemon;
mod demo;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod init_config;
mod logging;
mod migrate;
mod sd_notify;

use std::process::ExitCode;

use clap::Parser;

pub use cli::{Cli, Command};

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format, &cli.log_level);
    let result = match &cli.command {
        Command::Run { config } => daemon::run_file(config),
        Command::Check { config } => check::run(config),
        Command::Demo { port, admin_port } => demo::run(*port, *admin_port),
        Command::Status { admin, json } => admin_client::status(admin, *json),
        Command::Drain {
            service,
            backend,
            admin,
        } => admin_client::set_draining(admin, service, backend, true),
        Command::Enable {
            service,
            backend,
            admin,
        } => admin_client::set_draining(admin, service, backend, false),
        Command::Maintenance { state, admin } => {
            admin_client::set_maintenance(admin, *state == cli::OnOff::On)
        }
        Command::FlushRoutes { config } => daemon::flush_routes(config),
        Command::Reload { admin } => admin_client::reload(admin),
        Command::InitConfig(args) => init_config::run(args),
        Command::Migrate { files } => migrate::run(files),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
