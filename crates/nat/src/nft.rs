//! Running the `nft` program: the one place this crate touches the system.
//!
//! nft rather than raw netlink: its text format is the documented interface
//! of nftables, `nft -f` applies a whole file as one transaction, and an
//! operator can read the same text back with `nft list table inet tandem`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::counters::{self, Counters};
use crate::render::{render_delete, TABLE};

/// Why the kernel data path cannot be set up or changed.
#[derive(Debug, thiserror::Error)]
pub enum NatError {
    #[error("forwarding: nat needs nftables' `nft` command, not found in PATH (install the nftables package)")]
    NotFound,
    #[error("forwarding: nat: cannot run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("forwarding: nat: not permitted to change nftables rules (tandem needs CAP_NET_ADMIN, e.g. run as root or with AmbientCapabilities=CAP_NET_ADMIN); nft said: {stderr}")]
    NotPermitted { stderr: String },
    #[error("forwarding: nat: nft refused the rules for table {TABLE}: {stderr}")]
    Refused { stderr: String },
    #[error("forwarding: nat: cannot read the counters of table {TABLE}: {0}")]
    Counters(String),
}

/// The `nft` program found on `PATH`.
#[derive(Debug, Clone)]
pub struct Nft {
    program: PathBuf,
}

impl Nft {
    /// Finds `nft` in the directories of `PATH`.
    pub fn locate() -> Result<Nft, NatError> {
        let path = std::env::var_os("PATH").ok_or(NatError::NotFound)?;
        std::env::split_paths(&path)
            .map(|dir| dir.join("nft"))
            .find(|p| is_executable(p))
            .map(|program| Nft { program })
            .ok_or(NatError::NotFound)
    }

    /// Asks the kernel whether `ruleset` would apply (`nft -c`), changing
    /// nothing. Needs the same privilege as applying it.
    pub fn check(&self, ruleset: &str) -> Result<(), NatError> {
        self.run(&["-c", "-f", "-"], Some(ruleset)).map(drop)
    }

    /// Applies `ruleset` as one transaction: all of it or nothing.
    pub fn apply(&self, ruleset: &str) -> Result<(), NatError> {
        self.run(&["-f", "-"], Some(ruleset)).map(drop)
    }

    /// Removes the table, if there is one.
    pub fn delete(&self) -> Result<(), NatError> {
        self.apply(&render_delete())
    }

    /// The table's named counters; empty when there is no table.
    pub fn counters(&self) -> Result<Counters, NatError> {
        let (family, name) = TABLE.split_once(' ').expect("TABLE is `family name`");
        let out = self.run(&["-j", "list", "counters", "table", family, name], None);
        match out {
            Ok(json) => counters::parse(&json).map_err(NatError::Counters),
            Err(NatError::Refused { stderr }) if stderr.contains("No such file or directory") => {
                Ok(Counters::default())
            }
            Err(e) => Err(e),
        }
    }

    fn run(&self, args: &[&str], input: Option<&str>) -> Result<String, NatError> {
        let spawn = |source| NatError::Spawn {
            program: self.program.display().to_string(),
            source,
        };
        let mut child = Command::new(&self.program)
            .args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn)?;
        if let Some(text) = input {
            let mut stdin = child.stdin.take().expect("stdin is piped");
            // A write error (nft exited early) shows in its status and stderr.
            let _ = stdin.write_all(text.as_bytes());
        }
        let out = child.wait_with_output().map_err(spawn)?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        let stderr = if stderr.is_empty() {
            format!("exit status {}", out.status)
        } else {
            stderr
        };
        if stderr.contains("Operation not permitted") {
            Err(NatError::NotPermitted { stderr })
        } else {
            Err(NatError::Refused { stderr })
        }
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
