//! The order in which a schema file writes its properties. `serde_json::Value` keeps object
//! keys sorted, which would put "Address" before "Name" on every page; people read a
//! referral in the order its schema's author wrote it. This reads the file once more,
//! keeping each `properties` object's keys in written order, by the object's location.

use std::collections::HashMap;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// Each `properties` object's keys in written order, by the JSON pointer (into the schema) of
/// the object holding `properties`.
#[derive(Clone, Debug, Default)]
pub struct PropertyOrder(HashMap<String, Vec<String>>);

impl PropertyOrder {
    /// Reads the order from a schema file's bytes (already known to be JSON).
    pub fn read(bytes: &[u8]) -> Self {
        let mut out = HashMap::new();
        if let Ok(node) = serde_json::from_slice::<Node>(bytes) {
            collect(&node, String::new(), &mut out);
        }
        PropertyOrder(out)
    }

    /// The keys of `properties` in the schema object at `at`, in written order (empty when
    /// unknown: callers then keep their own order).
    pub fn keys(&self, at: &str) -> &[String] {
        self.0.get(at).map_or(&[], Vec::as_slice)
    }
}

/// JSON with object keys in document order (only what ordering needs).
enum Node {
    Object(Vec<(String, Node)>),
    Array(Vec<Node>),
    Scalar,
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn collect(node: &Node, at: String, out: &mut HashMap<String, Vec<String>>) {
    match node {
        Node::Object(fields) => {
            for (key, value) in fields {
                if key == "properties" {
                    if let Node::Object(props) = value {
                        out.insert(at.clone(), props.iter().map(|(k, _)| k.clone()).collect());
                    }
                }
                collect(value, format!("{at}/{}", escape(key)), out);
            }
        }
        Node::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                collect(item, format!("{at}/{i}"), out);
            }
        }
        Node::Scalar => {}
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_str<E>(self, _: &str) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut fields = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Node>()? {
            fields.push((k, v));
        }
        Ok(Node::Object(fields))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_in_written_order_at_every_depth() {
        let order = PropertyOrder::read(
            br#"{"properties":{"zeta":{"properties":{"b":{},"a":{}}},"alpha":{"items":{"properties":{"y":{},"x":{}}}}}}"#,
        );
        assert_eq!(order.keys(""), ["zeta", "alpha"]);
        assert_eq!(order.keys("/properties/zeta"), ["b", "a"]);
        assert_eq!(order.keys("/properties/alpha/items"), ["y", "x"]);
        assert!(order.keys("/nowhere").is_empty());
    }
}
