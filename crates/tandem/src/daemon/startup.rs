//! What the process sets up once, before any service runs: the async
//! runtime, the open-file limit, the admin token and the admin listener.

use anyhow::{bail, Context};
use tandem_config::Config;
use tracing::warn;

/// One worker thread (set, or the default on a one-CPU host) is tokio's
/// current-thread runtime: every task on the thread that runs the daemon,
/// with no work-stealing queues and no wakeups across threads (as HAProxy's
/// `nbthread 1` or nginx's one worker).
pub fn runtime(config: &Config) -> anyhow::Result<tokio::runtime::Runtime> {
    let threads = config.runtime.worker_threads.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        |n| n.get(),
    );
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    builder
        .enable_all()
        .thread_name("tandem-worker")
        .build()
        .context("cannot start the async runtime")
}

/// A proxy holds two descriptors per connection (more while splicing): use the
/// whole hard limit, as HAProxy and nginx do.
pub fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) if n < 4096 => {
            warn!(
                limit = n,
                "open file limit is low; each connection needs 2-4 descriptors"
            )
        }
        Ok(_) => {}
        Err(e) => warn!(error = %e, "cannot raise the open file limit"),
    }
}

/// The bearer token for the admin endpoint's mutating requests, if configured.
pub(super) fn read_token(config: &Config) -> anyhow::Result<Option<String>> {
    let Some(path) = config.admin.as_ref().and_then(|a| a.token_file.as_ref()) else {
        return Ok(None);
    };
    let token = std::fs::read_to_string(path)
        .with_context(|| format!("admin.token_file {}", path.display()))?;
    let token = token.trim().to_owned();
    if token.is_empty() {
        bail!("admin.token_file {} is empty", path.display());
    }
    Ok(Some(token))
}

/// Binds the admin endpoint, if there is one; the error is one line naming it.
pub(super) fn bind_admin(config: &Config) -> Result<Option<std::net::TcpListener>, String> {
    let Some(admin) = &config.admin else {
        return Ok(None);
    };
    let listener = std::net::TcpListener::bind(admin.listen)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| format!("admin endpoint {}: {e}", admin.listen))?;
    Ok(Some(listener))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(admin: &str) -> Config {
        let yaml = format!(
            "{admin}services:\n  - {{ name: s, listen: 127.0.0.1:1, backends: [{{ address: 127.0.0.1:2 }}] }}\n"
        );
        tandem_config::parse(&yaml, "test").unwrap()
    }

    #[test]
    fn a_token_file_is_read_trimmed_and_may_not_be_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let with_token = |text: &str| {
            std::fs::write(&path, text).unwrap();
            read_token(&config(&format!(
                "admin: {{ listen: 127.0.0.1:9901, token_file: {} }}\n",
                path.display()
            )))
        };
        assert_eq!(with_token("s3cret\n").unwrap().as_deref(), Some("s3cret"));
        let empty = with_token(" \n").unwrap_err().to_string();
        assert!(empty.contains("is empty"), "{empty}");
        assert_eq!(read_token(&config("")).unwrap(), None);
    }

    #[test]
    fn a_taken_admin_port_is_one_line_naming_it() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let at = taken.local_addr().unwrap();
        let e = bind_admin(&config(&format!("admin: {{ listen: {at} }}\n"))).unwrap_err();
        assert!(e.starts_with(&format!("admin endpoint {at}: ")), "{e}");
        assert!(bind_admin(&config("")).unwrap().is_none());
    }

    #[test]
    fn one_worker_thread_is_the_current_thread_runtime() {
        let mut c = config("");
        c.runtime.worker_threads = std::num::NonZeroUsize::new(1);
        let rt = runtime(&c).unwrap();
        assert_eq!(
            rt.handle().runtime_flavor(),
            tokio::runtime::RuntimeFlavor::CurrentThread
        );
    }
}
