//! The table's named counters, read back from `nft -j list counters`.

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::render::CounterName;

/// packets and bytes by counter name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters(pub HashMap<String, (u64, u64)>);

/// What the kernel counted for one backend of one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BackendCounters {
    /// New flows translated to it.
    pub flows: u64,
    /// IP bytes (headers included) client → backend.
    pub bytes_from_client: u64,
    /// IP bytes backend → client.
    pub bytes_to_client: u64,
}

impl Counters {
    /// The figures of `name`'s backend (zeros for counters not found).
    pub fn of(&self, name: &CounterName) -> BackendCounters {
        let get = |what: &str| {
            self.0
                .get(&format!("{}_{what}", name.prefix))
                .copied()
                .unwrap_or_default()
        };
        BackendCounters {
            flows: get("new").0,
            bytes_from_client: get("orig").1,
            bytes_to_client: get("reply").1,
        }
    }

    /// Every backend's figures, by service name and backend address.
    pub fn by_backend<'a>(
        &'a self,
        names: &'a [CounterName],
    ) -> impl Iterator<Item = (&'a str, SocketAddr, BackendCounters)> + 'a {
        names
            .iter()
            .map(|n| (n.service.as_str(), n.backend, self.of(n)))
    }
}

/// Parses libnftables' JSON (`{"nftables": [{"counter": {...}}, ...]}`).
pub(crate) fn parse(json: &str) -> Result<Counters, String> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let items = v
        .get("nftables")
        .and_then(|n| n.as_array())
        .ok_or("no `nftables` array")?;
    let mut out = HashMap::new();
    for item in items {
        let Some(c) = item.get("counter") else {
            continue;
        };
        let name = c
            .get("name")
            .and_then(|n| n.as_str())
            .ok_or("a counter without a name")?;
        let num = |k: &str| c.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
        out.insert(name.to_owned(), (num("packets"), num("bytes")));
    }
    Ok(Counters(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nft_json() {
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"counter": {"family": "inet", "name": "s0_b0_new", "table": "tandem", "handle": 1, "packets": 3, "bytes": 180}}, {"counter": {"family": "inet", "name": "s0_b0_orig", "table": "tandem", "handle": 2, "packets": 10, "bytes": 900}}]}"#;
        let c = parse(json).unwrap();
        let name = CounterName {
            service: "api".into(),
            backend: "198.18.0.11:80".parse().unwrap(),
            prefix: "s0_b0".into(),
        };
        assert_eq!(
            c.of(&name),
            BackendCounters {
                flows: 3,
                bytes_from_client: 900,
                bytes_to_client: 0
            }
        );
        assert!(parse("{}").is_err());
    }
}
