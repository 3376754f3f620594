//! The file as written: serde structs that mirror the YAML key for key.
//!
//! Every struct denies unknown keys and every field is an `Option`, so serde
//! only rejects what is structurally wrong (an unknown key, a list where a
//! number belongs). Values with rules of their own (addresses, durations,
//! names, enum words, ranges) are kept as written and judged in
//! [`crate::validate`], which reports all such problems at once, with our
//! wording. Integers are `i64` so that `-1` reaches validation as a number
//! out of range rather than a type error.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct File {
    /// Present (even empty, as `admin:`) enables the admin endpoint.
    #[serde(default, deserialize_with = "present")]
    pub admin: Option<Admin>,
    pub runtime: Option<Runtime>,
    pub defaults: Option<Defaults>,
    pub services: Option<Vec<Service>>,
    pub vrrp: Option<Vrrp>,
    pub routing: Option<Routing>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Admin {
    pub listen: Option<String>,
    pub token_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Runtime {
    pub worker_threads: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Defaults {
    pub connect_timeout: Option<DurationText>,
    pub connect_retries: Option<i64>,
    pub idle_timeout: Option<DurationText>,
    pub drain_timeout: Option<DurationText>,
    pub forwarding: Option<String>,
    pub scheduler: Option<String>,
    pub max_connections: Option<i64>,
    pub tcp_keepalive: Option<bool>,
    pub access_log: Option<bool>,
    pub nat_byte_counters: Option<bool>,
    pub health: Option<Health>,
    pub proxy_protocol: Option<ProxyProtocol>,
    pub allow: Option<Vec<String>>,
    pub deny: Option<Vec<String>>,
    pub limits: Option<Limits>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Service {
    pub name: Option<String>,
    pub protocol: Option<String>,
    pub listen: Option<String>,
    pub scheduler: Option<String>,
    pub hash_key: Option<String>,
    pub on_all_down: Option<String>,
    pub connect_timeout: Option<DurationText>,
    pub connect_retries: Option<i64>,
    pub idle_timeout: Option<DurationText>,
    pub drain_timeout: Option<DurationText>,
    pub forwarding: Option<String>,
    pub max_connections: Option<i64>,
    pub tcp_keepalive: Option<bool>,
    pub access_log: Option<bool>,
    pub nat_byte_counters: Option<bool>,
    pub backends: Option<Vec<Backend>>,
    pub health: Option<Health>,
    pub udp: Option<Udp>,
    pub proxy_protocol: Option<ProxyProtocol>,
    pub allow: Option<Vec<String>>,
    pub deny: Option<Vec<String>>,
    pub limits: Option<Limits>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProxyProtocol {
    pub send: Option<String>,
    pub accept: Option<bool>,
    pub trusted: Option<Vec<String>>,
    pub timeout: Option<DurationText>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Limits {
    pub connections_per_source: Option<i64>,
    pub new_connections_per_source: Option<String>,
    pub source_prefix: Option<SourcePrefix>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SourcePrefix {
    pub ipv4: Option<i64>,
    pub ipv6: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Backend {
    pub address: Option<String>,
    pub name: Option<String>,
    pub weight: Option<i64>,
    pub backup: Option<bool>,
    pub proxy_protocol: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Health {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub interval: Option<DurationText>,
    pub timeout: Option<DurationText>,
    pub rise: Option<i64>,
    pub fall: Option<i64>,
    pub initial: Option<String>,
    pub port: Option<i64>,
    pub path: Option<String>,
    pub expect_status: Option<Vec<i64>>,
    pub expect_body: Option<String>,
    pub host: Option<String>,
    pub send: Option<String>,
    pub expect: Option<String>,
    pub eject_after: Option<i64>,
    pub tls: Option<Tls>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Tls {
    pub verify: Option<bool>,
    pub ca_file: Option<String>,
    pub server_name: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Udp {
    pub session_timeout: Option<DurationText>,
    pub max_sessions: Option<i64>,
    pub replies_per_request: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Vrrp {
    pub instances: Option<Vec<Instance>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Instance {
    pub name: Option<String>,
    pub interface: Option<String>,
    pub virtual_router_id: Option<i64>,
    pub priority: Option<i64>,
    pub advert_interval: Option<DurationText>,
    pub preempt: Option<bool>,
    pub preempt_delay: Option<DurationText>,
    pub virtual_ips: Option<Vec<String>>,
    pub track: Option<Track>,
    pub notify: Option<Notify>,
    pub unicast_peers: Option<Vec<String>>,
    pub startup_delay: Option<DurationText>,
    pub garp: Option<Garp>,
    pub checksum: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Routing {
    pub table: Option<i64>,
    pub protocol: Option<i64>,
    pub device: Option<String>,
    pub vip_interface: Option<String>,
    pub withdraw_delay: Option<DurationText>,
    pub vips: Option<Vec<RoutedVip>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RoutedVip {
    pub address: Option<String>,
    pub services: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Track {
    pub services: Option<Vec<String>>,
    pub weight: Option<i64>,
    pub peer_priorities: Option<Vec<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Garp {
    pub repeat: Option<i64>,
    pub interval: Option<DurationText>,
    pub refresh: Option<DurationText>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Notify {
    pub master: Option<String>,
    pub backup: Option<String>,
    pub fault: Option<String>,
}

/// A duration as written. A bare number is kept (and flagged) so validation
/// can say "write `3s`" instead of a type error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DurationText {
    pub text: String,
    /// Written as a YAML number (`3`, `2.5`), not as a string.
    pub number: bool,
}

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DurationVisitor)
    }
}

struct DurationVisitor;

impl DurationVisitor {
    fn number(text: String) -> DurationText {
        DurationText { text, number: true }
    }
}

impl Visitor<'_> for DurationVisitor {
    type Value = DurationText;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration such as 3s")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<DurationText, E> {
        Ok(DurationText {
            text: v.to_owned(),
            number: false,
        })
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<DurationText, E> {
        Ok(Self::number(v.to_string()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<DurationText, E> {
        Ok(Self::number(v.to_string()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<DurationText, E> {
        Ok(Self::number(v.to_string()))
    }
}

/// For sections whose mere presence means something (`admin:` alone turns the
/// admin endpoint on with its defaults): a present key is `Some` even when its
/// value is empty. serde calls this only when the key is present.
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Some(Option::<T>::deserialize(d)?.unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_admin_section_is_present() {
        let f: File = serde_yaml::from_str("admin:\n").unwrap();
        assert!(f.admin.is_some());
        let f: File = serde_yaml::from_str("services: []\n").unwrap();
        assert!(f.admin.is_none());
    }

    #[test]
    fn durations_remember_whether_they_were_numbers() {
        let d: Defaults = serde_yaml::from_str("connect_timeout: 3\nidle_timeout: 1h\n").unwrap();
        assert_eq!(
            d.connect_timeout.unwrap(),
            DurationText {
                text: "3".into(),
                number: true
            }
        );
        assert_eq!(
            d.idle_timeout.unwrap(),
            DurationText {
                text: "1h".into(),
                number: false
            }
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let e = serde_yaml::from_str::<Backend>("adress: 1.2.3.4:5\n").unwrap_err();
        assert!(e.to_string().contains("unknown field `adress`"), "{e}");
    }
}
