//! `parse` answers every input with a config or errors, never a panic.

use proptest::prelude::*;

const GOOD: &str = include_str!("good/everything.yaml");

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC*") {
        let _ = tandem_config::parse(&text, "fuzz.yaml");
    }

    #[test]
    fn yaml_shaped_text_never_panics(text in "[a-z_ :\\-\\[\\]{},.0-9\"'&*!|>#\n\t]{0,300}") {
        let _ = tandem_config::parse(&text, "fuzz.yaml");
    }

    /// A real config with a slice cut out and junk put in: reaches deep into
    /// validation with half-broken structure.
    #[test]
    fn mangled_real_config_never_panics(
        start in 0..GOOD.len(),
        len in 0usize..200,
        junk in "[a-z0-9 :\\-\\[\\]{}\n\"]{0,20}",
    ) {
        let start = floor_char_boundary(GOOD, start);
        let end = floor_char_boundary(GOOD, (start + len).min(GOOD.len()));
        let text = format!("{}{}{}", &GOOD[..start], junk, &GOOD[end..]);
        if let Err(errors) = tandem_config::parse(&text, "fuzz.yaml") {
            prop_assert!(!errors.0.is_empty());
            for e in &errors.0 {
                prop_assert!(e.to_string().starts_with("fuzz.yaml:"));
                prop_assert!(!e.message.is_empty());
            }
        }
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}
