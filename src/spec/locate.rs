//! A located YAML tree and the path → line/column map.
//!
//! serde values carry no spans, so the text is first read with `yaml-rust2`'s marked event
//! parser into a small tree where every node and every map key keeps its 1-based line and
//! column. The tree is where `${param}` substitution happens (see [`super::params`]), and a
//! serde `Deserializer` over it (here) fills the [`super::raw`] types: a deserialization error
//! then knows the path and position of the node it came from. [`Locations`] maps value paths
//! such as `method[1].target` to positions for the meaning checks in [`super::validate`].

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    fn from_marker(m: &Marker) -> Pos {
        // yaml-rust2 reports 1-based lines and 0-based columns.
        Pos {
            line: m.line(),
            column: m.col() + 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub kind: NodeKind,
    pub pos: Pos,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// `plain` is false for quoted and block scalars (they are always strings).
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<Entry>),
    /// A node removed after it produced an error, so that the rest can still be read.
    Skip,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_pos: Pos,
    pub value: Node,
}

impl Node {
    pub fn is_null(&self) -> bool {
        match &self.kind {
            NodeKind::Scalar { text, plain: true } => {
                matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL")
            }
            NodeKind::Skip => true,
            _ => false,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.kind {
            NodeKind::Map(entries) => entries.iter().find(|e| e.key == key).map(|e| &e.value),
            _ => None,
        }
    }

    pub fn scalar(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// The node at `path`, if any.
    pub fn at(&self, path: &[Seg]) -> Option<&Node> {
        let mut n = self;
        for seg in path {
            n = match (seg, &n.kind) {
                (Seg::Key(k), NodeKind::Map(entries)) => {
                    &entries.iter().find(|e| &e.key == k)?.value
                }
                (Seg::Index(i), NodeKind::Seq(items)) => items.get(*i)?,
                _ => return None,
            };
        }
        Some(n)
    }

    fn at_mut(&mut self, path: &[Seg]) -> Option<&mut Node> {
        let mut n = self;
        for seg in path {
            n = match (seg, &mut n.kind) {
                (Seg::Key(k), NodeKind::Map(entries)) => {
                    &mut entries.iter_mut().find(|e| &e.key == k)?.value
                }
                (Seg::Index(i), NodeKind::Seq(items)) => items.get_mut(*i)?,
                _ => return None,
            };
        }
        Some(n)
    }

    /// Takes the part at `path` out of the way after it produced `err`: an unknown key is
    /// removed, a value of the wrong shape becomes [`NodeKind::Skip`]. False when nothing
    /// changed (so reading again would fail the same way).
    fn poison(&mut self, err: &DeError) -> bool {
        let Some(path) = &err.path else { return false };
        if err.unknown.is_some() {
            let Some((Seg::Key(k), parent)) = path.split_last() else {
                return false;
            };
            if let Some(Node {
                kind: NodeKind::Map(entries),
                ..
            }) = self.at_mut(parent)
            {
                let before = entries.len();
                entries.retain(|e| &e.key != k);
                return entries.len() != before;
            }
            return false;
        }
        if path.is_empty() {
            return false;
        }
        match self.at_mut(path) {
            Some(n) if n.kind != NodeKind::Skip => {
                n.kind = NodeKind::Skip;
                true
            }
            _ => false,
        }
    }
}

/// One step of a value path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// `method[1].target` from segments.
pub fn path_string(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// A problem found while reading the YAML structure itself.
#[derive(Debug, Clone, PartialEq)]
pub struct TreeProblem {
    pub pos: Pos,
    pub message: String,
    pub hint: String,
}

/// Parses `text` into a located tree. `Err` is malformed YAML (one problem, located by the
/// parser); `Ok` carries the tree (None for an empty document) and softer problems such as
/// duplicate keys.
pub fn parse_tree(text: &str) -> Result<(Option<Node>, Vec<TreeProblem>), TreeProblem> {
    let mut b = Builder::default();
    let mut parser = Parser::new_from_str(text);
    if let Err(e) = parser.load(&mut b, false) {
        return Err(TreeProblem {
            pos: Pos::from_marker(e.marker()),
            message: format!("the file is not valid YAML: {}", e.info()),
            hint: "check the indentation and quoting near this place (values containing `: ` \
                   or starting with `{`, `[`, `*`, `&` or `@` need quotes, and so does `${name}` \
                   inside a `{...}` or `[...]`)"
                .into(),
        });
    }
    Ok((b.root, b.problems))
}

enum Frame {
    Seq {
        pos: Pos,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        pos: Pos,
        anchor: usize,
        entries: Vec<Entry>,
        key: Option<(String, Pos)>,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    root: Option<Node>,
    anchors: HashMap<usize, Node>,
    problems: Vec<TreeProblem>,
    done: bool,
}

impl Builder {
    fn complete(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => {
                if !self.done {
                    self.root = Some(node);
                    self.done = true;
                }
            }
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => {
                    let text = match node.kind {
                        NodeKind::Scalar { text, .. } => text,
                        _ => {
                            self.problems.push(TreeProblem {
                                pos: node.pos,
                                message: "a map key must be plain text, not a list or a map".into(),
                                hint: "write keys as `name: value`".into(),
                            });
                            String::from("?")
                        }
                    };
                    *key = Some((text, node.pos));
                }
                Some((k, key_pos)) => {
                    if entries.iter().any(|e| e.key == k) {
                        self.problems.push(TreeProblem {
                            pos: key_pos,
                            message: format!("key `{k}` appears twice in the same map"),
                            hint: "keep only one of them; the second would silently win".into(),
                        });
                    } else {
                        entries.push(Entry {
                            key: k,
                            key_pos,
                            value: node,
                        });
                    }
                }
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = Pos::from_marker(&mark);
        match ev {
            Event::Scalar(text, style, anchor, _tag) => {
                let plain = style == TScalarStyle::Plain;
                self.complete(
                    Node {
                        kind: NodeKind::Scalar { text, plain },
                        pos,
                    },
                    anchor,
                );
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq {
                pos,
                anchor,
                items: Vec::new(),
            }),
            Event::MappingStart(anchor, _) => self.stack.push(Frame::Map {
                pos,
                anchor,
                entries: Vec::new(),
                key: None,
            }),
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Frame::Seq { pos, anchor, items }) => (
                        Node {
                            kind: NodeKind::Seq(items),
                            pos,
                        },
                        anchor,
                    ),
                    Some(Frame::Map {
                        pos,
                        anchor,
                        entries,
                        ..
                    }) => (
                        Node {
                            // A block map's start mark sits after its first key; point at
                            // the first key instead, where a person sees the map begin.
                            pos: entries.first().map_or(pos, |e| e.key_pos),
                            kind: NodeKind::Map(entries),
                        },
                        anchor,
                    ),
                    None => return,
                };
                self.complete(node, anchor);
            }
            Event::Alias(id) => {
                let node = match self.anchors.get(&id) {
                    Some(n) => Node {
                        kind: n.kind.clone(),
                        pos,
                    },
                    None => Node {
                        kind: NodeKind::Skip,
                        pos,
                    },
                };
                self.complete(node, 0);
            }
            Event::DocumentStart
            | Event::DocumentEnd
            | Event::StreamStart
            | Event::StreamEnd
            | Event::Nothing => {}
        }
    }
}

/// Where each value path sits in the file.
#[derive(Debug, Clone, Default)]
pub struct Locations {
    values: HashMap<String, Pos>,
    keys: HashMap<String, Pos>,
    /// Paths whose value is null (`key:` with nothing, `~`) or was set aside.
    nulls: HashSet<String>,
}

impl Locations {
    pub fn of(root: &Node) -> Locations {
        let mut loc = Locations::default();
        fn walk(n: &Node, path: &mut Vec<Seg>, loc: &mut Locations) {
            loc.values.insert(path_string(path), n.pos);
            if n.is_null() {
                loc.nulls.insert(path_string(path));
            }
            match &n.kind {
                NodeKind::Map(entries) => {
                    for e in entries {
                        path.push(Seg::Key(e.key.clone()));
                        loc.keys.insert(path_string(path), e.key_pos);
                        walk(&e.value, path, loc);
                        path.pop();
                    }
                }
                NodeKind::Seq(items) => {
                    for (i, item) in items.iter().enumerate() {
                        path.push(Seg::Index(i));
                        walk(item, path, loc);
                        path.pop();
                    }
                }
                _ => {}
            }
        }
        walk(root, &mut Vec::new(), &mut loc);
        loc
    }

    /// True when the file has a value at `path`.
    pub fn has(&self, path: &str) -> bool {
        self.values.contains_key(path)
    }

    /// True when the file has a value at `path` that is not null.
    pub fn is_set(&self, path: &str) -> bool {
        self.has(path) && !self.nulls.contains(path)
    }

    /// The position of the value at `path`; for a path that is not in the file, the position
    /// of the nearest enclosing value that is (so a missing key points at its parent map).
    pub fn value(&self, path: &str) -> Pos {
        let mut p = path;
        loop {
            if let Some(pos) = self.values.get(p) {
                return *pos;
            }
            match parent_path(p) {
                Some(parent) => p = parent,
                None => return Pos { line: 1, column: 1 },
            }
        }
    }

    /// The position of the key of `path` (falls back to [`Locations::value`]).
    pub fn key(&self, path: &str) -> Pos {
        self.keys
            .get(path)
            .copied()
            .unwrap_or_else(|| self.value(path))
    }
}

fn parent_path(p: &str) -> Option<&str> {
    if p.is_empty() {
        return None;
    }
    let cut = p.rfind(['.', '[']).unwrap_or(0);
    Some(&p[..cut])
}

// ---------------------------------------------------------------------------------------------
// serde over the tree

/// A deserialization error with the path and position of the node it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct DeError {
    pub message: String,
    pub path: Option<Vec<Seg>>,
    pub pos: Pos,
    /// Set for an unknown key: the key and the keys this level accepts.
    pub unknown: Option<(String, &'static [&'static str])>,
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            message: msg.to_string(),
            path: None,
            pos: Pos::default(),
            unknown: None,
        }
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        DeError {
            message: format!("unknown key `{field}`"),
            path: None,
            pos: Pos::default(),
            unknown: Some((field.to_string(), expected)),
        }
    }

    fn invalid_type(unexp: de::Unexpected, exp: &dyn de::Expected) -> Self {
        let found = match unexp {
            de::Unexpected::Seq => "a list".to_string(),
            de::Unexpected::Map => "a map".to_string(),
            de::Unexpected::Unit => "nothing".to_string(),
            other => other.to_string(),
        };
        Self::custom(format!("expected {exp}, found {found}"))
    }
}

impl DeError {
    fn locate(mut self, path: &[Seg], pos: Pos) -> Self {
        if self.path.is_none() {
            self.path = Some(path.to_vec());
            self.pos = pos;
        }
        self
    }
}

/// The keys serde accepts for the struct `T` (its field names, renames applied), asked of
/// the derived `Deserialize` itself so that no list has to mirror the struct.
pub fn fields_of<T: de::DeserializeOwned>() -> &'static [&'static str] {
    match T::deserialize(FieldsProbe) {
        Err(Fields(f)) => f,
        Ok(_) => &[],
    }
}

/// A deserializer that only records the fields a struct asks for.
struct FieldsProbe;

#[derive(Debug)]
struct Fields(&'static [&'static str]);

impl fmt::Display for Fields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fields: {}", self.0.join(", "))
    }
}

impl std::error::Error for Fields {}

impl de::Error for Fields {
    fn custom<T: fmt::Display>(_msg: T) -> Self {
        Fields(&[])
    }
}

impl<'de> de::Deserializer<'de> for FieldsProbe {
    type Error = Fields;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Fields> {
        Err(Fields(&[]))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Fields> {
        Err(Fields(fields))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// Deserializes `T` from `root`, collecting every error: after each one the offending part is
/// set aside and reading starts again, so one run reports all unknown keys and shape errors.
pub fn from_tree<T: de::DeserializeOwned>(
    mut root: Node,
    base: &[Seg],
) -> (Option<T>, Vec<DeError>) {
    let mut errors = Vec::new();
    for _ in 0..500 {
        let result = T::deserialize(NodeDe {
            node: &root,
            path: base.to_vec(),
        });
        match result {
            Ok(v) => return (Some(v), errors),
            Err(e) => {
                // Paths in errors are absolute; the tree is rooted at `base`.
                let mut local = e.clone();
                if let Some(p) = &e.path {
                    local.path = Some(p.get(base.len()..).unwrap_or_default().to_vec());
                }
                let changed = root.poison(&local);
                errors.push(e);
                if !changed {
                    return (None, errors);
                }
            }
        }
    }
    (None, errors)
}

struct NodeDe<'a> {
    node: &'a Node,
    path: Vec<Seg>,
}

impl<'a> NodeDe<'a> {
    fn wrap<T>(&self, r: Result<T, DeError>) -> Result<T, DeError> {
        r.map_err(|e| e.locate(&self.path, self.node.pos))
    }

    fn any<V: Visitor<'a>>(&self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.kind {
            NodeKind::Scalar { text, plain } => {
                if !*plain {
                    return visitor.visit_borrowed_str(text);
                }
                if self.node.is_null() {
                    return visitor.visit_unit();
                }
                match text.as_str() {
                    "true" | "True" | "TRUE" => return visitor.visit_bool(true),
                    "false" | "False" | "FALSE" => return visitor.visit_bool(false),
                    _ => {}
                }
                if let Ok(i) = text.parse::<i64>() {
                    return visitor.visit_i64(i);
                }
                if looks_numeric(text)
                    && let Ok(f) = text.parse::<f64>()
                {
                    return visitor.visit_f64(f);
                }
                visitor.visit_borrowed_str(text)
            }
            NodeKind::Seq(items) => visitor.visit_seq(SeqAcc {
                items: items.iter().enumerate(),
                path: &self.path,
            }),
            NodeKind::Map(entries) => visitor.visit_map(MapAcc {
                entries: entries.iter(),
                value: None,
                path: &self.path,
            }),
            NodeKind::Skip => visitor.visit_unit(),
        }
    }
}

fn looks_numeric(t: &str) -> bool {
    let t = t.trim_start_matches(['-', '+']);
    t.starts_with(|c: char| c.is_ascii_digit())
        || (t.starts_with('.') && t[1..].starts_with(|c: char| c.is_ascii_digit()))
}

impl<'de> de::Deserializer<'de> for NodeDe<'de> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = self.any(visitor);
        self.wrap(r)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.node.is_null() {
            return visitor.visit_none();
        }
        let path = self.path.clone();
        let pos = self.node.pos;
        visitor.visit_some(self).map_err(|e| e.locate(&path, pos))
    }

    /// Every scalar reads as text (numbers included); `validate` gives it its type, with a
    /// message that fits the field.
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = match &self.node.kind {
            NodeKind::Scalar { text, .. } => visitor.visit_borrowed_str(text.as_str()),
            _ => self.any(visitor),
        };
        self.wrap(r)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_map(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = match &self.node.kind {
            NodeKind::Skip => visitor.visit_map(MapAcc {
                entries: [].iter(),
                value: None,
                path: &self.path,
            }),
            _ => self.any(visitor),
        };
        self.wrap(r)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = match &self.node.kind {
            NodeKind::Skip => visitor.visit_seq(SeqAcc {
                items: [].iter().enumerate(),
                path: &self.path,
            }),
            _ => self.any(visitor),
        };
        self.wrap(r)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char
        bytes byte_buf unit unit_struct newtype_struct tuple
        tuple_struct enum
    }
}

struct SeqAcc<'a, I> {
    items: I,
    path: &'a [Seg],
}

impl<'de, I: Iterator<Item = (usize, &'de Node)>> SeqAccess<'de> for SeqAcc<'_, I> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            None => Ok(None),
            Some((i, node)) => {
                let mut path = self.path.to_vec();
                path.push(Seg::Index(i));
                seed.deserialize(NodeDe { node, path }).map(Some)
            }
        }
    }
}

struct MapAcc<'a, 'de> {
    entries: std::slice::Iter<'de, Entry>,
    value: Option<&'de Entry>,
    path: &'a [Seg],
}

impl<'de> MapAccess<'de> for MapAcc<'_, 'de> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match self.entries.next() {
            None => Ok(None),
            Some(e) => {
                self.value = Some(e);
                let mut path = self.path.to_vec();
                path.push(Seg::Key(e.key.clone()));
                let key = de::value::BorrowedStrDeserializer::<'de, DeError>::new(&e.key);
                seed.deserialize(key)
                    .map(Some)
                    .map_err(|err| err.locate(&path, e.key_pos))
            }
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let Some(e) = self.value.take() else {
            return Err(de::Error::custom("value without a key"));
        };
        let mut path = self.path.to_vec();
        path.push(Seg::Key(e.key.clone()));
        seed.deserialize(NodeDe {
            node: &e.value,
            path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_for_keys_and_values() {
        let text = "name: x\nmethod:\n  - target: payments\n    fault: latency\n";
        let (root, problems) = parse_tree(text).unwrap();
        assert!(problems.is_empty());
        let loc = Locations::of(&root.unwrap());
        assert_eq!(loc.key("name"), Pos { line: 1, column: 1 });
        assert_eq!(loc.value("name"), Pos { line: 1, column: 7 });
        assert_eq!(loc.key("method[0].fault"), Pos { line: 4, column: 5 });
        assert_eq!(
            loc.value("method[0].target"),
            Pos {
                line: 3,
                column: 13
            }
        );
        // a missing key points at its enclosing map
        assert_eq!(loc.value("method[0].duration"), Pos { line: 3, column: 5 });
    }

    #[test]
    fn malformed_yaml_is_located() {
        let err = parse_tree("name: x\nmethod: [a, b\n").unwrap_err();
        assert!(err.pos.line >= 2, "{err:?}");
        assert!(err.message.contains("not valid YAML"));
    }

    #[test]
    fn duplicate_keys_are_reported() {
        let (_, problems) = parse_tree("a: 1\nb: 2\na: 3\n").unwrap();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].pos, Pos { line: 3, column: 1 });
    }

    #[test]
    fn fields_come_from_the_derived_struct() {
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        struct S {
            a: Option<String>,
            #[serde(rename = "type")]
            kind: Option<String>,
        }
        assert_eq!(fields_of::<S>(), ["a", "type"]);
    }

    #[test]
    fn set_values_are_not_null() {
        let (root, _) = parse_tree("a: 1\nb:\nc: ~\n").unwrap();
        let loc = Locations::of(&root.unwrap());
        assert!(loc.is_set("a"));
        assert!(loc.has("b") && !loc.is_set("b"));
        assert!(!loc.is_set("c") && !loc.is_set("d"));
    }

    #[test]
    fn path_strings() {
        let p = [
            Seg::Key("method".into()),
            Seg::Index(1),
            Seg::Key("target".into()),
        ];
        assert_eq!(path_string(&p), "method[1].target");
        assert_eq!(parent_path("method[1].target"), Some("method[1]"));
        assert_eq!(parent_path("method[1]"), Some("method"));
        assert_eq!(parent_path("method"), Some(""));
    }
}
