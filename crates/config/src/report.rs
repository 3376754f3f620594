//! Collects semantic errors, each placed by its field path.

use crate::locate::{Document, Pos};
use crate::path::FieldPath;
use crate::ConfigError;

#[derive(Debug)]
pub(crate) struct Report<'a> {
    origin: &'a str,
    doc: &'a Document,
    errors: Vec<ConfigError>,
}

impl<'a> Report<'a> {
    pub fn new(origin: &'a str, doc: &'a Document) -> Self {
        Report {
            origin,
            doc,
            errors: Vec::new(),
        }
    }

    /// An error about the value at `at` (or, when it is absent, about the
    /// nearest enclosing item).
    pub fn value(&mut self, at: &FieldPath, message: impl Into<String>) {
        let pos = self.doc.value_pos(at.segs());
        self.push(pos, at, message.into());
    }

    /// An error about a key being there at all.
    pub fn key(&mut self, at: &FieldPath, message: impl Into<String>) {
        let pos = self.doc.key_pos(at.segs());
        self.push(pos, at, message.into());
    }

    /// The line of the value at `at`, for "first defined at line N".
    pub fn line(&self, at: &FieldPath) -> usize {
        self.doc.value_pos(at.segs()).line
    }

    fn push(&mut self, pos: Pos, at: &FieldPath, message: String) {
        self.errors
            .push(ConfigError::at(self.origin, pos, at.display(), message));
    }

    /// All errors, in file order (errors at one position keep the order found).
    pub fn finish(mut self) -> Vec<ConfigError> {
        self.errors.sort_by_key(|e| (e.line, e.column));
        self.errors
    }
}
