//! Where each YAML node sits in the source, so that every validation error can name `file:line:col`.
//!
//! serde_yaml gives typed values but no positions, so the same text is walked once more with saphyr's event
//! parser. Nodes are addressed by paths such as `steps[2].needs[0]` or `plugins.local`; a key's own position is
//! kept apart from its value's, because "duplicate key" points at the key and "unknown store" at the value.

use std::collections::{HashMap, HashSet};

use saphyr_parser::{Event, Parser, ScalarStyle};

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl Pos {
    pub const START: Pos = Pos { line: 1, col: 1 };
}

/// Positions of the nodes of one YAML document.
#[derive(Debug, Default)]
pub struct SourceMap {
    values: HashMap<String, Pos>,
    keys: HashMap<String, Pos>,
    /// Keys that appear twice in one mapping: (path of the second key, its position).
    pub duplicate_keys: Vec<(String, Pos)>,
    /// The YAML documents of the text, in order (a workflow must have exactly one).
    pub documents: Vec<Document>,
    /// True when the whole text was parsed; false after a syntax error (positions then stop there).
    pub complete: bool,
}

/// One YAML document of the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Document {
    /// Where the document starts: its `---`, or its first node when the start is implicit.
    pub start: Pos,
    /// True when the document holds no node, or only a null scalar (`~`, `null` or nothing).
    pub empty: bool,
}

impl SourceMap {
    /// True when the text parsed and holds nothing but comments, blank lines, document markers and nulls.
    pub fn is_empty_document(&self) -> bool {
        self.complete && self.documents.iter().all(|d| d.empty)
    }
}

enum Frame {
    Map {
        path: String,
        key: Option<String>,
        seen: HashSet<String>,
    },
    Seq {
        path: String,
        next: usize,
    },
}

fn child(parent: &str, segment: &str) -> String {
    if parent.is_empty() {
        segment.to_string()
    } else {
        format!("{parent}.{segment}")
    }
}

impl SourceMap {
    /// Walks `text`. A text that saphyr cannot parse yields the positions read up to the error; the caller has
    /// already reported the syntax error through serde_yaml.
    pub fn build(text: &str) -> SourceMap {
        let mut map = SourceMap::default();
        let mut stack: Vec<Frame> = Vec::new();
        let mut parser = Parser::new_from_str(text);
        loop {
            let (event, span) = match parser.next_event() {
                Some(Ok(next)) => next,
                Some(Err(_)) => break,
                None => {
                    map.complete = true;
                    break;
                }
            };
            let pos = Pos {
                line: span.start.line(),
                col: span.start.col() + 1,
            };
            match &event {
                Event::DocumentStart(_) => map.documents.push(Document {
                    start: pos,
                    empty: true,
                }),
                Event::StreamEnd => {
                    map.complete = true;
                    break;
                }
                _ => {}
            }
            let is_node = matches!(
                event,
                Event::Scalar(..)
                    | Event::Alias(_)
                    | Event::SequenceStart(..)
                    | Event::MappingStart(..)
            );
            if is_node {
                if stack.is_empty()
                    && let Some(doc) = map.documents.last_mut()
                {
                    doc.empty = matches!(
                        &event,
                        Event::Scalar(v, ScalarStyle::Plain, ..) if is_null(v)
                    );
                }
                // A scalar in key position of a mapping is a key, not a value.
                if let Some(Frame::Map { path, key, seen }) = stack.last_mut()
                    && key.is_none()
                {
                    let name = match &event {
                        Event::Scalar(v, ..) => v.to_string(),
                        _ => "?".to_string(),
                    };
                    let key_path = child(path, &name);
                    // Only plain keys can be compared by text; `<<` merge keys may legitimately repeat.
                    let comparable = matches!(event, Event::Scalar(..)) && name != "<<";
                    if comparable && !seen.insert(name.clone()) {
                        map.duplicate_keys.push((key_path.clone(), pos));
                    }
                    map.keys.entry(key_path).or_insert(pos);
                    *key = Some(name);
                    // A complex (non-scalar) key still opens a container; track it under the `?` key.
                    if !matches!(event, Event::Scalar(..) | Event::Alias(_)) {
                        stack.push(Frame::Seq {
                            path: String::from("?"),
                            next: 0,
                        });
                    }
                    continue;
                }
                let path = match stack.last_mut() {
                    None => String::new(),
                    Some(Frame::Map { path, key, .. }) => {
                        child(path, key.as_deref().unwrap_or("?"))
                    }
                    Some(Frame::Seq { path, next }) => {
                        *next += 1;
                        format!("{path}[{}]", *next - 1)
                    }
                };
                map.values.entry(path.clone()).or_insert(pos);
                match event {
                    Event::SequenceStart(..) => stack.push(Frame::Seq { path, next: 0 }),
                    Event::MappingStart(..) => stack.push(Frame::Map {
                        path,
                        key: None,
                        seen: HashSet::new(),
                    }),
                    _ => finish_value(&mut stack),
                }
            } else if matches!(event, Event::SequenceEnd | Event::MappingEnd) {
                stack.pop();
                finish_value(&mut stack);
            }
        }
        map
    }

    /// Position of the value at `path`, or of the nearest enclosing node that has one.
    pub fn value(&self, path: &str) -> Pos {
        let mut p = path;
        loop {
            if let Some(pos) = self.values.get(p) {
                return *pos;
            }
            match parent(p) {
                Some(up) => p = up,
                None => return Pos::START,
            }
        }
    }

    /// Position of the key at `path` (e.g. `params.region`), falling back to its value.
    pub fn key(&self, path: &str) -> Pos {
        self.keys
            .get(path)
            .copied()
            .unwrap_or_else(|| self.value(path))
    }
}

fn is_null(plain: &str) -> bool {
    matches!(plain, "" | "~" | "null" | "Null" | "NULL")
}

/// After a value is complete, a mapping parent waits for its next key.
fn finish_value(stack: &mut [Frame]) {
    if let Some(Frame::Map { key, .. }) = stack.last_mut() {
        *key = None;
    }
}

fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    let cut = path.rfind(['.', '[']).unwrap_or(0);
    Some(&path[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "name: a\nsteps:\n  - id: one\n    needs: [two, three]\n  - id: two\nplugins:\n  local: x\n  local: y\n";

    #[test]
    fn finds_nested_values_and_keys() {
        let map = SourceMap::build(DOC);
        assert_eq!(map.value("name"), Pos { line: 1, col: 7 });
        assert_eq!(map.value("steps[0].id"), Pos { line: 3, col: 9 });
        assert_eq!(map.value("steps[0].needs[1]"), Pos { line: 4, col: 18 });
        assert_eq!(map.value("steps[1].id"), Pos { line: 5, col: 9 });
        assert_eq!(map.key("plugins.local"), Pos { line: 7, col: 3 });
    }

    #[test]
    fn falls_back_to_the_enclosing_node() {
        let map = SourceMap::build(DOC);
        assert_eq!(map.value("steps[0].with.image"), map.value("steps[0]"));
    }

    #[test]
    fn reports_duplicate_keys() {
        let map = SourceMap::build(DOC);
        assert_eq!(
            map.duplicate_keys,
            vec![("plugins.local".to_string(), Pos { line: 8, col: 3 })]
        );
    }
}
