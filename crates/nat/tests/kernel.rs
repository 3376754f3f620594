//! The kernel accepts what the renderer writes: `nft -c` (a dry run that
//! changes nothing) of the golden table and of an empty one. Needs nft and
//! CAP_NET_ADMIN; without them it skips loudly, and fails under
//! `TANDEM_REQUIRE_NETNS=1` (as CI runs it).

use tandem_nat::{render, NatError, Nft};

fn nft_or_skip() -> Option<Nft> {
    let required = std::env::var("TANDEM_REQUIRE_NETNS").is_ok_and(|v| v == "1");
    let nft = match Nft::locate() {
        Ok(n) => n,
        Err(e) if !required => {
            eprintln!("SKIPPED: {e}");
            return None;
        }
        Err(e) => panic!("TANDEM_REQUIRE_NETNS=1: {e}"),
    };
    match nft.check(&render(&[]).text) {
        Err(e @ NatError::NotPermitted { .. }) if !required => {
            eprintln!("SKIPPED: {e}");
            None
        }
        _ => Some(nft),
    }
}

#[test]
fn the_kernel_accepts_the_golden_table_and_an_empty_one() {
    let Some(nft) = nft_or_skip() else { return };
    let golden = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/example.nft"
    ))
    .unwrap();
    nft.check(&golden).unwrap();
    nft.check(&render(&[]).text).unwrap();
}

#[test]
fn a_broken_ruleset_is_refused_with_nfts_words() {
    let Some(nft) = nft_or_skip() else { return };
    match nft.check("table inet tandem { chain c { nonsense } }\n") {
        Err(NatError::Refused { stderr }) => assert!(stderr.contains("syntax error"), "{stderr}"),
        other => panic!("want Refused, got {other:?}"),
    }
}

/// `nat_byte_counters: false` on one service, then on every one (no filter
/// hook at all): both tables are ones the kernel takes.
#[test]
fn the_kernel_accepts_tables_with_byte_counters_off() {
    let Some(nft) = nft_or_skip() else { return };
    for second in ["true", "false"] {
        let yaml = format!(
            "defaults: {{ forwarding: nat }}\nservices:\n  - {{ name: a, listen: 198.18.0.100:80, nat_byte_counters: false, backends: [{{ address: 198.18.0.11:80 }}] }}\n  - {{ name: b, listen: 198.18.0.100:81, nat_byte_counters: {second}, backends: [{{ address: 198.18.0.12:80 }}] }}\n"
        );
        let config = tandem_config::parse(&yaml, "t.yaml").unwrap_or_else(|e| panic!("{e}"));
        let table = tandem_nat::render_config(&config).text;
        assert_eq!(
            table.contains("type filter hook"),
            second == "true",
            "{table}"
        );
        nft.check(&table).unwrap();
    }
}
