//! The fuzz harness of the config loader, shared by the bolero tests below
//! (bounded, in `cargo test`) and the cargo-fuzz target `config` (long runs,
//! see docs/fuzzing.md). Compiled only for tests and with the `fuzzing` feature.
//!
//! Input: the bytes of a file. Checked beyond "no panic": a refused file has
//! at least one error, and every error names the file, has a message, and a
//! location inside the file (line 1.., column 1.. within that line).

use crate::parse_bytes;

/// Runs one input; panics on a broken property.
pub fn load(bytes: &[u8]) {
    let Err(errors) = parse_bytes(bytes, "fuzz.yaml") else {
        return;
    };
    assert!(!errors.0.is_empty(), "refused without an error");
    let text = String::from_utf8_lossy(bytes);
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let lines: Vec<&str> = text.split('\n').collect();
    for e in &errors.0 {
        assert_eq!(e.origin, "fuzz.yaml");
        assert!(!e.message.is_empty(), "{e:?}");
        assert!(e.line >= 1 && e.column >= 1, "no location: {e}");
        assert!(e.line <= lines.len(), "past the last line: {e}");
        let width = lines[e.line - 1].chars().count();
        assert!(
            e.column <= width + 1,
            "past the end of line {}: {e}",
            e.line
        );
    }
}

#[cfg(test)]
mod tests {
    use super::load;

    const SEEDS: [&str; 3] = [
        include_str!("../tests/good/everything.yaml"),
        include_str!("../tests/good/active-active.yaml"),
        include_str!("../tests/good/minimal.yaml"),
    ];

    #[test]
    fn random_bytes_load_with_located_errors() {
        bolero::check!()
            .with_iterations(2_000)
            .for_each(|input: &[u8]| load(input));
    }

    /// Real files with bytes overwritten and a slice cut out: reaches deep
    /// into validation with half-broken structure.
    #[test]
    fn mutated_real_configs_load_with_located_errors() {
        bolero::check!()
            .with_type::<(u8, Vec<(u16, u8)>, (u16, u8))>()
            .with_iterations(1_500)
            .for_each(|(seed, edits, (cut_at, cut_len))| {
                let mut input = SEEDS[usize::from(*seed) % SEEDS.len()].as_bytes().to_vec();
                for &(at, byte) in edits.iter().take(3) {
                    let at = usize::from(at) % input.len();
                    input[at] = byte;
                }
                let at = usize::from(*cut_at) % input.len();
                let end = (at + usize::from(*cut_len)).min(input.len());
                input.drain(at..end);
                load(&input);
            });
    }
}
