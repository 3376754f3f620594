//! Structural errors: what is wrong before any value can be judged. YAML
//! syntax, an empty file, more than one document, duplicate keys, unknown
//! keys and wrong types.
//!
//! serde stops at the first problem, so at most one of its errors reaches the
//! user; this module rewrites it into our format. serde_yaml 0.9 gives no
//! structured access to its errors, only `location()` and a message of the
//! form `path: message at line L column C`; the message is taken apart here
//! and nowhere else, and the corpus tests pin the result.

use crate::locate::{Document, Kind, Pos, Seg};
use crate::path::FieldPath;
use crate::suggest;
use crate::ConfigError;

/// The top-level sections, for messages about the file as a whole.
const SECTIONS: &str = "admin, runtime, defaults, services, vrrp, routing";

/// Checks the positioned tree for problems serde would report badly or not
/// at all. Returns every problem found (none means: go on to serde).
pub(crate) fn check_document(doc: &Document, origin: &str) -> Vec<ConfigError> {
    if doc.is_empty() {
        return vec![ConfigError::at(
            origin,
            Pos::START,
            "",
            format!("the file is empty; a configuration is a mapping of sections ({SECTIONS})"),
        )];
    }
    if let Some(second) = doc.starts.get(1) {
        return vec![ConfigError::at(
            origin,
            *second,
            "",
            "a second YAML document (`---`) starts here; a configuration is one document"
                .to_owned(),
        )];
    }
    if let Some(root) = &doc.root {
        let got = match &root.kind {
            Kind::Map(_) => None,
            Kind::Scalar(s) => Some(format!("`{s}`")),
            Kind::Seq(_) => Some("a list".to_owned()),
        };
        if let Some(got) = got {
            return vec![ConfigError::at(
                origin,
                root.pos,
                "",
                format!("a configuration is a mapping of sections ({SECTIONS}), got {got}"),
            )];
        }
    }
    doc.duplicate_keys()
        .into_iter()
        .map(|dup| {
            let path = label(&dup.path, doc);
            let key = match dup.path.last() {
                Some(Seg::Key(k)) => k.as_str(),
                _ => "?",
            };
            ConfigError::at(
                origin,
                dup.second,
                path.display(),
                format!("duplicate key `{key}` (first at line {})", dup.first.line),
            )
        })
        .collect()
}

/// A YAML syntax error found by yaml-rust2 (when libyaml accepted the file).
pub(crate) fn from_scan(err: &yaml_rust2::ScanError, text: &str, origin: &str) -> ConfigError {
    let m = err.marker();
    let pos = Pos {
        line: m.line(),
        column: m.col() + 1,
    };
    let msg = format!(
        "invalid YAML: {}{}",
        err.info(),
        hint(text, pos.line, err.info())
    );
    ConfigError::at(origin, pos, "", msg)
}

/// serde_yaml's error, in our words.
pub(crate) fn from_serde(
    err: &serde_yaml::Error,
    doc: Option<&Document>,
    text: &str,
    origin: &str,
) -> ConfigError {
    let pos = err.location().map_or(Pos::START, |l| Pos {
        line: l.line(),
        column: l.column(),
    });
    let mut full = err.to_string();
    // The position is ours to print; remove serde_yaml's copy of it.
    let at = format!(" at line {} column {}", pos.line, pos.column);
    if let Some(i) = full.find(&at) {
        full.replace_range(i..i + at.len(), "");
    }
    let (serde_path, msg) = match full.split_once(": ") {
        Some((head, rest)) if is_serde_path(head) => (head, rest),
        _ => ("", full.as_str()),
    };
    let segs = parse_serde_path(serde_path);
    let empty = Document::default();
    let doc = doc.unwrap_or(&empty);
    let path = label(&segs, doc);

    if let Some(rest) = msg.strip_prefix("unknown field `") {
        let (field, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let valid = backticked(expected);
        let message = if field == "<<" {
            "YAML merge keys (`<<`) are not supported; write the keys out, or put shared \
             service settings in `defaults`"
                .to_owned()
        } else {
            suggest::unknown("field", field, &valid)
        };
        return ConfigError::at(origin, pos, path.key(field).display(), message);
    }
    if let Some(rest) = msg.strip_prefix("unknown variant `") {
        let (word, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let message = suggest::unknown("value", word, &backticked(expected));
        return ConfigError::at(origin, pos, path.display(), message);
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = msg.strip_prefix(prefix) {
            if let Some((got, expected)) = rest.rsplit_once(", expected ") {
                let message = format!(
                    "expected {}, got {}{}",
                    expected_words(expected),
                    got_words(got),
                    quoted_hint(got).unwrap_or_else(|| hint(text, pos.line, ""))
                );
                return ConfigError::at(origin, pos, path.display(), message);
            }
        }
    }
    if let Some(rest) = msg.strip_prefix("missing field `") {
        let field = rest.trim_end_matches('`');
        return ConfigError::at(origin, pos, path.key(field).display(), "missing".to_owned());
    }
    if let Some(rest) = msg.strip_prefix("duplicate field `") {
        let field = rest.trim_end_matches('`');
        let message = format!("duplicate key `{field}`");
        return ConfigError::at(origin, pos, path.key(field).display(), message);
    }
    if msg.starts_with("invalid length") {
        return ConfigError::at(origin, pos, path.display(), msg.to_owned());
    }
    // Everything else comes from the YAML parser itself: libyaml says
    // `problem, context at line L column C`.
    let msg = match msg.split_once(", while ") {
        Some((problem, context)) => {
            let context = context.replacen(" at line ", " that started at line ", 1);
            format!("{problem} while {context}")
        }
        None => msg.to_owned(),
    };
    let message = format!("invalid YAML: {msg}{}", hint(text, pos.line, &msg));
    ConfigError::at(origin, pos, path.display(), message)
}

/// Our display path for a structural path: services and VRRP instances by
/// name (read from the tree) when they have a valid one.
pub(crate) fn label(segs: &[Seg], doc: &Document) -> FieldPath {
    let mut path = FieldPath::root();
    for (i, seg) in segs.iter().enumerate() {
        path = match seg {
            Seg::Key(k) => path.key(k),
            Seg::Index(n) => {
                let parent = &segs[..i];
                let named = matches!(
                    parent,
                    [Seg::Key(s)] if s == "services"
                ) || matches!(
                    parent,
                    [Seg::Key(v), Seg::Key(s)] if v == "vrrp" && s == "instances"
                );
                let name = if named {
                    let mut name_path = segs[..=i].to_vec();
                    name_path.push(Seg::Key("name".to_owned()));
                    doc.scalar(&name_path)
                } else {
                    None
                };
                path.item(*n, name)
            }
        };
    }
    path
}

/// serde_yaml paths look like `services[0].backends[1].tls` (`.` for the root).
fn is_serde_path(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']' | '?'))
}

fn parse_serde_path(s: &str) -> Vec<Seg> {
    let mut segs = Vec::new();
    for part in s.split('.').filter(|p| !p.is_empty() && *p != "?") {
        let mut rest = part;
        if let Some(i) = rest.find('[') {
            if i > 0 {
                segs.push(Seg::Key(rest[..i].to_owned()));
            }
            rest = &rest[i..];
            while let Some(inner) = rest.strip_prefix('[') {
                let Some((n, after)) = inner.split_once(']') else {
                    break;
                };
                if let Ok(n) = n.parse() {
                    segs.push(Seg::Index(n));
                }
                rest = after;
            }
        } else {
            segs.push(Seg::Key(rest.to_owned()));
        }
    }
    segs
}

/// The words between backticks: serde's list of expected names.
fn backticked(s: &str) -> Vec<&str> {
    s.split('`').skip(1).step_by(2).collect()
}

/// serde's "expected" phrase (`i64`, `a boolean`, `struct Service`) for people.
fn expected_words(expected: &str) -> String {
    match expected {
        "i8" | "i16" | "i32" | "i64" | "i128" | "u8" | "u16" | "u32" | "u64" | "u128"
        | "an integer" => "an integer".to_owned(),
        "a boolean" => "`true` or `false`".to_owned(),
        "a sequence" => "a list".to_owned(),
        "a map" | "option" => "a mapping".to_owned(),
        "a duration such as 3s" => "a duration such as `3s`".to_owned(),
        "field identifier" => "a key name".to_owned(),
        e if e.starts_with("struct ") => "a mapping of keys".to_owned(),
        e => e.to_owned(),
    }
}

/// serde's description of what it found (`string "x"`, `integer `3``).
fn got_words(got: &str) -> String {
    if let Some(s) = got.strip_prefix("string \"") {
        let s = s.strip_suffix('"').unwrap_or(s);
        return format!("`{}`", s.replace("\\\"", "\"").replace("\\\\", "\\"));
    }
    for prefix in ["integer ", "floating point ", "boolean "] {
        if let Some(v) = got.strip_prefix(prefix) {
            // serde names the width of big integers: "`1` as u128".
            let v = v.split(" as ").next().unwrap_or(v);
            return v.to_owned();
        }
    }
    match got {
        "unit value" => "an empty value".to_owned(),
        "sequence" => "a list".to_owned(),
        "map" => "a mapping".to_owned(),
        g => g.to_owned(),
    }
}

/// `access_log: "true"` is a string, not a boolean: say why `true` was refused.
fn quoted_hint(got: &str) -> Option<String> {
    let s = got.strip_prefix("string \"")?.strip_suffix('"')?;
    let scalar = s == "true" || s == "false" || s.parse::<f64>().is_ok();
    scalar.then(|| " in quotes (a string); write it without quotes".to_owned())
}

/// A plain-words hint for the YAML mistakes people make in this file.
fn hint(text: &str, line: usize, msg: &str) -> String {
    if msg.contains("tab") {
        return " (indent with spaces: YAML does not allow tabs)".to_owned();
    }
    let line_text = line
        .checked_sub(1)
        .and_then(|i| text.lines().nth(i))
        .unwrap_or("");
    if has_bare_ipv6_with_port(line_text) {
        return " (quote an IPv6 address with a port: \"[2001:db8::1]:8443\")".to_owned();
    }
    String::new()
}

/// `[2001:db8::1]:8443` written without quotes: YAML reads `[` as a list.
fn has_bare_ipv6_with_port(line: &str) -> bool {
    let mut rest = line;
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        let Some(close) = after.find(']') else {
            return false;
        };
        let inside = &after[..close];
        let tail = &after[close + 1..];
        if inside.contains(':')
            && inside
                .chars()
                .all(|c| c.is_ascii_hexdigit() || matches!(c, ':' | '.'))
            && tail.starts_with(':')
            && tail[1..].starts_with(|c: char| c.is_ascii_digit())
        {
            return true;
        }
        rest = after;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_paths_become_segments() {
        assert_eq!(
            parse_serde_path("services[0].backends[12].tls"),
            vec![
                Seg::Key("services".into()),
                Seg::Index(0),
                Seg::Key("backends".into()),
                Seg::Index(12),
                Seg::Key("tls".into()),
            ]
        );
        assert!(parse_serde_path("").is_empty());
        assert!(is_serde_path("services[0].listen"));
        assert!(!is_serde_path("unknown field `x`, expected `y`"));
    }

    #[test]
    fn serde_words_become_plain_words() {
        assert_eq!(expected_words("i64"), "an integer");
        assert_eq!(expected_words("struct Backend"), "a mapping of keys");
        assert_eq!(got_words("string \"x\""), "`x`");
        assert_eq!(got_words("integer `3`"), "`3`");
        assert_eq!(
            got_words("integer `99999999999999999999` as u128"),
            "`99999999999999999999`"
        );
        assert_eq!(
            quoted_hint("string \"true\"").unwrap(),
            " in quotes (a string); write it without quotes"
        );
        assert_eq!(quoted_hint("string \"yes\""), None);
        assert_eq!(got_words("sequence"), "a list");
        assert_eq!(backticked("expected one of `a`, `b`"), vec!["a", "b"]);
    }

    #[test]
    fn unquoted_ipv6_with_port_is_recognised() {
        assert!(has_bare_ipv6_with_port("    listen: [::1]:8443"));
        assert!(has_bare_ipv6_with_port("  - address: [2001:db8::1]:80"));
        assert!(!has_bare_ipv6_with_port("    listen: [::1]"));
        assert!(!has_bare_ipv6_with_port(
            "    virtual_ips: [198.18.0.100/24]"
        ));
    }

    #[test]
    fn service_items_are_labelled_by_name_from_the_tree() {
        let doc = Document::parse("services:\n  - name: api\n  - name: bad name\n").unwrap();
        let segs = parse_serde_path("services[0].backends[1]");
        assert_eq!(label(&segs, &doc).display(), "services[api].backends[1]");
        let segs = parse_serde_path("services[1]");
        assert_eq!(label(&segs, &doc).display(), "services[1]");
    }
}
