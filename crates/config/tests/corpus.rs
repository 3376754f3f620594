//! Configs as data: every file in `tests/bad/` must fail with exactly the
//! errors in its `.expected` file (what `tandem check` prints), every file in
//! `tests/good/` must parse.
//!
//! `TANDEM_BLESS=1 cargo test -p tandem-config --test corpus` rewrites the
//! `.expected` files from the current output; review the diff before
//! committing it, since these files are the user-facing contract.

use std::path::{Path, PathBuf};

fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(name)
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    files.sort();
    files
}

fn name(path: &Path) -> &str {
    path.file_name().unwrap().to_str().unwrap()
}

#[test]
fn every_bad_config_fails_with_exactly_its_expected_errors() {
    let bless = std::env::var("TANDEM_BLESS").is_ok_and(|v| v == "1");
    let yamls = files(&dir("bad"), "yaml");
    assert!(
        yamls.len() >= 25,
        "the corpus has only {} files",
        yamls.len()
    );
    let mut failures = Vec::new();
    for path in &yamls {
        let text = std::fs::read_to_string(path).unwrap();
        let got = match tandem_config::parse(&text, name(path)) {
            Ok(_) => "<no error: this file parsed>".to_owned(),
            Err(e) => e.to_string(),
        };
        let expected_path = path.with_extension("expected");
        if bless {
            std::fs::write(&expected_path, format!("{got}\n")).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected.trim_end() != got {
            failures.push(format!(
                "{}\n--- expected ({})\n{}\n+++ actual\n{}\n",
                name(path),
                name(&expected_path),
                expected.trim_end(),
                got
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} bad configs give other errors than expected \
         (TANDEM_BLESS=1 rewrites the .expected files; review the diff):\n\n{}",
        failures.len(),
        yamls.len(),
        failures.join("\n")
    );
}

#[test]
fn every_expected_file_has_its_config() {
    for expected in files(&dir("bad"), "expected") {
        assert!(
            expected.with_extension("yaml").exists(),
            "{} has no .yaml beside it",
            name(&expected)
        );
    }
}

#[test]
fn every_good_config_parses() {
    let yamls = files(&dir("good"), "yaml");
    assert!(yamls.len() >= 3);
    for path in yamls {
        if let Err(e) = tandem_config::load(&path) {
            panic!("{} must parse:\n{e}", path.display());
        }
    }
}

#[test]
fn every_vrrp_example_parses() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let vrrp: Vec<PathBuf> = files(&examples, "yaml")
        .into_iter()
        .filter(|p| name(p).starts_with("vrrp-"))
        .collect();
    assert!(vrrp.len() >= 3, "{vrrp:?}");
    for path in vrrp {
        match tandem_config::load(&path) {
            Ok(c) => assert!(!c.vrrp.instances.is_empty(), "{}", path.display()),
            Err(e) => panic!("{} must parse:\n{e}", path.display()),
        }
    }
}
