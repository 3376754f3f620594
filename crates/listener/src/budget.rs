//! The process's file descriptors, shared out so that no protocol can starve
//! another.
//!
//! A UDP session holds a socket of its own for as long as it lives, and a new
//! session is opened by one datagram from a new source address, which costs a
//! client nothing (and can be spoofed). Unbounded, a flood of sources would take
//! every descriptor, and the TCP service in the same process (the API server's
//! endpoint, say) could accept nothing until the sessions expire. So UDP
//! sessions, across all UDP services, may hold at most half of what is left of
//! the open-file limit after a fixed reserve for the daemon itself (listeners,
//! the admin endpoint, VRRP sockets, netlink); the other half stays for TCP
//! connections (two descriptors each, four more while splicing) and health
//! checks. Each service's `udp.max_sessions` applies on top.
//!
//! A datagram that would open a session over the budget is dropped, counted
//! (`tandem_udp_dropped_total{reason="fd_budget"}`) and logged at most once a
//! second.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use tracing::warn;

/// Descriptors kept for the daemon's own sockets, whatever the limit.
pub const DAEMON_RESERVE: u64 = 128;

/// How many UDP sessions the whole process may hold open.
#[derive(Debug)]
pub struct SessionBudget {
    max: u64,
    open: AtomicU64,
    log: LogEverySecond,
}

impl SessionBudget {
    /// The budget for a process whose open-file limit is `nofile`.
    pub fn for_open_file_limit(nofile: u64) -> Arc<Self> {
        Self::with_max(nofile.saturating_sub(DAEMON_RESERVE) / 2)
    }

    /// The budget for the limit this process runs with now
    /// (`RLIMIT_NOFILE`'s soft value).
    pub fn for_this_process() -> Arc<Self> {
        let nofile = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft);
        Self::for_open_file_limit(nofile)
    }

    pub fn with_max(max: u64) -> Arc<Self> {
        Arc::new(SessionBudget {
            max,
            open: AtomicU64::new(0),
            log: LogEverySecond::default(),
        })
    }

    /// Sessions the process may hold at once.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Sessions open now.
    pub fn open(&self) -> u64 {
        self.open.load(Relaxed)
    }

    /// One session's share, held until the guard drops; `None` when the budget
    /// is spent (the caller counts the drop; this logs it, once a second).
    pub fn take(self: &Arc<Self>, service: &str) -> Option<BudgetGuard> {
        let taken = self
            .open
            .fetch_update(Relaxed, Relaxed, |n| (n < self.max).then_some(n + 1));
        match taken {
            Ok(_) => Some(BudgetGuard(Arc::clone(self))),
            Err(_) => {
                if self.log.due() {
                    warn!(
                        service,
                        budget = self.max,
                        "udp datagram dropped: the process's udp sessions hold their share of the open-file limit \
                         (half of it, less {DAEMON_RESERVE}); tcp keeps the rest (logged at most once a second)"
                    );
                }
                None
            }
        }
    }
}

/// One open session's share of the [`SessionBudget`].
#[derive(Debug)]
pub struct BudgetGuard(Arc<SessionBudget>);

impl Drop for BudgetGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Relaxed);
    }
}

/// A log line's rate limit: [`due`](Self::due) is true at most once a second.
#[derive(Debug, Default)]
pub(crate) struct LogEverySecond {
    /// Milliseconds since `EPOCH` of the last line, plus one (0: never).
    last: AtomicU64,
}

/// A fixed origin for the log clock; any instant before the first line.
static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

impl LogEverySecond {
    pub(crate) fn due(&self) -> bool {
        let now = EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1;
        let last = self.last.load(Relaxed);
        (last == 0 || now.saturating_sub(last) >= 1000)
            && self
                .last
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_of_the_limit_after_the_reserve() {
        assert_eq!(SessionBudget::for_open_file_limit(4096).max(), 1984);
        assert_eq!(SessionBudget::for_open_file_limit(1_048_576).max(), 524_224);
        assert_eq!(SessionBudget::for_open_file_limit(100).max(), 0);
    }

    #[test]
    fn a_spent_budget_refuses_until_a_session_ends() {
        let budget = SessionBudget::with_max(2);
        let a = budget.take("s").expect("first");
        let b = budget.take("s").expect("second");
        assert!(budget.take("s").is_none());
        assert_eq!(budget.open(), 2);
        drop(a);
        let c = budget.take("s").expect("freed by the first");
        assert!(budget.take("s").is_none());
        drop((b, c));
        assert_eq!(budget.open(), 0);
    }

    #[test]
    fn the_log_is_due_once_then_not_within_the_second() {
        let log = LogEverySecond::default();
        assert!(log.due());
        assert!(!log.due());
        assert!(!log.due());
    }
}
