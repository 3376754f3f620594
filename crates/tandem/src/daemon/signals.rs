//! The signals the daemon answers: SIGTERM and SIGINT stop it (a second one
//! exits at once), SIGHUP reloads. Only this module installs handlers.

use anyhow::Context;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// What a signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Request {
    /// SIGTERM or SIGINT, by name.
    Stop(&'static str),
    /// SIGHUP. A burst of them is coalesced by the signal stream.
    Reload,
}

pub(super) struct Signals {
    terminate: Signal,
    interrupt: Signal,
    hangup: Signal,
}

impl Signals {
    pub(super) fn install() -> anyhow::Result<Self> {
        Ok(Signals {
            terminate: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            hangup: signal(SignalKind::hangup()).context("cannot handle SIGHUP")?,
        })
    }

    /// The next signal.
    pub(super) async fn next(&mut self) -> Request {
        tokio::select! {
            _ = self.terminate.recv() => Request::Stop("SIGTERM"),
            _ = self.interrupt.recv() => Request::Stop("SIGINT"),
            _ = self.hangup.recv() => Request::Reload,
        }
    }

    /// The next SIGTERM or SIGINT; SIGHUPs meanwhile are ignored.
    pub(super) async fn stop(&mut self) -> &'static str {
        loop {
            if let Request::Stop(name) = self.next().await {
                return name;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sighup_asks_for_a_reload() {
        let mut signals = Signals::install().unwrap();
        let sent = std::process::Command::new("kill")
            .args(["-HUP", &std::process::id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), signals.next()).await;
        assert_eq!(got.unwrap(), Request::Reload);
    }
}
