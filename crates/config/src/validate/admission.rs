//! Who may connect: `allow`, `deny`, `limits` and `proxy_protocol`. Each of
//! these sections, in `defaults` or a service, replaces the inherited one as a
//! whole, as `health` does.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use super::*;

/// The sections as written, from `defaults` or a service.
pub(super) struct Written<'a> {
    pub proxy_protocol: Option<&'a file::ProxyProtocol>,
    pub allow: Option<&'a [String]>,
    pub deny: Option<&'a [String]>,
    pub limits: Option<&'a file::Limits>,
}

impl<'a> Written<'a> {
    pub(super) fn of_defaults(raw: &'a file::Defaults) -> Self {
        Written {
            proxy_protocol: raw.proxy_protocol.as_ref(),
            allow: raw.allow.as_deref(),
            deny: raw.deny.as_deref(),
            limits: raw.limits.as_ref(),
        }
    }

    pub(super) fn of_service(raw: &'a file::Service) -> Self {
        Written {
            proxy_protocol: raw.proxy_protocol.as_ref(),
            allow: raw.allow.as_deref(),
            deny: raw.deny.as_deref(),
            limits: raw.limits.as_ref(),
        }
    }

    /// Checks what is written at `at`; what is not comes from `base`.
    pub(super) fn resolve(
        &self,
        r: &mut Report,
        at: &FieldPath,
        base: (&Admission, Option<ProxyVersion>),
    ) -> (Admission, Option<ProxyVersion>) {
        let (base, base_send) = base;
        let (proxy_accept, send) = match self.proxy_protocol {
            Some(p) => proxy_protocol(r, &at.key("proxy_protocol"), p),
            None => (base.proxy_accept.clone(), base_send),
        };
        let list = |r: &mut Report, key: &str, raw: Option<&[String]>, base: &Vec<IpPrefix>| {
            raw.map_or_else(|| base.clone(), |l| networks(r, &at.key(key), l))
        };
        let admission = Admission {
            allow: list(r, "allow", self.allow, &base.allow),
            deny: list(r, "deny", self.deny, &base.deny),
            proxy_accept,
            limits: self
                .limits
                .map_or_else(|| base.limits.clone(), |l| limits(r, &at.key("limits"), l)),
        };
        (admission, send)
    }
}

fn proxy_protocol(
    r: &mut Report,
    at: &FieldPath,
    raw: &file::ProxyProtocol,
) -> (Option<ProxyAccept>, Option<ProxyVersion>) {
    let send = raw
        .send
        .as_ref()
        .and_then(|w| values::word(r, &at.key("send"), w, ProxyVersion::NAMES));
    let timeout = raw
        .timeout
        .as_ref()
        .and_then(|d| values::positive_duration(r, &at.key("timeout"), d))
        .unwrap_or(default::PROXY_TIMEOUT);
    let trusted = raw
        .trusted
        .as_deref()
        .map(|l| networks(r, &at.key("trusted"), l));
    let accept = match (raw.accept.unwrap_or(false), trusted) {
        (true, Some(trusted)) if !trusted.is_empty() => Some(ProxyAccept { trusted, timeout }),
        (true, _) => {
            r.value(
                &at.key("accept"),
                "needs `trusted`: the addresses of the proxies in front (e.g. [198.18.0.0/24]); use [0.0.0.0/0, \"::/0\"] to trust every source",
            );
            None
        }
        (false, Some(_)) => {
            r.key(&at.key("trusted"), "only used with `accept: true`");
            None
        }
        (false, None) => {
            if raw.timeout.is_some() {
                r.key(&at.key("timeout"), "only used with `accept: true`");
            }
            None
        }
    };
    (accept, send)
}

/// CIDRs; `/0` is allowed and host bits are cleared (`198.18.0.7/24` is
/// `198.18.0.0/24`), an address alone is itself (`/32`, `/128`).
fn networks(r: &mut Report, at: &FieldPath, raw: &[String]) -> Vec<IpPrefix> {
    raw.iter()
        .enumerate()
        .filter_map(|(i, text)| network(r, &at.index(i), text))
        .collect()
}

fn network(r: &mut Report, at: &FieldPath, text: &str) -> Option<IpPrefix> {
    let text = text.trim();
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let Ok(address) = addr.parse::<IpAddr>() else {
        r.value(
            at,
            format!("`{text}` is not an address or network (e.g. 198.18.0.0/15 or 2001:db8::/32)"),
        );
        return None;
    };
    let max: u8 = if address.is_ipv4() { 32 } else { 128 };
    let prefix_len = match len.map(str::parse::<u8>) {
        None => max,
        Some(Ok(n)) if n <= max => n,
        Some(_) => {
            r.value(
                at,
                format!("`{text}`: the prefix length must be between 0 and {max}"),
            );
            return None;
        }
    };
    Some(IpPrefix {
        address: mask(address, prefix_len),
        prefix_len,
    })
}

fn mask(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let m = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & m).into())
        }
        IpAddr::V6(v6) => {
            let m = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & m).into())
        }
    }
}

fn limits(r: &mut Report, at: &FieldPath, raw: &file::Limits) -> SourceLimits {
    let connections_per_source = raw
        .connections_per_source
        .and_then(|n| values::at_least::<u32>(r, &at.key("connections_per_source"), n, 1))
        .and_then(NonZeroU32::new);
    let new_connections_per_source = raw
        .new_connections_per_source
        .as_ref()
        .and_then(|t| rate(r, &at.key("new_connections_per_source"), t));
    let d = SourceLimits::default();
    let (mut ipv4_prefix, mut ipv6_prefix) = (d.ipv4_prefix, d.ipv6_prefix);
    if let Some(p) = &raw.source_prefix {
        let at = at.key("source_prefix");
        if let Some(n) = p.ipv4 {
            ipv4_prefix = values::between::<u8>(r, &at.key("ipv4"), n, 1, 32).unwrap_or(32);
        }
        if let Some(n) = p.ipv6 {
            ipv6_prefix = values::between::<u8>(r, &at.key("ipv6"), n, 1, 128).unwrap_or(128);
        }
    }
    let limits = SourceLimits {
        connections_per_source,
        new_connections_per_source,
        ipv4_prefix,
        ipv6_prefix,
    };
    if limits.is_off() && raw.source_prefix.is_some() {
        r.key(
            &at.key("source_prefix"),
            "only used with `connections_per_source` or `new_connections_per_source`",
        );
    }
    limits
}

/// `N/s` or `N/m`.
fn rate(r: &mut Report, at: &FieldPath, text: &str) -> Option<Rate> {
    let parsed = text.trim().split_once('/').and_then(|(n, unit)| {
        let per = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            _ => return None,
        };
        let count = n.trim().parse::<u32>().ok().and_then(NonZeroU32::new)?;
        Some(Rate { count, per })
    });
    if parsed.is_none() {
        r.value(
            at,
            format!("`{text}` is not a rate; write a count of at least 1 per second or minute, e.g. `20/s` or `600/m`"),
        );
    }
    parsed
}

#[cfg(test)]
mod tests {
    use crate::parse;

    const SERVICE: &str = "services:\n  - name: a\n    listen: 127.0.0.1:1\n    backends: [{ address: \"127.0.0.1:2\" }]\n";

    fn errors(extra: &str) -> Vec<String> {
        match parse(&format!("{SERVICE}{extra}"), "t.yaml") {
            Ok(_) => panic!("must not parse: {extra}"),
            Err(e) => {
                e.0.iter()
                    .map(|e| format!("{}:{}: {}: {}", e.line, e.column, e.path, e.message))
                    .collect()
            }
        }
    }

    #[test]
    fn admission_sections_parse_and_defaults_are_replaced_whole() {
        let c = parse(
            "defaults:\n  allow: [198.18.0.7/15]\n  limits: { connections_per_source: 5 }\n  proxy_protocol: { send: v2 }\nservices:\n  - name: a\n    listen: 127.0.0.1:1\n    deny: [\"2001:db8::1\"]\n    limits: { new_connections_per_source: 600/m, source_prefix: { ipv4: 24, ipv6: 64 } }\n    backends: [{ address: \"127.0.0.1:2\" }, { address: \"127.0.0.1:3\", proxy_protocol: none }, { address: \"127.0.0.1:4\", proxy_protocol: v1 }]\n  - name: b\n    listen: 127.0.0.1:5\n    proxy_protocol: { accept: true, trusted: [0.0.0.0/0] }\n    backends: [{ address: \"127.0.0.1:2\" }]\n",
            "t.yaml",
        )
        .unwrap();
        let (a, b) = (&c.services[0], &c.services[1]);
        assert_eq!(a.admission.allow[0].to_string(), "198.18.0.0/15");
        assert_eq!(a.admission.deny[0].to_string(), "2001:db8::1/128");
        assert_eq!(
            a.admission.limits.connections_per_source, None,
            "limits replaced whole"
        );
        let rate = a.admission.limits.new_connections_per_source.unwrap();
        assert_eq!((rate.count.get(), rate.per.as_secs()), (600, 60));
        assert_eq!(
            (
                a.admission.limits.ipv4_prefix,
                a.admission.limits.ipv6_prefix
            ),
            (24, 64)
        );
        let sends: Vec<_> = a
            .backends
            .iter()
            .map(|b| b.send_proxy.map(|v| v.as_str()))
            .collect();
        assert_eq!(sends, [Some("v2"), None, Some("v1")]);
        assert_eq!(
            b.admission.limits.connections_per_source.map(|n| n.get()),
            Some(5)
        );
        assert_eq!(
            b.backends[0].send_proxy, None,
            "proxy_protocol replaced whole"
        );
        let accept = b.admission.proxy_accept.as_ref().unwrap();
        assert_eq!(accept.timeout.as_secs(), 3);
        assert_eq!(accept.trusted[0].to_string(), "0.0.0.0/0");
    }

    #[test]
    fn admission_mistakes_are_located_and_explained() {
        let cases = [
            ("    allow: [198.18.0.0/33]\n", "5:13: services[a].allow[0]: `198.18.0.0/33`: the prefix length must be between 0 and 32"),
            ("    deny: [nope]\n", "5:12: services[a].deny[0]: `nope` is not an address or network (e.g. 198.18.0.0/15 or 2001:db8::/32)"),
            ("    limits: { new_connections_per_source: 5 }\n", "5:43: services[a].limits.new_connections_per_source: `5` is not a rate; write a count of at least 1 per second or minute, e.g. `20/s` or `600/m`"),
            ("    limits: { connections_per_source: 0 }\n", "5:39: services[a].limits.connections_per_source: must be at least 1, got 0"),
            ("    limits: { source_prefix: { ipv4: 24 } }\n", "5:15: services[a].limits.source_prefix: only used with `connections_per_source` or `new_connections_per_source`"),
            ("    proxy_protocol: { accept: true }\n", "5:31: services[a].proxy_protocol.accept: needs `trusted`: the addresses of the proxies in front (e.g. [198.18.0.0/24]); use [0.0.0.0/0, \"::/0\"] to trust every source"),
            ("    proxy_protocol: { send: v3 }\n", "5:29: services[a].proxy_protocol.send: unknown value `v3` (valid: v1, v2)"),
            ("    proxy_protocol: { trusted: [127.0.0.1] }\n", "5:23: services[a].proxy_protocol.trusted: only used with `accept: true`"),
        ];
        let mut wrong = Vec::new();
        for (extra, want) in cases {
            let got = errors(extra);
            if got != [want] {
                wrong.push(format!("{extra}  got {got:?}"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }
}
