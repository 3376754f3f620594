//! Notify hooks: the operator's commands run on each state change, one at a
//! time per instance and in order, never through a shell (unless the command
//! itself is `sh -c …`), each killed after [`TIMEOUT`], its output logged.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::InstanceState;

/// How long a hook may run before it is killed.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// An instance's notify commands, split once when the instance is built.
#[derive(Debug, Default)]
pub(crate) struct Commands {
    pub master: Option<Vec<String>>,
    pub backup: Option<Vec<String>>,
    pub fault: Option<Vec<String>>,
}

impl Commands {
    /// The argv to run on entering `state`, if the instance has a command for it:
    /// the command's words, then the instance name and the state.
    pub(crate) fn argv(&self, state: InstanceState, instance: &str) -> Option<Vec<String>> {
        let words = match state {
            InstanceState::Master => self.master.as_ref(),
            InstanceState::Backup => self.backup.as_ref(),
            InstanceState::Fault => self.fault.as_ref(),
            InstanceState::Initialize => None,
        }?;
        let mut argv = words.clone();
        argv.push(instance.to_owned());
        argv.push(state.as_str().to_owned());
        Some(argv)
    }
}

/// Runs queued hooks one after another; ends when the sender is dropped.
pub async fn run_queue(instance: String, mut queue: mpsc::UnboundedReceiver<Vec<String>>) {
    while let Some(argv) = queue.recv().await {
        run(&instance, &argv, TIMEOUT).await;
    }
}

/// Runs one hook to completion or `timeout` and logs how it went.
pub async fn run(instance: &str, argv: &[String], timeout: Duration) {
    let Some((program, args)) = argv.split_first() else {
        return;
    };
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => {
            warn!(instance, command = ?argv, error = %e, "vrrp notify hook could not start");
            return;
        }
    };
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => {
            // Dropping the future killed the child (kill_on_drop).
            warn!(instance, command = ?argv, timeout = ?timeout, "vrrp notify hook killed after its timeout");
        }
        Ok(Err(e)) => {
            warn!(instance, command = ?argv, error = %e, "vrrp notify hook failed");
        }
        Ok(Ok(out)) => {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                info!(instance, command = %program, "notify: {line}");
            }
            for line in String::from_utf8_lossy(&out.stderr).lines() {
                warn!(instance, command = %program, "notify stderr: {line}");
            }
            if out.status.success() {
                info!(instance, command = ?argv, "vrrp notify hook done");
            } else {
                warn!(instance, command = ?argv, status = %out.status, "vrrp notify hook failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn hooks_get_the_instance_and_state_appended() {
        assert_eq!(
            argv("/etc/tandem/notify 'the vip'", "vip-a", "master").unwrap(),
            ["/etc/tandem/notify", "the vip", "vip-a", "master"]
        );
        assert!(argv("'open", "v", "backup").is_err());
    }

    #[tokio::test]
    async fn a_hook_runs_with_its_arguments_and_without_a_shell() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let cmd = format!("sh -c 'echo \"$0 $1\" > {}'", out.display());
        let argv = argv(&cmd, "vip-a", "master").unwrap();
        run("vip-a", &argv, TIMEOUT).await;
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "vip-a master\n");

        // `$HOME` and `>` are plain arguments without `sh -c`.
        let echo = argv_of("echo $HOME > nowhere");
        assert_eq!(echo, ["echo", "$HOME", ">", "nowhere", "v", "backup"]);
        run("v", &echo, TIMEOUT).await;
        assert!(!std::path::Path::new("nowhere").exists());
    }

    /// What the driver runs for `cmd` when `instance` enters `state`
    /// (`master`, `backup` or `fault`); an error when `cmd` cannot be split.
    fn argv(cmd: &str, instance: &str, state: &str) -> Result<Vec<String>, String> {
        let words = tandem_config::split_command(cmd)?;
        let state = match state {
            "master" => InstanceState::Master,
            "backup" => InstanceState::Backup,
            "fault" => InstanceState::Fault,
            other => panic!("no hook for state {other}"),
        };
        let commands = Commands {
            master: Some(words.clone()),
            backup: Some(words.clone()),
            fault: Some(words),
        };
        Ok(commands
            .argv(state, instance)
            .expect("a command for every state"))
    }

    fn argv_of(cmd: &str) -> Vec<String> {
        argv(cmd, "v", "backup").unwrap()
    }

    #[tokio::test]
    async fn a_hung_hook_is_killed_at_its_timeout() {
        let start = Instant::now();
        run("v", &argv_of("sleep 30"), Duration::from_millis(200)).await;
        assert!(start.elapsed() < Duration::from_secs(5));
        // A missing program is logged, not fatal.
        run("v", &argv_of("/nonexistent/hook"), TIMEOUT).await;
    }
}
