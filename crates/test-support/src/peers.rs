//! Real peers from Debian's packages, run in the foreground from a temporary
//! folder and killed on drop: nginx and HAProxy, which speak the PROXY
//! protocol on their own (`listen ... proxy_protocol`, `send-proxy`), so
//! tandem's headers are checked by someone else's parser.
//!
//! [`Peer::start`] returns `None` (and the test should skip, saying so) when
//! the program is not installed, except under CI, where it panics.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A peer process; killed and reaped on drop.
#[derive(Debug)]
pub struct Peer {
    child: Child,
    dir: tempfile::TempDir,
}

impl Peer {
    /// nginx with `http` as the body of its `http { }` block. `DIR` in it is
    /// replaced by the peer's temporary folder. Waits until `ready` accepts.
    pub fn nginx(http: &str, ready: SocketAddr) -> Option<Peer> {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let d = dir.path().display().to_string();
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\nevents {{ worker_connections 512; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n{}\n}}\n",
            http.replace("DIR", &d)
        );
        Peer::start("nginx", dir, &conf, ready, |path| {
            vec![
                "-p".into(),
                "/".into(),
                "-c".into(),
                path.display().to_string(),
            ]
        })
    }

    /// HAProxy with this whole configuration. Waits until `ready` accepts.
    pub fn haproxy(conf: &str, ready: SocketAddr) -> Option<Peer> {
        let dir = tempfile::tempdir().expect("a temporary folder");
        Peer::start("haproxy", dir, conf, ready, |path| {
            vec!["-db".into(), "-f".into(), path.display().to_string()]
        })
    }

    fn start(
        program: &str,
        dir: tempfile::TempDir,
        conf: &str,
        ready: SocketAddr,
        args: impl FnOnce(&PathBuf) -> Vec<String>,
    ) -> Option<Peer> {
        if Command::new(program).arg("-v").output().is_err() {
            assert!(
                std::env::var_os("CI").is_none(),
                "{program} is missing in CI (.ci/run installs it)"
            );
            eprintln!("SKIPPED: {program} is not installed (apt-get install {program})");
            return None;
        }
        let path = dir.path().join(format!("{program}.conf"));
        std::fs::write(&path, conf).expect("the peer's config is written");
        let child = Command::new(program)
            .args(args(&path))
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("stderr")).expect("a log file"),
            ))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let mut peer = Peer { child, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&ready, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = peer.child.try_wait() {
                panic!("{program} exited ({status}):\n{}", peer.logs());
            }
            assert!(
                Instant::now() < deadline,
                "{program} did not listen on {ready}:\n{}",
                peer.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(peer)
    }

    /// What the peer wrote to stderr and its error log.
    pub fn logs(&self) -> String {
        ["stderr", "error.log"]
            .iter()
            .filter_map(|f| std::fs::read_to_string(self.dir.path().join(f)).ok())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
