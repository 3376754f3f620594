//! Where things are in the file: a positioned YAML tree built with yaml-rust2's
//! marked event parser.
//!
//! serde consumes the file without keeping positions, so semantic errors find
//! theirs here, by the same field path the validator walks. Positions are
//! 1-based lines and columns, counted in characters like the YAML parsers do.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, ScanError, TScalarStyle};

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    /// The start of the file: where errors about the whole file point.
    pub const START: Pos = Pos { line: 1, column: 1 };

    fn from_marker(m: Marker) -> Self {
        // yaml-rust2 lines are 1-based, columns 0-based.
        Pos {
            line: m.line(),
            column: m.col() + 1,
        }
    }
}

/// One step of a field path: a mapping key or a list index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

#[derive(Debug, Clone)]
pub(crate) struct Node {
    /// Where the value starts (for an empty value: where its key is).
    pub pos: Pos,
    pub kind: Kind,
    /// Nodes in this subtree, itself included (bounds alias expansion).
    size: usize,
}

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Scalar(String),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The key as text (`?` for a key that is not a scalar).
    pub key: String,
    pub key_pos: Pos,
    pub value: Node,
}

/// A key that appears twice in one mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DuplicateKey {
    /// Path of the second occurrence.
    pub path: Vec<Seg>,
    pub first: Pos,
    pub second: Pos,
}

/// The positioned tree of a whole file.
#[derive(Debug, Default)]
pub(crate) struct Document {
    /// The first document's root; `None` for a file with no document at all.
    pub root: Option<Node>,
    /// Where each document starts (the second one is an error).
    pub starts: Vec<Pos>,
}

impl Document {
    pub fn parse(text: &str) -> Result<Self, ScanError> {
        let mut builder = Builder::default();
        Parser::new_from_str(text).load(&mut builder, true)?;
        Ok(Document {
            root: builder.roots.into_iter().next(),
            starts: builder.starts,
        })
    }

    /// True when the file holds no value at all (nothing, comments, `---`, `~`).
    pub fn is_empty(&self) -> bool {
        match &self.root {
            None => true,
            Some(Node {
                kind: Kind::Scalar(s),
                ..
            }) => s.is_empty() || s == "~" || s == "null",
            Some(_) => false,
        }
    }

    pub fn node(&self, path: &[Seg]) -> Option<&Node> {
        let mut node = self.root.as_ref()?;
        for seg in path {
            node = node.child(seg)?.1;
        }
        Some(node)
    }

    /// Where the value at `path` is; if it is absent, where its nearest
    /// present ancestor is.
    pub fn value_pos(&self, path: &[Seg]) -> Pos {
        let Some(mut node) = self.root.as_ref() else {
            return Pos::START;
        };
        for seg in path {
            match node.child(seg) {
                Some((_, child)) => node = child,
                None => break,
            }
        }
        node.pos
    }

    /// Where the key of the field at `path` is; falls back like [`Self::value_pos`].
    pub fn key_pos(&self, path: &[Seg]) -> Pos {
        let Some((last, parent)) = path.split_last() else {
            return self.value_pos(path);
        };
        match self.node(parent).and_then(|n| n.child(last)) {
            Some((Some(key_pos), _)) => key_pos,
            Some((None, node)) => node.pos,
            None => self.value_pos(parent),
        }
    }

    /// The text of the scalar at `path`, if there is one.
    pub fn scalar(&self, path: &[Seg]) -> Option<&str> {
        match &self.node(path)?.kind {
            Kind::Scalar(s) => Some(s),
            _ => None,
        }
    }

    /// Every key written twice in the same mapping, in file order.
    pub fn duplicate_keys(&self) -> Vec<DuplicateKey> {
        let mut found = Vec::new();
        if let Some(root) = &self.root {
            collect_duplicates(root, &mut Vec::new(), &mut found);
        }
        found
    }
}

impl Node {
    /// The child at `seg` with its key position (for mapping entries).
    fn child(&self, seg: &Seg) -> Option<(Option<Pos>, &Node)> {
        match (&self.kind, seg) {
            (Kind::Map(entries), Seg::Key(k)) => entries
                .iter()
                .find(|e| &e.key == k)
                .map(|e| (Some(e.key_pos), &e.value)),
            (Kind::Seq(items), Seg::Index(i)) => items.get(*i).map(|n| (None, n)),
            _ => None,
        }
    }
}

fn collect_duplicates(node: &Node, path: &mut Vec<Seg>, found: &mut Vec<DuplicateKey>) {
    match &node.kind {
        Kind::Scalar(_) => {}
        Kind::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(Seg::Index(i));
                collect_duplicates(item, path, found);
                path.pop();
            }
        }
        Kind::Map(entries) => {
            let mut seen: HashMap<&str, Pos> = HashMap::new();
            for e in entries {
                path.push(Seg::Key(e.key.clone()));
                match seen.get(e.key.as_str()) {
                    Some(first) => found.push(DuplicateKey {
                        path: path.clone(),
                        first: *first,
                        second: e.key_pos,
                    }),
                    None => {
                        seen.insert(&e.key, e.key_pos);
                        collect_duplicates(&e.value, path, found);
                    }
                }
                path.pop();
            }
        }
    }
}

/// Deeper than this the tree is not built: serde_yaml rejects such files anyway
/// (its recursion limit is lower), and a shallow tree cannot overflow the stack.
const MAX_DEPTH: usize = 200;
/// At most this many nodes, aliases expanded: a "billion laughs" file must not
/// exhaust memory while we only look for positions.
const MAX_NODES: usize = 200_000;

#[derive(Debug)]
enum Open {
    Seq {
        pos: Pos,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        pos: Pos,
        anchor: usize,
        entries: Vec<Entry>,
        /// A key seen, waiting for its value.
        key: Option<(String, Pos)>,
    },
}

#[derive(Debug, Default)]
struct Builder {
    stack: Vec<Open>,
    /// Containers opened beyond `MAX_DEPTH`, skipped with their content.
    skipped_depth: usize,
    anchors: HashMap<usize, Node>,
    roots: Vec<Node>,
    starts: Vec<Pos>,
    nodes: usize,
}

impl Builder {
    fn leaf(&mut self, pos: Pos, text: String) -> Node {
        self.nodes += 1;
        Node {
            pos,
            kind: Kind::Scalar(text),
            size: 1,
        }
    }

    /// Places a finished node in its parent (or as a document root).
    fn place(&mut self, node: Node, anchor: usize) {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.roots.push(node),
            Some(Open::Seq { items, .. }) => items.push(node),
            Some(Open::Map { entries, key, .. }) => match key.take() {
                None => {
                    let text = match &node.kind {
                        Kind::Scalar(s) => s.clone(),
                        _ => "?".to_owned(),
                    };
                    *key = Some((text, node.pos));
                }
                Some((text, key_pos)) => {
                    let mut value = node;
                    // An empty value is positioned at the next token, often on
                    // the next line; its key is where the reader looks.
                    if matches!(&value.kind, Kind::Scalar(s) if s.is_empty()) {
                        value.pos = key_pos;
                    }
                    entries.push(Entry {
                        key: text,
                        key_pos,
                        value,
                    });
                }
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = Pos::from_marker(mark);
        if self.skipped_depth > 0 {
            match ev {
                Event::SequenceStart(..) | Event::MappingStart(..) => self.skipped_depth += 1,
                Event::SequenceEnd | Event::MappingEnd => self.skipped_depth -= 1,
                _ => {}
            }
            return;
        }
        match ev {
            Event::DocumentStart => self.starts.push(pos),
            Event::Scalar(text, style, anchor, _) => {
                let text = if style == TScalarStyle::Plain && text == "~" {
                    String::new()
                } else {
                    text
                };
                let node = self.leaf(pos, text);
                self.place(node, anchor);
            }
            Event::Alias(id) => {
                let node = match self.anchors.get(&id) {
                    Some(n) if self.nodes + n.size <= MAX_NODES => {
                        self.nodes += n.size;
                        n.clone()
                    }
                    _ => self.leaf(pos, String::new()),
                };
                self.place(node, 0);
            }
            Event::SequenceStart(..) | Event::MappingStart(..) if self.stack.len() >= MAX_DEPTH => {
                self.skipped_depth = 1;
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Open::Seq {
                pos,
                anchor,
                items: Vec::new(),
            }),
            Event::MappingStart(anchor, _) => self.stack.push(Open::Map {
                pos,
                anchor,
                entries: Vec::new(),
                key: None,
            }),
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(open) = self.stack.pop() else {
                    return;
                };
                self.nodes += 1;
                let (node, anchor) = match open {
                    Open::Seq { pos, anchor, items } => {
                        let size = 1 + items.iter().map(|n| n.size).sum::<usize>();
                        let kind = Kind::Seq(items);
                        (Node { pos, kind, size }, anchor)
                    }
                    Open::Map {
                        pos,
                        anchor,
                        entries,
                        ..
                    } => {
                        // A block mapping's start mark lies after its first key;
                        // the first key is where a reader sees the mapping begin.
                        let pos = entries.first().map_or(pos, |e| e.key_pos.min(pos));
                        let size = 1 + entries.iter().map(|e| e.value.size + 1).sum::<usize>();
                        let kind = Kind::Map(entries);
                        (Node { pos, kind, size }, anchor)
                    }
                };
                self.place(node, anchor);
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Seg {
        Seg::Key(k.to_owned())
    }

    const TEXT: &str = "\
services:
  - name: a
    listen: 1.2.3.4:5
    backends:
      - { address: 1.2.3.4:6, weight: 0 }
  - name:
";

    #[test]
    fn positions_are_one_based_lines_and_columns() {
        let doc = Document::parse(TEXT).unwrap();
        let weight = [
            key("services"),
            Seg::Index(0),
            key("backends"),
            Seg::Index(0),
            key("weight"),
        ];
        assert_eq!(
            doc.value_pos(&weight),
            Pos {
                line: 5,
                column: 39
            }
        );
        assert_eq!(
            doc.key_pos(&weight),
            Pos {
                line: 5,
                column: 31
            }
        );
        let listen = [key("services"), Seg::Index(0), key("listen")];
        assert_eq!(
            doc.value_pos(&listen),
            Pos {
                line: 3,
                column: 13
            }
        );
        assert_eq!(doc.scalar(&listen), Some("1.2.3.4:5"));
    }

    #[test]
    fn a_block_mapping_starts_at_its_first_key() {
        let doc = Document::parse(TEXT).unwrap();
        let service = [key("services"), Seg::Index(0)];
        assert_eq!(doc.value_pos(&service), Pos { line: 2, column: 5 });
    }

    #[test]
    fn an_empty_value_is_located_at_its_key() {
        let doc = Document::parse(TEXT).unwrap();
        let name = [key("services"), Seg::Index(1), key("name")];
        assert_eq!(doc.value_pos(&name), Pos { line: 6, column: 5 });
    }

    #[test]
    fn a_missing_field_falls_back_to_its_nearest_ancestor() {
        let doc = Document::parse(TEXT).unwrap();
        let port = [key("services"), Seg::Index(0), key("health"), key("port")];
        assert_eq!(doc.value_pos(&port), Pos { line: 2, column: 5 });
        assert_eq!(doc.key_pos(&port), Pos { line: 2, column: 5 });
    }

    #[test]
    fn aliases_point_at_the_anchored_definition() {
        let doc = Document::parse("a: &x\n  b: 1\nc: *x\n").unwrap();
        assert_eq!(
            doc.value_pos(&[key("c"), key("b")]),
            Pos { line: 2, column: 6 }
        );
    }

    #[test]
    fn duplicate_keys_are_found_with_both_positions() {
        let doc = Document::parse("a: 1\nb:\n  c: 1\n  c: 2\na: 3\n").unwrap();
        let dups = doc.duplicate_keys();
        assert_eq!(dups.len(), 2);
        assert_eq!(dups[0].path, vec![key("b"), key("c")]);
        assert_eq!(dups[0].first, Pos { line: 3, column: 3 });
        assert_eq!(dups[0].second, Pos { line: 4, column: 3 });
        assert_eq!(dups[1].path, vec![key("a")]);
    }

    #[test]
    fn empty_files_and_documents_are_recognised() {
        for text in ["", "# nothing\n", "---\n", "~\n"] {
            assert!(Document::parse(text).unwrap().is_empty(), "{text:?}");
        }
        assert!(!Document::parse("a: 1\n").unwrap().is_empty());
        assert_eq!(
            Document::parse("a: 1\n---\nb: 2\n").unwrap().starts.len(),
            2
        );
    }

    #[test]
    fn deep_nesting_and_alias_bombs_stay_bounded() {
        // yaml-rust2 refuses very deep nesting itself; below its limit our
        // own depth bound applies. Either way: no stack overflow.
        for depth in [150, 220, 10_000] {
            let deep = "[".repeat(depth) + &"]".repeat(depth);
            let _ = Document::parse(&deep);
        }
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 0..12 {
            let prev = if i == 0 {
                "a".to_owned()
            } else {
                format!("b{}", i - 1)
            };
            bomb.push_str(&format!("b{i}: &b{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
        }
        let doc = Document::parse(&bomb).unwrap();
        assert!(doc.root.unwrap().size <= MAX_NODES + 100);
    }
}
