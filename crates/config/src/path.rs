//! Field paths: how an error names the field it is about.
//!
//! A path has two faces: what the user reads (`services[kube-apiserver].backends[2].weight`,
//! list items by name when they have a valid one) and the keys and indices
//! that find the field's position in [`crate::locate::Document`].

use crate::locate::Seg;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldPath {
    display: String,
    segs: Vec<Seg>,
}

impl FieldPath {
    /// The whole file.
    pub fn root() -> Self {
        Self::default()
    }

    pub fn key(&self, key: &str) -> Self {
        let mut p = self.clone();
        if !p.display.is_empty() {
            p.display.push('.');
        }
        p.display.push_str(key);
        p.segs.push(Seg::Key(key.to_owned()));
        p
    }

    /// A list item shown by its index: `backends[2]`.
    pub fn index(&self, i: usize) -> Self {
        self.item(i, None)
    }

    /// A list item shown by its name when it has a valid one
    /// (`services[kube-apiserver]`), else by its index (`services[0]`).
    pub fn item(&self, i: usize, name: Option<&str>) -> Self {
        let mut p = self.clone();
        match name.filter(|n| is_valid_name(n)) {
            Some(n) => p.display.push_str(&format!("[{n}]")),
            None => p.display.push_str(&format!("[{i}]")),
        }
        p.segs.push(Seg::Index(i));
        p
    }

    pub fn display(&self) -> &str {
        &self.display
    }

    pub fn segs(&self) -> &[Seg] {
        &self.segs
    }
}

/// Service, instance and backend names: `[A-Za-z0-9._-]+`, so they can be
/// used as they are in paths, logs and metric labels.
pub(crate) fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_show_their_name_when_valid_else_their_index() {
        let services = FieldPath::root().key("services");
        assert_eq!(
            services.item(0, Some("api")).key("listen").display(),
            "services[api].listen"
        );
        assert_eq!(services.item(3, Some("bad name")).display(), "services[3]");
        assert_eq!(services.item(1, None).index(2).display(), "services[1][2]");
        assert_eq!(
            services.item(0, Some("api")).segs(),
            &[Seg::Key("services".into()), Seg::Index(0)]
        );
    }

    #[test]
    fn names_are_letters_digits_dots_underscores_and_dashes() {
        for ok in ["api", "kube-apiserver", "a.b_c-1"] {
            assert!(is_valid_name(ok), "{ok}");
        }
        for bad in ["", "a b", "a/b", "é", "a:b"] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }
}
