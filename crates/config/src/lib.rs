//! tandem's configuration: the YAML file becomes a validated model with every
//! default resolved, or a list of errors that each say where (file:line:col),
//! what (the field path) and what would be valid.
//!
//! Key types: [`Config`] and the rest of [`model`] (what the program uses);
//! [`parse`] and [`load`] (the only ways to get one); [`ConfigError`] and
//! [`ConfigErrors`] (why not); [`diff`] (what a reload from one [`Config`]
//! to another changes, as [`Change`]s).
//!
//! How a file is read, in order:
//! 1. `locate`: yaml-rust2 builds a positioned tree of the file (for line:col
//!    of any field) and catches what serde reports badly: an empty file, a
//!    second document, a top level that is not a mapping, duplicate keys.
//! 2. `file`: serde reads the raw structs (`deny_unknown_fields`, `Option`s).
//!    It stops at the first structural problem (unknown key, wrong type, YAML
//!    syntax), so at most one such error is reported; `structure` rewrites it.
//! 3. `validate`: raw structs become the model. Every semantic problem in the
//!    file is reported at once. Defaults live in `defaults`, nowhere else.
//!
//! Invariants of a [`Config`] returned by this crate: service and VRRP
//! instance names are unique and match `[A-Za-z0-9._-]+`; no two services
//! share a listen address and protocol; every service has at least one
//! backend, not all of them backups; weights are 1..=256; every timeout and
//! interval is longer than zero; a health timeout does not exceed its
//! interval; every `track` names an existing service; VRIDs are unique per
//! interface and address family; an instance's virtual IPs are one family;
//! notify commands split into words ([`split_command`]); `checksum:
//! no_pseudo_header` only on IPv4 instances.
//!
//! This crate is pure: no I/O except reading the file in [`load`], no
//! sockets, no clock, no tokio, no logging. serde stays inside it: the model
//! has no serde derives.

mod defaults;
mod diff;
mod file;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod locate;
pub mod model;
mod path;
mod report;
mod structure;
mod suggest;
mod validate;
mod values;

pub use diff::{diff, Change, Clash, Diff, RestartOnly};
pub use model::*;

use std::fmt;
use std::path::Path;

use locate::{Document, Pos};

/// One problem in a configuration file, located.
///
/// Displayed as `origin:line:column: path: message`; the `path: ` part is left
/// out when the error is about the whole file (empty path), and `line:column:`
/// when there is no position (line 0, e.g. the file cannot be read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file name as given (or `<embedded>` etc.).
    pub origin: String,
    /// 1-based; 0 when the error has no position (e.g. the file cannot be read).
    pub line: usize,
    /// 1-based, in characters; 0 when `line` is 0.
    pub column: usize,
    /// Field path such as `services[kube-apiserver].backends[2].weight`; empty for the whole file.
    pub path: String,
    /// Lowercase, with the offending value in backticks and what would be valid.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn at(origin: &str, pos: Pos, path: &str, message: String) -> Self {
        ConfigError {
            origin: origin.to_owned(),
            line: pos.line,
            column: pos.column,
            path: path.to_owned(),
            message,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.origin)?;
        if self.line > 0 {
            write!(f, "{}:{}:", self.line, self.column)?;
        }
        if !self.path.is_empty() {
            write!(f, " {}:", self.path)?;
        }
        write!(f, " {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in one file, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Reads and parses the file at `path`; errors name it as given.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let origin = path.display().to_string();
    match std::fs::read(path) {
        Ok(bytes) => parse_bytes(&bytes, &origin),
        Err(e) => Err(ConfigErrors(vec![ConfigError {
            origin,
            line: 0,
            column: 0,
            path: String::new(),
            message: format!("cannot read: {e}"),
        }])),
    }
}

/// Parses a file's bytes: [`parse`] when they are UTF-8, else one error at
/// the first byte that is not.
pub fn parse_bytes(bytes: &[u8], origin: &str) -> Result<Config, ConfigErrors> {
    match std::str::from_utf8(bytes) {
        Ok(text) => parse(text, origin),
        Err(e) => Err(ConfigErrors(vec![not_utf8(bytes, &e, origin.to_owned())])),
    }
}

/// Where the first byte that is not UTF-8 is: its line, and its column in
/// characters (the valid text before it on that line, plus one).
fn not_utf8(bytes: &[u8], e: &std::str::Utf8Error, origin: String) -> ConfigError {
    let valid = std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default();
    let line_start = valid.rfind('\n').map_or(0, |i| i + 1);
    ConfigError {
        origin,
        line: valid.matches('\n').count() + 1,
        column: valid[line_start..].chars().count() + 1,
        path: String::new(),
        message: format!(
            "not UTF-8: byte 0x{:02x} cannot start or continue a character here; save the file as UTF-8",
            bytes[e.valid_up_to()]
        ),
    }
}

/// Parses and validates configuration text; `origin` names it in errors.
pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigErrors> {
    // Editors on Windows may start the file with a byte order mark.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    parse_text(text, origin).map_err(|mut errors| {
        for e in &mut errors.0 {
            within_text(e, text);
        }
        errors
    })
}

/// Moves a position past the end of the text (libyaml reports the end of a
/// file without a final newline on the line after it) to the end of the text,
/// and one past the end of a line to just after its last character.
fn within_text(e: &mut ConfigError, text: &str) {
    if e.line == 0 {
        return;
    }
    let lines = text.split('\n').count();
    if e.line > lines {
        e.line = lines;
        e.column = usize::MAX;
    }
    let width = text
        .split('\n')
        .nth(e.line - 1)
        .map_or(0, |l| l.chars().count());
    e.column = e.column.clamp(1, width + 1);
}

fn parse_text(text: &str, origin: &str) -> Result<Config, ConfigErrors> {
    let doc = match Document::parse(text) {
        Ok(doc) => doc,
        Err(scan) => {
            // Prefer libyaml's message (it says what it was reading); use
            // yaml-rust2's if libyaml happens to accept the file.
            let err = match serde_yaml::from_str::<file::File>(text) {
                Err(e) => structure::from_serde(&e, None, text, origin),
                Ok(_) => structure::from_scan(&scan, text, origin),
            };
            return Err(ConfigErrors(vec![err]));
        }
    };
    let problems = structure::check_document(&doc, origin);
    if !problems.is_empty() {
        return Err(ConfigErrors(problems));
    }
    let raw: file::File = serde_yaml::from_str(text)
        .map_err(|e| ConfigErrors(vec![structure::from_serde(&e, Some(&doc), text, origin)]))?;
    validate::validate(&raw, &doc, origin).map_err(ConfigErrors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_at_the_end_of_a_file_without_final_newline_is_on_its_last_line() {
        // Found by the config fuzz harness: `{` was located at 2:1, a line the file does not have.
        let e = parse("{", "f.yaml").unwrap_err();
        assert_eq!((e.0[0].line, e.0[0].column), (1, 2), "{e}");
    }

    #[test]
    fn a_file_that_is_not_utf8_is_located_at_its_first_bad_byte() {
        let dir = std::env::temp_dir().join(format!("tandem-utf8-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("latin1.yaml");
        // `é` in Latin-1 (0xe9) after `café` is on line 3, column 10.
        std::fs::write(&path, b"services:\n  - name: a\n    # caf\xe9 au lait\n").unwrap();
        let e = load(&path).unwrap_err();
        assert_eq!(e.0.len(), 1);
        assert_eq!((e.0[0].line, e.0[0].column), (3, 10));
        assert!(
            e.to_string()
                .contains("latin1.yaml:3:10: not UTF-8: byte 0xe9"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn error(line: usize, path: &str) -> ConfigError {
        ConfigError {
            origin: "tandem.yaml".to_owned(),
            line,
            column: if line > 0 { 3 } else { 0 },
            path: path.to_owned(),
            message: "msg".to_owned(),
        }
    }

    #[test]
    fn errors_display_as_origin_line_column_path_message() {
        assert_eq!(
            error(2, "services[a].listen").to_string(),
            "tandem.yaml:2:3: services[a].listen: msg"
        );
        assert_eq!(error(2, "").to_string(), "tandem.yaml:2:3: msg");
        assert_eq!(error(0, "").to_string(), "tandem.yaml: msg");
        let all = ConfigErrors(vec![error(1, "a"), error(2, "b")]);
        assert_eq!(
            all.to_string(),
            "tandem.yaml:1:3: a: msg\ntandem.yaml:2:3: b: msg"
        );
    }

    #[test]
    fn load_names_a_file_it_cannot_read() {
        let e = load(Path::new("/nonexistent/tandem.yaml")).unwrap_err();
        assert_eq!(e.0.len(), 1);
        assert!(
            e.to_string()
                .starts_with("/nonexistent/tandem.yaml: cannot read: "),
            "{e}"
        );
    }

    #[test]
    fn a_byte_order_mark_is_ignored() {
        let text = "\u{feff}services:\n  - { name: a, listen: 127.0.0.1:1, backends: [{ address: 127.0.0.1:2 }] }\n";
        assert_eq!(parse(text, "t.yaml").unwrap().services.len(), 1);
    }
}
