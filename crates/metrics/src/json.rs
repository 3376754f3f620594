//! A small JSON writer for the status document: objects, arrays, strings,
//! numbers and booleans, with correct string escaping. (serde stays in the
//! config crate; tandem writes this document and never reads it.)

use std::fmt::Write as _;

#[derive(Debug, Default)]
pub struct JsonWriter {
    out: String,
    /// Per open container: whether it already holds an element.
    has_items: Vec<bool>,
    /// A key was just written: the next value belongs to it.
    after_key: bool,
}

impl JsonWriter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn finish(self) -> String {
        self.out
    }

    /// Writes the comma before a new element, unless the element is a key's value.
    fn element(&mut self) {
        if std::mem::take(&mut self.after_key) {
            return;
        }
        if let Some(has) = self.has_items.last_mut() {
            if *has {
                self.out.push(',');
            }
            *has = true;
        }
    }

    pub fn begin_object(&mut self) -> &mut Self {
        self.element();
        self.out.push('{');
        self.has_items.push(false);
        self
    }

    pub fn end_object(&mut self) -> &mut Self {
        self.has_items.pop();
        self.out.push('}');
        self
    }

    pub fn begin_array(&mut self) -> &mut Self {
        self.element();
        self.out.push('[');
        self.has_items.push(false);
        self
    }

    pub fn end_array(&mut self) -> &mut Self {
        self.has_items.pop();
        self.out.push(']');
        self
    }

    /// Writes `"key":`; call one value method (or begin_*) next.
    pub fn key(&mut self, key: &str) -> &mut Self {
        self.element();
        write_string(&mut self.out, key);
        self.out.push(':');
        self.after_key = true;
        self
    }

    pub fn string(&mut self, value: &str) -> &mut Self {
        self.element();
        write_string(&mut self.out, value);
        self
    }

    pub fn opt_string(&mut self, value: Option<&str>) -> &mut Self {
        match value {
            Some(v) => self.string(v),
            None => self.null(),
        }
    }

    pub fn number(&mut self, value: u64) -> &mut Self {
        self.element();
        let _ = write!(self.out, "{value}");
        self
    }

    pub fn float(&mut self, value: f64) -> &mut Self {
        self.element();
        if value.is_finite() {
            let _ = write!(self.out, "{value}");
        } else {
            self.out.push_str("null");
        }
        self
    }

    pub fn boolean(&mut self, value: bool) -> &mut Self {
        self.element();
        self.out.push_str(if value { "true" } else { "false" });
        self
    }

    pub fn null(&mut self) -> &mut Self {
        self.element();
        self.out.push_str("null");
        self
    }
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_nested_documents_with_commas_in_the_right_places() {
        let mut w = JsonWriter::new();
        w.begin_object();
        w.key("a").number(1);
        w.key("b").begin_array();
        w.string("x").boolean(true).null();
        w.begin_object().key("c").float(1.5).end_object();
        w.end_array();
        w.key("d").opt_string(None);
        w.end_object();
        assert_eq!(
            w.finish(),
            r#"{"a":1,"b":["x",true,null,{"c":1.5}],"d":null}"#
        );
    }

    #[test]
    fn escapes_strings() {
        let mut w = JsonWriter::new();
        w.string("q\"b\\n\n\u{1}é");
        assert_eq!(w.finish(), r#""q\"b\\n\n\u0001é""#);
    }
}
