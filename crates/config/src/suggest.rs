//! "Did you mean": the nearest valid word for a misspelt key or value.

/// How alike two words must be (Jaro-Winkler, case-insensitive) to suggest
/// one; one typo (an edit or a swap) always qualifies.
const THRESHOLD: f64 = 0.8;

/// The valid word nearest to `word`, if any is near enough.
pub(crate) fn nearest<'a>(word: &str, valid: &[&'a str]) -> Option<&'a str> {
    let word = word.to_lowercase();
    valid
        .iter()
        .map(|v| {
            let v_low = v.to_lowercase();
            let jw = strsim::jaro_winkler(&word, &v_low);
            // Short words with one typo score low on Jaro-Winkler (`tpc`).
            let one_typo =
                word.chars().count() >= 3 && strsim::damerau_levenshtein(&word, &v_low) <= 1;
            (if one_typo { 1.0 + jw } else { jw }, *v)
        })
        .filter(|(score, _)| *score >= THRESHOLD)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, v)| v)
}

/// `unknown {what} `word`, did you mean `x`? (valid: a, b, c)`
pub(crate) fn unknown(what: &str, word: &str, valid: &[&str]) -> String {
    let mut msg = format!("unknown {what} `{word}`");
    if let Some(near) = nearest(word, valid) {
        msg.push_str(&format!(", did you mean `{near}`?"));
    }
    if !valid.is_empty() {
        msg.push_str(&format!(" (valid: {})", valid.join(", ")));
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_the_nearest_word_only_when_it_is_near() {
        let fields = ["name", "protocol", "listen", "backends"];
        assert_eq!(nearest("listn", &fields), Some("listen"));
        assert_eq!(nearest("backend", &fields), Some("backends"));
        assert_eq!(nearest("Listen", &fields), Some("listen"));
        assert_eq!(nearest("zzz", &fields), None);
        let schedulers = ["round_robin", "least_connections", "source_hash", "random"];
        assert_eq!(
            nearest("least_conn", &schedulers),
            Some("least_connections")
        );
        assert_eq!(nearest("roundrobin", &schedulers), Some("round_robin"));
    }

    #[test]
    fn unknown_lists_the_valid_words() {
        assert_eq!(
            unknown("value", "tpc", &["tcp", "udp"]),
            "unknown value `tpc`, did you mean `tcp`? (valid: tcp, udp)"
        );
        assert_eq!(
            unknown("value", "x", &["tcp", "udp"]),
            "unknown value `x` (valid: tcp, udp)"
        );
    }
}
