//! Health checks: which keys fit which type of check, and their values.

use std::num::NonZeroU32;
use std::path::PathBuf;

use super::*;

const HEALTH_KINDS: &[(&str, HealthKind)] = &[
    ("none", HealthKind::None),
    ("tcp", HealthKind::Tcp),
    ("http", HealthKind::Http),
    ("https", HealthKind::Https),
    ("udp", HealthKind::Udp),
];
const INITIAL_STATES: &[(&str, InitialState)] =
    &[("up", InitialState::Up), ("down", InitialState::Down)];

/// The health of a service without any `health` section.
pub(super) fn no_health() -> Health {
    Health {
        kind: default::HEALTH_KIND,
        interval: default::HEALTH_INTERVAL,
        timeout: default::HEALTH_TIMEOUT,
        rise: NonZeroU32::new(default::HEALTH_RISE).unwrap_or(NonZeroU32::MIN),
        fall: NonZeroU32::new(default::HEALTH_FALL).unwrap_or(NonZeroU32::MIN),
        initial: default::initial_state(default::HEALTH_KIND),
        port: None,
        path: default::HTTP_PATH.to_owned(),
        expect_status: vec![default::EXPECT_STATUS],
        expect_body: None,
        host: None,
        send: None,
        expect: None,
        tls: Tls {
            verify: default::TLS_VERIFY,
            ca_file: None,
            server_name: None,
            cert_file: None,
            key_file: None,
        },
        eject_after: None,
    }
}

const PROBED: &[HealthKind] = &[
    HealthKind::Tcp,
    HealthKind::Http,
    HealthKind::Https,
    HealthKind::Udp,
];
const HTTP: &[HealthKind] = &[HealthKind::Http, HealthKind::Https];
const HTTPS: &[HealthKind] = &[HealthKind::Https];
const UDP: &[HealthKind] = &[HealthKind::Udp];

impl HealthKind {
    /// The `type` as written in the config (`https`).
    pub fn as_str(self) -> &'static str {
        name_of(HEALTH_KINDS, self)
    }
}

impl Health {
    /// The settings of a `health` section of type `kind` that says nothing
    /// else: every default resolved as for a file.
    pub fn defaults(kind: HealthKind) -> Health {
        Health {
            kind,
            initial: default::initial_state(kind),
            ..no_health()
        }
    }
}

pub(super) fn health(r: &mut Report, at: &FieldPath, raw: &file::Health) -> Health {
    let base = no_health();
    let kind = match &raw.kind {
        Some(k) => values::word(r, &at.key("type"), k, HEALTH_KINDS),
        None => {
            r.value(
                &at.key("type"),
                "missing; one of none, tcp, http, https, udp",
            );
            None
        }
    };

    // Keys that mean nothing for this type of check are mistakes, not noise:
    // `path` under `type: tcp` was surely meant as an HTTP check.
    if let Some(kind) = kind {
        let keys: [(&str, bool, &[HealthKind]); 13] = [
            ("interval", raw.interval.is_some(), PROBED),
            ("timeout", raw.timeout.is_some(), PROBED),
            ("rise", raw.rise.is_some(), PROBED),
            ("fall", raw.fall.is_some(), PROBED),
            ("port", raw.port.is_some(), PROBED),
            ("eject_after", raw.eject_after.is_some(), PROBED),
            ("path", raw.path.is_some(), HTTP),
            ("expect_status", raw.expect_status.is_some(), HTTP),
            ("expect_body", raw.expect_body.is_some(), HTTP),
            ("host", raw.host.is_some(), HTTP),
            ("tls", raw.tls.is_some(), HTTPS),
            ("send", raw.send.is_some(), UDP),
            ("expect", raw.expect.is_some(), UDP),
        ];
        for (key, present, applies) in keys {
            if present && !applies.contains(&kind) {
                let msg = if kind == HealthKind::None {
                    "has no effect with `type: none`".to_owned()
                } else {
                    let names: Vec<String> = applies
                        .iter()
                        .map(|k| format!("`{}`", k.as_str()))
                        .collect();
                    format!(
                        "only applies to {} checks, not `{}`",
                        names.join(" and "),
                        kind.as_str()
                    )
                };
                r.key(&at.key(key), msg);
            }
        }
    }
    let kind_or_none = kind.unwrap_or(HealthKind::None);

    let interval = raw
        .interval
        .as_ref()
        .and_then(|d| values::positive_duration(r, &at.key("interval"), d));
    let timeout = raw
        .timeout
        .as_ref()
        .and_then(|d| values::positive_duration(r, &at.key("timeout"), d));
    let interval_or = interval.unwrap_or(base.interval);
    let timeout_or = timeout.unwrap_or(base.timeout);
    let interval_ok = interval.is_some() || raw.interval.is_none();
    let timeout_ok = timeout.is_some() || raw.timeout.is_none();
    if interval_ok && timeout_ok && timeout_or > interval_or {
        if raw.timeout.is_some() {
            let msg = format!(
                "must not exceed the interval ({}), got {}",
                show(interval_or),
                show(timeout_or)
            );
            r.value(&at.key("timeout"), msg);
        } else {
            let msg = format!(
                "must not be shorter than the timeout ({} by default), got {}; set `timeout` too",
                show(timeout_or),
                show(interval_or)
            );
            r.value(&at.key("interval"), msg);
        }
    }
    let count = |r: &mut Report, key: &str, v: Option<i64>, base: NonZeroU32| {
        v.and_then(|n| values::at_least::<u32>(r, &at.key(key), n, 1))
            .and_then(NonZeroU32::new)
            .unwrap_or(base)
    };
    let rise = count(r, "rise", raw.rise, base.rise);
    let fall = count(r, "fall", raw.fall, base.fall);
    let eject_after = raw.eject_after.and_then(|n| {
        values::at_least::<u32>(r, &at.key("eject_after"), n, 1).and_then(NonZeroU32::new)
    });

    let initial = match &raw.initial {
        Some(w) => {
            let v = values::word(r, &at.key("initial"), w, INITIAL_STATES);
            if v == Some(InitialState::Down) && kind == Some(HealthKind::None) {
                r.value(
                    &at.key("initial"),
                    "`down` needs an active check to bring backends up; with `type: none` they start up",
                );
            }
            v.unwrap_or_else(|| default::initial_state(kind_or_none))
        }
        None => default::initial_state(kind_or_none),
    };
    let port = raw
        .port
        .and_then(|p| values::between::<u16>(r, &at.key("port"), p, 1, 65535));
    let path = match &raw.path {
        Some(p) if !p.starts_with('/') => {
            r.value(&at.key("path"), format!("must start with `/`, got `{p}`"));
            base.path.clone()
        }
        Some(p) => p.clone(),
        None => base.path.clone(),
    };
    let expect_status = match &raw.expect_status {
        Some(list) if list.is_empty() => {
            r.value(
                &at.key("expect_status"),
                "must list at least one status code (e.g. [200])",
            );
            base.expect_status.clone()
        }
        Some(list) => {
            let list_at = at.key("expect_status");
            list.iter()
                .enumerate()
                .filter_map(|(i, code)| {
                    values::between::<u16>(r, &list_at.index(i), *code, 100, 599)
                })
                .collect()
        }
        None => base.expect_status.clone(),
    };
    let text = |r: &mut Report, key: &str, v: &Option<String>| {
        v.as_ref()
            .and_then(|s| values::non_empty(r, &at.key(key), s))
    };
    let expect_body = text(r, "expect_body", &raw.expect_body);
    let host = text(r, "host", &raw.host);
    let expect = text(r, "expect", &raw.expect);
    // An empty UDP payload is a valid probe.
    let send = raw.send.clone();
    let tls = match &raw.tls {
        Some(t) => tls(r, &at.key("tls"), t),
        None => base.tls.clone(),
    };

    Health {
        kind: kind_or_none,
        interval: interval_or,
        timeout: timeout_or,
        rise,
        fall,
        initial,
        port,
        path,
        expect_status,
        expect_body,
        host,
        send,
        expect,
        tls,
        eject_after,
    }
}

fn tls(r: &mut Report, at: &FieldPath, raw: &file::Tls) -> Tls {
    let verify = raw.verify.unwrap_or(default::TLS_VERIFY);
    let mut file = |key: &str, v: &Option<String>| {
        v.as_ref()
            .and_then(|s| values::non_empty(r, &at.key(key), s))
            .map(PathBuf::from)
    };
    let ca_file = file("ca_file", &raw.ca_file);
    let cert_file = file("cert_file", &raw.cert_file);
    let key_file = file("key_file", &raw.key_file);
    let server_name = raw
        .server_name
        .as_ref()
        .and_then(|s| values::non_empty(r, &at.key("server_name"), s));
    if !verify && raw.ca_file.is_some() {
        r.key(&at.key("ca_file"), "has no effect with `verify: false`");
    }
    match (raw.cert_file.is_some(), raw.key_file.is_some()) {
        (true, false) => r.value(
            &at.key("key_file"),
            "missing; `cert_file` and `key_file` go together",
        ),
        (false, true) => r.value(
            &at.key("cert_file"),
            "missing; `cert_file` and `key_file` go together",
        ),
        _ => {}
    }
    Tls {
        verify,
        ca_file,
        server_name,
        cert_file,
        key_file,
    }
}
