//! Strict JSON for policy files: a document tree that keeps object members in
//! the order written and refuses a key given twice in one object.
//!
//! `serde_json::Value` keeps the last of two equal keys, so
//! `{"type":"reject","type":"insecureAcceptAnything"}` read as "accept
//! anything". Here the serde visitor sees every key as it streams past and
//! fails on the second one, naming the key and where in the policy it is
//! (containers/image refuses such files too). Everything above this module
//! reads [`Node`]s through [`Obj`], whose accessors name the field in every
//! error.

use std::collections::HashSet;
use std::fmt;

use anyhow::{bail, Result};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

/// A JSON value whose objects have no duplicate keys.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, as serde_json printed it (policies use none; kept for messages).
    Number(String),
    /// A string.
    String(String),
    /// An array.
    Array(Vec<Node>),
    /// Members in the order written; keys are unique.
    Object(Vec<(String, Node)>),
}

impl Node {
    /// What kind of value this is, for messages ("a string", "null"…).
    pub fn kind(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Bool(_) => "a boolean",
            Node::Number(_) => "a number",
            Node::String(_) => "a string",
            Node::Array(_) => "an array",
            Node::Object(_) => "an object",
        }
    }

    /// The same value as a tree (a `serde_json::Value` cannot hold duplicate keys).
    pub fn from_value(v: &serde_json::Value) -> Node {
        use serde_json::Value;
        match v {
            Value::Null => Node::Null,
            Value::Bool(b) => Node::Bool(*b),
            Value::Number(n) => Node::Number(n.to_string()),
            Value::String(s) => Node::String(s.clone()),
            Value::Array(a) => Node::Array(a.iter().map(Node::from_value).collect()),
            Value::Object(o) => Node::Object(o.iter().map(|(k, v)| (k.clone(), Node::from_value(v))).collect()),
        }
    }
}

/// Parses a whole document, refusing duplicate keys anywhere in it.
pub fn parse(bytes: &[u8]) -> Result<Node, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let node = NodeSeed { at: &At::ROOT }.deserialize(&mut de)?;
    de.end()?;
    Ok(node)
}

/// One step from the document root to a value.
#[derive(Clone, Copy)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// Where a value sits, as a chain of steps back to the root (built on the
/// stack while streaming; only rendered when a duplicate is found).
struct At<'a> {
    parent: Option<&'a At<'a>>,
    step: Option<Step<'a>>,
}

impl At<'static> {
    const ROOT: At<'static> = At { parent: None, step: None };
}

impl At<'_> {
    fn steps(&self) -> Vec<Step<'_>> {
        let mut out = Vec::new();
        let mut cur = Some(self);
        while let Some(at) = cur {
            out.extend(at.step);
            cur = at.parent;
        }
        out.reverse();
        out
    }

    /// The message for `key` appearing twice in the object at `self`, in the
    /// policy's own words where the position is a known one.
    fn duplicate(&self, key: &str) -> String {
        let steps = self.steps();
        match steps.as_slice() {
            [Step::Key("transports")] => format!("transport {key:?} is given twice"),
            [Step::Key("transports"), Step::Key(t)] => format!("scope {key:?} is given twice in transport {t:?}"),
            _ => format!("duplicate key {key:?} in {}", place(&steps)),
        }
    }
}

/// `default, requirement 1, field "signedIdentity"` and the like.
fn place(steps: &[Step<'_>]) -> String {
    let (mut out, rest) = match steps {
        [] => return "the policy's top level".to_string(),
        [Step::Key("default"), rest @ ..] => ("default".to_string(), rest),
        [Step::Key("transports"), Step::Key(t), Step::Key(s), rest @ ..] => {
            (format!("transport {t:?} scope {s:?}"), rest)
        }
        _ => (String::new(), steps),
    };
    let mut rest = rest;
    if let [Step::Index(i), tail @ ..] = rest {
        if !out.is_empty() {
            out.push_str(&format!(", requirement {}", i + 1));
            rest = tail;
        }
    }
    if !rest.is_empty() {
        let mut path = String::new();
        for s in rest {
            match s {
                Step::Key(k) if path.is_empty() => path.push_str(k),
                Step::Key(k) => path.push_str(&format!(".{k}")),
                Step::Index(i) => path.push_str(&format!("[{i}]")),
            }
        }
        if out.is_empty() {
            out = path;
        } else {
            out.push_str(&format!(", field {path:?}"));
        }
    }
    out
}

struct NodeSeed<'a> {
    at: &'a At<'a>,
}

impl<'de> DeserializeSeed<'de> for NodeSeed<'_> {
    type Value = Node;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NodeSeed<'_> {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Node, E> {
        Ok(Node::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Node, E> {
        Ok(Node::Number(n.to_string()))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Node, E> {
        Ok(Node::Number(n.to_string()))
    }
    fn visit_f64<E>(self, n: f64) -> Result<Node, E> {
        Ok(Node::Number(n.to_string()))
    }
    fn visit_str<E>(self, s: &str) -> Result<Node, E> {
        Ok(Node::String(s.to_string()))
    }
    fn visit_string<E>(self, s: String) -> Result<Node, E> {
        Ok(Node::String(s))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        loop {
            let at = At { parent: Some(self.at), step: Some(Step::Index(items.len())) };
            match seq.next_element_seed(NodeSeed { at: &at })? {
                Some(n) => items.push(n),
                None => return Ok(Node::Array(items)),
            }
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut seen = HashSet::new();
        let mut members = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format!(
                    "{} (containers/image refuses a policy with a duplicate key: which one would count is ambiguous)",
                    self.at.duplicate(&key)
                )));
            }
            let at = At { parent: Some(self.at), step: Some(Step::Key(&key)) };
            let value = map.next_value_seed(NodeSeed { at: &at })?;
            members.push((key, value));
        }
        Ok(Node::Object(members))
    }
}

/// An object being read as one kind of policy element (`what`, e.g.
/// `sigstoreSigned` or `fulcio`): typed field access whose errors name the field.
#[derive(Clone, Copy, Debug)]
pub struct Obj<'a> {
    members: &'a [(String, Node)],
    what: &'a str,
}

impl<'a> Obj<'a> {
    /// `node` as an object, or an error saying what it was instead.
    pub fn of(node: &'a Node, what: &'a str) -> Result<Obj<'a>> {
        match node {
            Node::Object(members) => Ok(Obj { members, what }),
            other => bail!("{what} must be a JSON object, not {}", other.kind()),
        }
    }

    /// The keys, in the order written.
    pub fn keys(&self) -> impl Iterator<Item = &'a str> {
        self.members.iter().map(|(k, _)| k.as_str())
    }

    /// The members, in the order written.
    pub fn members(&self) -> &'a [(String, Node)] {
        self.members
    }

    /// Fails on the first key not in `allowed`, naming it.
    pub fn only(&self, allowed: &[&str]) -> Result<()> {
        if let Some(k) = self.keys().find(|k| !allowed.contains(k)) {
            let expected: Vec<String> = allowed.iter().map(|a| format!("`{a}`")).collect();
            bail!("unknown field `{k}` in {} (expected one of {})", self.what, expected.join(", "));
        }
        Ok(())
    }

    /// The member `key`, if present.
    pub fn get(&self, key: &str) -> Option<&'a Node> {
        self.members.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// A string field; `null` or another type is an error.
    pub fn str(&self, key: &str) -> Result<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Node::String(s)) => Ok(Some(s)),
            Some(other) => bail!("{}: field {key:?} must be a string, not {}", self.what, other.kind()),
        }
    }

    /// An array-of-strings field.
    pub fn strs(&self, key: &str) -> Result<Option<Vec<&'a str>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Node::Array(items)) => items
                .iter()
                .map(|n| match n {
                    Node::String(s) => Ok(s.as_str()),
                    other => bail!("{}: field {key:?} must hold strings, not {}", self.what, other.kind()),
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some(other) => bail!("{}: field {key:?} must be an array of strings, not {}", self.what, other.kind()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dup(text: &str) -> String {
        parse(text.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn duplicate_keys_are_refused_where_they_are() {
        for (text, want) in [
            (r#"{"default":[],"default":[]}"#, r#"duplicate key "default" in the policy's top level"#),
            (
                r#"{"default":[{"type":"reject","type":"insecureAcceptAnything"}]}"#,
                r#"duplicate key "type" in default, requirement 1"#,
            ),
            (
                r#"{"transports":{"docker":{"r.io":[{"type":"reject"}],"r.io":[{"type":"insecureAcceptAnything"}]}}}"#,
                r#"scope "r.io" is given twice in transport "docker""#,
            ),
            (r#"{"transports":{"oci":{},"oci":{}}}"#, r#"transport "oci" is given twice"#),
            (
                r#"{"transports":{"docker":{"r.io":[{"type":"x"},{"type":"sigstoreSigned","signedIdentity":{"type":"a","type":"b"}}]}}}"#,
                r#"duplicate key "type" in transport "docker" scope "r.io", requirement 2, field "signedIdentity""#,
            ),
            (
                r#"{"default":[{"fulcio":{"caPath":"/a","caPath":"/b"}}]}"#,
                r#"duplicate key "caPath" in default, requirement 1, field "fulcio""#,
            ),
            (r#"[{"a":1,"a":1}]"#, r#"duplicate key "a" in [0]"#),
        ] {
            let err = dup(text);
            assert!(err.contains(want), "{text}: {err}");
            assert!(err.contains("line 1 column"), "{text}: serde_json says where: {err}");
        }
    }

    #[test]
    fn equal_keys_in_different_objects_are_fine() {
        let n = parse(br#"{"a":{"type":1},"b":{"type":2},"c":[{"type":3},{"type":4}]}"#).unwrap();
        let Node::Object(m) = n else { panic!() };
        assert_eq!(m.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["a", "b", "c"]);
    }

    #[test]
    fn fields_are_typed_and_named() {
        let n = parse(br#"{"s":"x","n":null,"l":["a",1],"o":{}}"#).unwrap();
        let o = Obj::of(&n, "thing").unwrap();
        assert_eq!(o.str("s").unwrap(), Some("x"));
        assert_eq!(o.str("missing").unwrap(), None);
        assert!(o.str("n").unwrap_err().to_string().contains("field \"n\" must be a string, not null"));
        assert!(o.strs("l").unwrap_err().to_string().contains("field \"l\" must hold strings, not a number"));
        assert!(o.only(&["s", "n", "l"]).unwrap_err().to_string().contains("unknown field `o` in thing"));
        assert!(Obj::of(&Node::Null, "signedIdentity").unwrap_err().to_string().contains("not null"));
    }
}
