//! The fuzz harness of `tandem migrate`'s keepalived.conf and haproxy.cfg
//! parsers and their conversion, shared by the bolero tests below (bounded,
//! in `cargo test`) and the cargo-fuzz target `migrate` (long runs, see
//! docs/fuzzing.md). Compiled only for tests and with the `fuzzing` feature.
//!
//! Input: a selector byte, then the text (keepalived.conf, haproxy.cfg, or
//! both separated by a NUL byte). Checked beyond "no panic": a refusal names
//! the file and a line of it; whatever the conversion writes goes through the
//! config loader without a panic.

use crate::migrate::{self, haproxy, keepalived, Refusal};

/// Runs one input; panics on a broken property.
pub fn migrate(input: &[u8]) {
    let Some((&selector, bytes)) = input.split_first() else {
        return;
    };
    // `migrate` reads files as UTF-8 and stops at the first that is not.
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let (k_text, h_text) = match selector % 3 {
        0 => (Some(text), None),
        1 => (None, Some(text)),
        _ => match text.split_once('\0') {
            Some((k, h)) => (Some(k), Some(h)),
            None => (Some(text), Some(text)),
        },
    };
    let k = k_text.map(|t| (t, keepalived::parse(t, "keepalived.conf")));
    let h = h_text.map(|t| (t, haproxy::parse(t, "haproxy.cfg")));
    let mut parsed_k = None;
    let mut parsed_h = None;
    if let Some((t, r)) = &k {
        match r {
            Ok(c) => parsed_k = Some(c),
            Err(refusals) => check_refusals(refusals, "keepalived.conf", t),
        }
    }
    if let Some((t, r)) = &h {
        match r {
            Ok(c) => parsed_h = Some(c),
            Err(refusals) => check_refusals(refusals, "haproxy.cfg", t),
        }
    }
    if parsed_k.is_none() && parsed_h.is_none() {
        return;
    }
    if let Ok(converted) = migrate::convert(parsed_k, parsed_h) {
        let _ = tandem_config::parse(&converted.yaml, "<migrated>");
    }
}

fn check_refusals(refusals: &[Refusal], file: &str, text: &str) {
    assert!(!refusals.is_empty(), "refused without a reason");
    let lines = text.lines().count().max(1);
    for r in refusals {
        assert_eq!(r.file, file);
        assert!(!r.message.is_empty());
        assert!(
            r.line >= 1 && r.line <= lines,
            "{r} is not a line of the file"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::migrate;

    const KEEPALIVED: &str = include_str!("../tests/migrate/keepalived.conf");
    const HAPROXY: &str = include_str!("../tests/migrate/haproxy.cfg");
    const HAPROXY_OLD: &str = include_str!("../tests/migrate/haproxy-old.cfg");

    #[test]
    fn random_text_keeps_every_property() {
        bolero::check!()
            .with_iterations(2_000)
            .for_each(|input: &[u8]| migrate(input));
    }

    /// The kubeadm guide's files with bytes overwritten and a slice cut out.
    #[test]
    fn mutated_real_files_keep_every_property() {
        bolero::check!()
            .with_type::<(u8, Vec<(u16, u8)>, (u16, u8))>()
            .with_iterations(2_000)
            .for_each(|(which, edits, (cut_at, cut_len))| {
                let text = match which % 3 {
                    0 => KEEPALIVED.to_owned(),
                    1 => HAPROXY.to_owned(),
                    _ => format!("{KEEPALIVED}\0{HAPROXY_OLD}"),
                };
                let mut input = vec![*which];
                input.extend_from_slice(text.as_bytes());
                for &(at, byte) in edits.iter().take(3) {
                    let at = 1 + usize::from(at) % (input.len() - 1);
                    input[at] = byte;
                }
                let at = 1 + usize::from(*cut_at) % (input.len() - 1);
                let end = (at + usize::from(*cut_len)).min(input.len());
                input.drain(at..end);
                migrate(&input);
            });
    }
}
