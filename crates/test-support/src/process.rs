//! The real tandem binary, run with a YAML config, for end-to-end tests.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running `tandem run -c FILE`; killed on drop.
#[derive(Debug)]
pub struct Tandem {
    child: Child,
    dir: tempfile::TempDir,
    log: PathBuf,
}

impl Tandem {
    /// Writes `yaml` to a temporary file and starts `bin run -c` on it with
    /// debug logs to a file. Does not wait: see [`Tandem::wait_listening`].
    pub fn spawn(bin: &Path, yaml: &str) -> Self {
        Self::spawn_with_args(bin, yaml, &["--log-level", "debug"])
    }

    pub fn spawn_with_args(bin: &Path, yaml: &str, args: &[&str]) -> Self {
        Self::spawn_command(Command::new(bin), yaml, args)
    }

    /// Runs tandem under an open-file limit of `nofile` (soft and hard, with
    /// util-linux's `prlimit`); `None` when prlimit is missing.
    pub fn spawn_with_open_file_limit(bin: &Path, yaml: &str, nofile: u64) -> Option<Self> {
        Command::new("prlimit").arg("--version").output().ok()?;
        let mut command = Command::new("prlimit");
        command
            .arg(format!("--nofile={nofile}:{nofile}"))
            .arg("--")
            .arg(bin);
        Some(Self::spawn_command(
            command,
            yaml,
            &["--log-level", "debug"],
        ))
    }

    /// Runs tandem inside a network namespace (`ip netns exec NS bin run -c …`).
    pub fn spawn_in_netns(ns: &str, bin: &Path, yaml: &str) -> Self {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", ns]).arg(bin);
        Self::spawn_command(command, yaml, &["--log-level", "debug"])
    }

    fn spawn_command(mut command: Command, yaml: &str, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let config = dir.path().join("tandem.yaml");
        std::fs::write(&config, yaml).expect("write config");
        let log = dir.path().join("tandem.log");
        let log_file = File::create(&log).expect("create log file");
        let child = command
            .args(args)
            .arg("run")
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone log file"))
            .stderr(log_file)
            .spawn()
            .expect("start tandem");
        Tandem { child, dir, log }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("tandem.yaml")
    }

    /// Waits (at most 10 s) until tandem logs that every listener is bound, and
    /// checks that `addr` is among them. Makes no connection, so no backend sees
    /// a probe.
    pub fn wait_listening(&mut self, addr: SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("tandem exited early ({status}):\n{}", self.logs());
            }
            let logs = self.logs();
            if logs.contains("tandem started") {
                assert!(
                    logs.contains(&format!("listen={addr}"))
                        || logs.contains(&format!("\"listen\":\"{addr}\"")),
                    "tandem started without listening on {addr}:\n{logs}"
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("tandem did not start within 10s:\n{}", self.logs());
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `INT`, `HUP`) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits at most `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Waits (at most 10 s) until the log contains `needle`.
    pub fn wait_log(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.logs().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Tandem {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
