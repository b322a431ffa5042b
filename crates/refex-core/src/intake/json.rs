//! The one JSON reading of a referral's signed claims: strict about duplicate members.
//!
//! `serde_json` keeps the last of two members with the same name, while a typed
//! deserialisation refuses them; a referral read one way at intake and the other way at review
//! could be accepted and then become unreadable (or, worse, be read differently). Every
//! reading of claims goes through [`parse_strict`], which refuses a duplicate member and names
//! where it is. Nesting is bounded by `serde_json`'s own recursion limit (128). The cost is
//! linear in the document: the path to the current node is one shared stack of segments, and
//! a pointer is rendered only for the duplicate found (an earlier version built every node's
//! pointer, so a long key above a long array cost their product).

use std::cell::RefCell;
use std::fmt;

use serde::de::{DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Why a document was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum StrictJsonError {
    /// Not JSON at all (or nested too deep, or trailing bytes).
    #[error("not a JSON document")]
    Syntax,
    /// An object names the same member twice.
    #[error("member {pointer} appears more than once")]
    Duplicate {
        /// The RFC 6901 pointer of the repeated member.
        pointer: String,
    },
}

/// Parses `bytes` as one JSON value, refusing any object with a repeated member name.
pub fn parse_strict(bytes: &[u8]) -> Result<Value, StrictJsonError> {
    let duplicate = RefCell::new(None);
    let path = RefCell::new(Vec::new());
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = Node {
        path: &path,
        duplicate: &duplicate,
    }
    .deserialize(&mut de)
    .and_then(|v| de.end().map(|()| v));
    match (parsed, duplicate.into_inner()) {
        (_, Some(pointer)) => Err(StrictJsonError::Duplicate { pointer }),
        (Ok(v), None) => Ok(v),
        (Err(_), None) => Err(StrictJsonError::Syntax),
    }
}

/// One step from a node to a child.
enum Segment {
    /// An array element.
    Index(usize),
    /// An object member.
    Name(String),
}

/// One node of the document; `path` is the stack of segments from the root to it.
struct Node<'a> {
    path: &'a RefCell<Vec<Segment>>,
    duplicate: &'a RefCell<Option<String>>,
}

fn escape(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

/// The RFC 6901 pointer of `path` followed by `last`.
fn pointer(path: &[Segment], last: &str) -> String {
    let mut out = String::new();
    for segment in path {
        out.push('/');
        match segment {
            Segment::Index(i) => out.push_str(&i.to_string()),
            Segment::Name(n) => out.push_str(&escape(n)),
        }
    }
    out.push('/');
    out.push_str(&escape(last));
    out
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("not a finite number"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        loop {
            self.path.borrow_mut().push(Segment::Index(out.len()));
            let child = Node {
                path: self.path,
                duplicate: self.duplicate,
            };
            let next = seq.next_element_seed(child);
            self.path.borrow_mut().pop();
            match next? {
                Some(v) => out.push(v),
                None => return Ok(Value::Array(out)),
            }
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            if out.contains_key(&name) {
                *self.duplicate.borrow_mut() = Some(pointer(&self.path.borrow(), &name));
                return Err(A::Error::custom("duplicate member"));
            }
            self.path.borrow_mut().push(Segment::Name(name.clone()));
            let value = map.next_value_seed(Node {
                path: self.path,
                duplicate: self.duplicate,
            });
            self.path.borrow_mut().pop();
            out.insert(name, value?);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duplicate_member_is_refused_with_its_pointer() {
        assert_eq!(
            parse_strict(br#"{"iss":"a","aud":"refex","aud":"other"}"#),
            Err(StrictJsonError::Duplicate {
                pointer: "/aud".into()
            })
        );
        assert_eq!(
            parse_strict(br#"{"referral":{"to":["x"],"payload":{"a/b":{"k":1,"k":2}}}}"#),
            Err(StrictJsonError::Duplicate {
                pointer: "/referral/payload/a~1b/k".into()
            })
        );
        assert_eq!(
            parse_strict(br#"{"list":[{"a":1},{"a":1,"a":1}]}"#),
            Err(StrictJsonError::Duplicate {
                pointer: "/list/1/a".into()
            })
        );
    }

    #[test]
    fn it_reads_what_serde_json_reads_otherwise() {
        let text = br#"{"a":[1,-2,3.5,"x",null,true,{"b":{}}],"c":"\u00e9"}"#;
        assert_eq!(
            parse_strict(text).unwrap(),
            serde_json::from_slice::<Value>(text).unwrap()
        );
        assert_eq!(parse_strict(b"{} trailing"), Err(StrictJsonError::Syntax));
        assert_eq!(parse_strict(b"{\"a\":"), Err(StrictJsonError::Syntax));
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert_eq!(parse_strict(deep.as_bytes()), Err(StrictJsonError::Syntax));
    }

    /// The shape an outside tester used to cost seconds of CPU (a long key above a long
    /// array; the cost is linear now, measured by `refex bench`, not asserted here): the
    /// pointer of a duplicate deep inside it is still exact.
    #[test]
    fn a_duplicate_under_a_long_key_and_a_long_array_is_named_exactly() {
        let key = "k/~".repeat(1_000);
        let zeros = vec!["0"; 20_000].join(",");
        let doc = format!(r#"{{"{key}":[{zeros},{{"a":1,"a":2}}]}}"#);
        assert_eq!(
            parse_strict(doc.as_bytes()).unwrap_err(),
            StrictJsonError::Duplicate {
                pointer: format!("/{}/20000/a", "k~1~0".repeat(1_000))
            }
        );
    }
}
