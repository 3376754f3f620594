//! Why a checker could not be built. Probe failures are not errors: they are
//! results, reported as reasons in [`crate::ProbeReport`] and [`crate::Transition`].

use std::io;
use std::path::PathBuf;

/// A health configuration that cannot be turned into a working prober.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// A CA, certificate or key file that cannot be read or holds no usable PEM.
    #[error("tls.{key} `{}`: {message}", path.display())]
    File {
        /// `ca_file`, `cert_file` or `key_file`.
        key: &'static str,
        path: PathBuf,
        message: String,
    },
    /// `verify: true` without `ca_file`, and the system trust store is empty.
    #[error("tls: no `ca_file` and no usable certificate in the system trust store ({0}); set `tls.ca_file`")]
    NoSystemRoots(String),
    /// `server_name` that is neither a DNS name nor an IP address.
    #[error("tls.server_name `{0}`: not a valid DNS name or IP address")]
    ServerName(String),
    /// A client certificate and key that rustls refuses together.
    #[error("tls.cert_file `{}` / tls.key_file `{}`: {source}", cert.display(), key.display())]
    ClientAuth {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    /// A TLS setting rustls refuses (should not happen with the ring provider).
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
    /// `path` or `host` that would break the request line or a header.
    #[error("{key} `{value}`: must not contain spaces or control characters")]
    RequestText { key: &'static str, value: String },
}

/// An OS error as a short lowercase phrase: `no such file or directory`
/// rather than `No such file or directory (os error 2)`.
pub(crate) fn io_text(e: &io::Error) -> String {
    let text = e.to_string();
    let text = match text.find(" (os error ") {
        Some(i) => &text[..i],
        None => text.as_str(),
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}
