//! docs/configuration.md and examples/ cannot drift from the code: every key
//! the parser accepts (as its own "unknown field" error lists them) must be
//! documented in its section of the reference and shown in some example.

const DOC: &str = include_str!("../../../docs/configuration.md");

/// Valid keys at the place where `yaml` puts the unknown key `zzz_not_a_key`.
fn valid_keys(yaml: &str) -> Vec<String> {
    let err = tandem_config::parse(yaml, "t.yaml")
        .expect_err("an unknown key is an error")
        .to_string();
    let list = err
        .split("(valid: ")
        .nth(1)
        .unwrap_or_else(|| panic!("no valid-key list in: {err}"));
    let list = list.split(')').next().unwrap_or("");
    list.split(", ").map(|k| k.trim().to_owned()).collect()
}

/// The text of the doc section whose heading names `heading`.
fn section(heading: &str) -> &'static str {
    let start = DOC
        .find(&format!("`{heading}`\n"))
        .unwrap_or_else(|| panic!("docs/configuration.md has no section `{heading}`"));
    let rest = &DOC[start..];
    let end = rest[1..].find("\n#").map_or(rest.len(), |e| e + 1);
    &rest[..end]
}

const SERVICE: &str = "services:\n  - name: a\n    listen: 127.0.0.1:1\n    backends: [{ address: \"127.0.0.1:2\" }]\n";

#[test]
fn every_accepted_key_is_documented_in_its_section() {
    let cases: Vec<(&str, String)> = vec![
        ("admin", format!("admin:\n  zzz_not_a_key: 1\n{SERVICE}")),
        ("runtime", format!("runtime:\n  zzz_not_a_key: 1\n{SERVICE}")),
        ("defaults", format!("defaults:\n  zzz_not_a_key: 1\n{SERVICE}")),
        ("services", format!("{SERVICE}    zzz_not_a_key: 1\n")),
        (
            "backends",
            "services:\n  - name: a\n    listen: 127.0.0.1:1\n    backends: [{ address: \"127.0.0.1:2\", zzz_not_a_key: 1 }]\n".to_owned(),
        ),
        ("health", format!("{SERVICE}    health: {{ type: https, zzz_not_a_key: 1 }}\n")),
        ("tls", format!("{SERVICE}    health: {{ type: https, tls: {{ zzz_not_a_key: 1 }} }}\n")),
        ("udp", format!("{SERVICE}    udp: {{ zzz_not_a_key: 1 }}\n")),
        ("proxy_protocol", format!("{SERVICE}    proxy_protocol: {{ zzz_not_a_key: 1 }}\n")),
        ("limits", format!("{SERVICE}    limits: {{ zzz_not_a_key: 1 }}\n")),
        (
            "vrrp",
            "vrrp:\n  instances:\n    - { name: v, interface: eth0, virtual_router_id: 1, virtual_ips: [198.18.0.1/24], zzz_not_a_key: 1 }\n".to_owned(),
        ),
        (
            "track",
            format!("{SERVICE}vrrp:\n  instances:\n    - {{ name: v, interface: eth0, virtual_router_id: 1, virtual_ips: [198.18.0.1/24], track: {{ zzz_not_a_key: 1 }} }}\n"),
        ),
        (
            "notify",
            "vrrp:\n  instances:\n    - { name: v, interface: eth0, virtual_router_id: 1, virtual_ips: [198.18.0.1/24], notify: { zzz_not_a_key: 1 } }\n".to_owned(),
        ),
        ("routing", format!("{SERVICE}routing:\n  zzz_not_a_key: 1\n")),
        (
            "vips",
            format!("{SERVICE}routing:\n  vips: [{{ address: 127.0.0.1, zzz_not_a_key: 1 }}]\n"),
        ),
    ];
    let examples = examples_text();
    let mut missing = Vec::new();
    let mut not_shown = Vec::new();
    for (heading, yaml) in cases {
        let text = section(heading);
        for key in valid_keys(&yaml) {
            if !text.contains(&format!("`{key}`")) {
                missing.push(format!("{heading}.{key}"));
            }
            if !examples.contains(&format!(" {key}:")) {
                not_shown.push(format!("{heading}.{key}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "keys missing from docs/configuration.md: {missing:?}"
    );
    assert!(
        not_shown.is_empty(),
        "keys no file in examples/ shows: {not_shown:?}"
    );
}

/// Every example configuration, concatenated.
fn examples_text() -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut text = String::new();
    for entry in std::fs::read_dir(&dir).expect("examples/ exists") {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            text.push_str(&std::fs::read_to_string(&path).expect("an example is readable"));
            text.push('\n');
        }
    }
    text
}
