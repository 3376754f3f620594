//! Single values as written, judged: durations, numbers in a range, enum
//! words, addresses, prefixes, names. Each parser reports its own error and
//! returns `None` for a value that is wrong, so the caller can go on and
//! find the next problem.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::file::DurationText;
use crate::model::IpPrefix;
use crate::path::{is_valid_name, FieldPath};
use crate::report::Report;
use crate::suggest;

pub(crate) const ADDRESS_EXAMPLE: &str = "e.g. 198.18.0.100:8443 or [2001:db8::1]:8443";

/// A humantime duration (`3s`, `250ms`, `1h30m`); bare numbers are refused
/// with the fix spelt out.
pub(crate) fn duration(r: &mut Report, at: &FieldPath, d: &DurationText) -> Option<Duration> {
    let text = d.text.trim();
    if d.number || text.parse::<f64>().is_ok() {
        r.value(
            at,
            format!("`{text}` has no unit; write a duration such as `{text}s` or `{text}ms`"),
        );
        return None;
    }
    match humantime::parse_duration(text) {
        Ok(v) => Some(v),
        Err(_) => {
            r.value(
                at,
                format!("`{}` is not a duration (e.g. 3s, 250ms, 1h30m)", d.text),
            );
            None
        }
    }
}

/// A duration that must be longer than zero.
pub(crate) fn positive_duration(
    r: &mut Report,
    at: &FieldPath,
    d: &DurationText,
) -> Option<Duration> {
    let v = duration(r, at, d)?;
    if v.is_zero() {
        r.value(at, format!("must be longer than 0, got `{}`", d.text));
        return None;
    }
    Some(v)
}

/// An integer in `lo..=hi`.
pub(crate) fn between<T: TryFrom<i64>>(
    r: &mut Report,
    at: &FieldPath,
    v: i64,
    lo: i64,
    hi: i64,
) -> Option<T> {
    if v < lo || v > hi {
        r.value(at, format!("must be between {lo} and {hi}, got {v}"));
        return None;
    }
    T::try_from(v).ok()
}

/// An integer of at least `lo` that fits `T` (the upper limit is the type's,
/// not worth a mention).
pub(crate) fn at_least<T: TryFrom<i64>>(
    r: &mut Report,
    at: &FieldPath,
    v: i64,
    lo: i64,
) -> Option<T> {
    if v < lo {
        r.value(at, format!("must be at least {lo}, got {v}"));
        return None;
    }
    match T::try_from(v) {
        Ok(t) => Some(t),
        Err(_) => {
            r.value(at, format!("`{v}` is too large"));
            None
        }
    }
}

/// One of a fixed set of words.
pub(crate) fn word<T: Copy>(
    r: &mut Report,
    at: &FieldPath,
    text: &str,
    table: &[(&str, T)],
) -> Option<T> {
    if let Some((_, v)) = table.iter().find(|(w, _)| *w == text) {
        return Some(*v);
    }
    let valid: Vec<&str> = table.iter().map(|(w, _)| *w).collect();
    r.value(at, suggest::unknown("value", text, &valid));
    None
}

/// A name for a service, instance or backend.
pub(crate) fn name(r: &mut Report, at: &FieldPath, text: &str) -> Option<String> {
    if is_valid_name(text) {
        return Some(text.to_owned());
    }
    let why = if text.is_empty() {
        "must not be empty".to_owned()
    } else {
        format!("`{text}` is not a valid name: use letters, digits, `.`, `_` and `-`")
    };
    r.value(at, why);
    None
}

/// A string that must say something (a path, a command, a host name).
pub(crate) fn non_empty(r: &mut Report, at: &FieldPath, text: &str) -> Option<String> {
    if text.trim().is_empty() {
        r.value(at, "must not be empty");
        return None;
    }
    Some(text.to_owned())
}

/// `ip:port`, IPv6 in brackets, port not 0.
pub(crate) fn socket_addr(r: &mut Report, at: &FieldPath, text: &str) -> Option<SocketAddr> {
    let text = text.trim();
    match text.parse::<SocketAddr>() {
        Ok(a) if a.port() == 0 => {
            r.value(at, format!("`{text}`: port must be between 1 and 65535"));
            None
        }
        Ok(a) => Some(a),
        Err(_) => {
            r.value(at, socket_addr_problem(text));
            None
        }
    }
}

fn socket_addr_problem(text: &str) -> String {
    match text.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => return format!("`{text}` has no port (e.g. {text}:8443)"),
        Ok(IpAddr::V6(_)) => {
            return format!("`{text}` has no port; IPv6 goes in brackets (e.g. [{text}]:8443)")
        }
        Err(_) => {}
    }
    if let Some((host, port)) = text.rsplit_once(':') {
        let looks_like_host = !host.contains(':')
            && host.chars().any(|c| c.is_ascii_alphabetic())
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'));
        if looks_like_host && port.parse::<u16>().is_ok() {
            return format!(
                "`{text}` names a host; use an IP address (host names are not resolved)"
            );
        }
    }
    format!("`{text}` is not an address:port ({ADDRESS_EXAMPLE})")
}

/// An IP address without port.
pub(crate) fn ip_addr(r: &mut Report, at: &FieldPath, text: &str) -> Option<IpAddr> {
    let text = text.trim();
    match text.parse::<IpAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            r.value(
                at,
                format!("`{text}` is not an IP address (e.g. 198.18.0.12 or 2001:db8::12)"),
            );
            None
        }
    }
}

/// `address/prefix`; the prefix defaults to the whole address (/32, /128).
pub(crate) fn ip_prefix(r: &mut Report, at: &FieldPath, text: &str) -> Option<IpPrefix> {
    let text = text.trim();
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let Ok(address) = addr.parse::<IpAddr>() else {
        r.value(
            at,
            format!("`{text}` is not an address/prefix (e.g. 198.18.0.100/24 or 2001:db8::100/64)"),
        );
        return None;
    };
    let max: u8 = if address.is_ipv4() { 32 } else { 128 };
    let prefix_len = match len {
        None => max,
        Some(l) => match l.parse::<u8>() {
            Ok(n) if (1..=max).contains(&n) => n,
            _ => {
                let family = if address.is_ipv4() { "IPv4" } else { "IPv6" };
                r.value(
                    at,
                    format!("`{text}`: the prefix length must be between 1 and {max} for {family}"),
                );
                return None;
            }
        },
    };
    Some(IpPrefix {
        address,
        prefix_len,
    })
}

/// How a duration reads in a message.
pub(crate) fn show(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::locate::Document;

    fn run<T>(f: impl FnOnce(&mut Report, &FieldPath) -> Option<T>) -> Result<T, String> {
        let doc = Document::default();
        let mut r = Report::new("t.yaml", &doc);
        let v = f(&mut r, &FieldPath::root().key("x"));
        let errors = r.finish();
        match (v, errors.first()) {
            (Some(v), None) => Ok(v),
            (_, Some(e)) => Err(e.message.clone()),
            (None, None) => Err("no value and no error".to_owned()),
        }
    }

    fn dur(text: &str, number: bool) -> DurationText {
        DurationText {
            text: text.to_owned(),
            number,
        }
    }

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(
            run(|r, at| duration(r, at, &dur("250ms", false))),
            Ok(Duration::from_millis(250))
        );
        assert_eq!(
            run(|r, at| duration(r, at, &dur("1h30m", false))),
            Ok(Duration::from_secs(5400))
        );
        assert_eq!(
            run(|r, at| duration(r, at, &dur("3", true))),
            Err("`3` has no unit; write a duration such as `3s` or `3ms`".to_owned())
        );
        assert_eq!(
            run(|r, at| duration(r, at, &dur("3", false))),
            Err("`3` has no unit; write a duration such as `3s` or `3ms`".to_owned())
        );
        assert_eq!(
            run(|r, at| duration(r, at, &dur("three seconds", false))),
            Err("`three seconds` is not a duration (e.g. 3s, 250ms, 1h30m)".to_owned())
        );
        assert_eq!(
            run(|r, at| positive_duration(r, at, &dur("0s", false))),
            Err("must be longer than 0, got `0s`".to_owned())
        );
    }

    #[test]
    fn integers_are_checked_against_their_range() {
        assert_eq!(run(|r, at| between::<u32>(r, at, 256, 1, 256)), Ok(256));
        assert_eq!(
            run(|r, at| between::<u32>(r, at, 0, 1, 256)),
            Err("must be between 1 and 256, got 0".to_owned())
        );
        assert_eq!(
            run(|r, at| at_least::<u32>(r, at, -1, 0)),
            Err("must be at least 0, got -1".to_owned())
        );
        assert_eq!(
            run(|r, at| at_least::<u32>(r, at, 1 << 40, 1)),
            Err("`1099511627776` is too large".to_owned())
        );
    }

    #[test]
    fn words_suggest_the_nearest_valid_one() {
        let table = [("splice", 1), ("copy", 2)];
        assert_eq!(run(|r, at| word(r, at, "copy", &table)), Ok(2));
        assert_eq!(
            run(|r, at| word(r, at, "splic", &table)),
            Err("unknown value `splic`, did you mean `splice`? (valid: splice, copy)".to_owned())
        );
    }

    #[test]
    fn socket_addresses_explain_what_is_wrong() {
        assert_eq!(
            run(|r, at| socket_addr(r, at, "[::1]:8443")),
            Ok("[::1]:8443".parse().unwrap())
        );
        let cases = [
            ("198.18.0.300:80", "`198.18.0.300:80` is not an address:port (e.g. 198.18.0.100:8443 or [2001:db8::1]:8443)"),
            ("198.18.0.1:0", "`198.18.0.1:0`: port must be between 1 and 65535"),
            ("198.18.0.1", "`198.18.0.1` has no port (e.g. 198.18.0.1:8443)"),
            ("2001:db8::1", "`2001:db8::1` has no port; IPv6 goes in brackets (e.g. [2001:db8::1]:8443)"),
            ("api.example:6443", "`api.example:6443` names a host; use an IP address (host names are not resolved)"),
            ("198.18.0.1:70000", "`198.18.0.1:70000` is not an address:port (e.g. 198.18.0.100:8443 or [2001:db8::1]:8443)"),
        ];
        for (text, want) in cases {
            assert_eq!(
                run(|r, at| socket_addr(r, at, text)),
                Err(want.to_owned()),
                "{text}"
            );
        }
    }

    #[test]
    fn prefixes_default_to_the_whole_address() {
        let p = run(|r, at| ip_prefix(r, at, "198.18.0.100")).unwrap();
        assert_eq!(p.prefix_len, 32);
        let p = run(|r, at| ip_prefix(r, at, "2001:db8::1/64")).unwrap();
        assert_eq!(p.prefix_len, 64);
        assert_eq!(
            run(|r, at| ip_prefix(r, at, "198.18.0.100/33")),
            Err(
                "`198.18.0.100/33`: the prefix length must be between 1 and 32 for IPv4".to_owned()
            )
        );
        assert!(run(|r, at| ip_prefix(r, at, "vip/24")).is_err());
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(run(|r, at| name(r, at, "api-1")), Ok("api-1".to_owned()));
        assert_eq!(
            run(|r, at| name(r, at, "api 1")),
            Err("`api 1` is not a valid name: use letters, digits, `.`, `_` and `-`".to_owned())
        );
    }
}
