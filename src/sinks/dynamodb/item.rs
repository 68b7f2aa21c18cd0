//! JSON values ⇄ DynamoDB attribute values, and the key of a record (pure, no I/O).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Map, Value};

use super::config::KeySchema;
use crate::event::Change;

/// Numbers as N, booleans as BOOL, null as NULL, objects as M, arrays as L, strings as S
/// (empty strings included: DynamoDB allows them outside keys).
pub fn to_attr(v: &Value) -> AttributeValue {
    match v {
        Value::Null => AttributeValue::Null(true),
        Value::Bool(b) => AttributeValue::Bool(*b),
        Value::Number(n) => AttributeValue::N(n.to_string()),
        Value::String(s) => AttributeValue::S(s.clone()),
        Value::Array(a) => AttributeValue::L(a.iter().map(to_attr).collect()),
        Value::Object(m) => {
            AttributeValue::M(m.iter().map(|(k, v)| (k.clone(), to_attr(v))).collect())
        }
    }
}

/// The inverse of [`to_attr`] (N as a JSON number), for reading back (tests, keys).
pub fn from_attr(a: &AttributeValue) -> Value {
    match a {
        AttributeValue::Null(_) => Value::Null,
        AttributeValue::Bool(b) => Value::Bool(*b),
        AttributeValue::N(n) => serde_json::from_str(n).unwrap_or(Value::String(n.clone())),
        AttributeValue::S(s) => Value::String(s.clone()),
        AttributeValue::L(l) => Value::Array(l.iter().map(from_attr).collect()),
        AttributeValue::M(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), from_attr(v)))
                .collect::<Map<_, _>>(),
        ),
        AttributeValue::Ss(s) => Value::Array(s.iter().cloned().map(Value::String).collect()),
        _ => Value::Null,
    }
}

/// The key attributes of a change's record: the partition key (`id` is the record id when the
/// record has no `id` field) and the sort key. A missing or unusable one names the record.
pub fn key_of(c: &Change, keys: &KeySchema) -> Result<HashMap<String, AttributeValue>, String> {
    let mut out = HashMap::new();
    for (name, role) in std::iter::once((&keys.partition, "partition key"))
        .chain(keys.sort.as_ref().map(|s| (s, "sort key")))
    {
        let v = match c.data.get(name) {
            Some(v) => v.clone(),
            None if name == "id" => Value::String(c.id.clone()),
            None => {
                return Err(format!(
                    "record '{}' has no '{name}', the {role} of table '{}'; add the field or map it with a transform",
                    c.id, c.dest
                ))
            }
        };
        let attr = match &v {
            Value::String(s) if !s.is_empty() => AttributeValue::S(s.clone()),
            Value::Number(n) => AttributeValue::N(n.to_string()),
            other => {
                return Err(format!(
                    "record '{}': '{name}' (the {role} of table '{}') must be a non-empty string or a number, got {other}",
                    c.id, c.dest
                ))
            }
        };
        out.insert(name.clone(), attr);
    }
    Ok(out)
}

/// The full item of an insert or update: every field, plus the key attributes.
pub fn item_of(
    c: &Change,
    key: &HashMap<String, AttributeValue>,
) -> HashMap<String, AttributeValue> {
    let mut item: HashMap<String, AttributeValue> = c
        .data
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), to_attr(v)))
        .collect();
    item.extend(key.iter().map(|(k, v)| (k.clone(), v.clone())));
    item
}

/// A stable text form of a key, to find two writes of one item.
pub fn key_text(table: &str, key: &HashMap<String, AttributeValue>) -> String {
    let mut parts: Vec<String> = key
        .iter()
        .map(|(k, v)| format!("{k}={}", from_attr(v)))
        .collect();
    parts.sort();
    format!("{table}\u{0}{}", parts.join("\u{0}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Op;
    use serde_json::json;

    fn change(data: Value) -> Change {
        Change {
            seq: 1,
            change_id: "0000000000000000:1".into(),
            op: Op::Inserted,
            resource: "orders".into(),
            dest: "Orders".into(),
            id: "o1".into(),
            data,
            before: None,
            ts_ms: 0,
        }
    }

    #[test]
    fn values_keep_their_types() {
        let v = json!({ "n": 1.5, "i": 7, "b": true, "z": null, "s": "", "l": [1, "x"], "m": { "k": [false] } });
        assert_eq!(from_attr(&to_attr(&v)), v);
        assert_eq!(to_attr(&json!(3)), AttributeValue::N("3".into()));
    }

    #[test]
    fn keys_come_from_the_record() {
        let plain = KeySchema::default();
        let k = key_of(&change(json!({ "name": "x" })), &plain).unwrap();
        assert_eq!(k["id"], AttributeValue::S("o1".into()));
        let composite = KeySchema {
            partition: "customerId".into(),
            sort: Some("orderId".into()),
        };
        let k = key_of(
            &change(json!({ "customerId": "c1", "orderId": 9 })),
            &composite,
        )
        .unwrap();
        assert_eq!(k["orderId"], AttributeValue::N("9".into()));
        let e = key_of(&change(json!({ "customerId": "c1" })), &composite).unwrap_err();
        assert!(
            e.contains("has no 'orderId', the sort key of table 'Orders'"),
            "{e}"
        );
        assert!(key_of(
            &change(json!({ "customerId": "", "orderId": 1 })),
            &composite
        )
        .is_err());
    }
}
