//! JSON values → BSON documents (pure, no I/O): a record's document (`_id` = the record id,
//! values with their types) and its checks.

use mongodb::bson::{Bson, Document};
use serde_json::Value;

use crate::event::Change;

/// MongoDB's largest document (`maxBsonObjectSize`, the same on every server version).
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;

/// Integers as int32 when they fit (as the Node driver stores a JS number) else int64, other
/// numbers as double; booleans, null, arrays and objects (as embedded documents) as such.
pub fn to_bson(v: &Value) -> Bson {
    match v {
        Value::Null => Bson::Null,
        Value::Bool(b) => Bson::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => match i32::try_from(i) {
                Ok(small) => Bson::Int32(small),
                Err(_) => Bson::Int64(i),
            },
            None => Bson::Double(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Bson::String(s.clone()),
        Value::Array(a) => Bson::Array(a.iter().map(to_bson).collect()),
        Value::Object(m) => {
            Bson::Document(m.iter().map(|(k, v)| (k.clone(), to_bson(v))).collect())
        }
    }
}

/// The inverse of [`to_bson`] for the types it produces (reading back in tests).
#[cfg(test)]
pub fn from_bson(b: &Bson) -> Value {
    match b {
        Bson::Null => Value::Null,
        Bson::Boolean(b) => Value::Bool(*b),
        Bson::Int32(i) => Value::from(*i),
        Bson::Int64(i) => Value::from(*i),
        Bson::Double(d) => serde_json::Number::from_f64(*d).map_or(Value::Null, Value::Number),
        Bson::String(s) => Value::String(s.clone()),
        Bson::Array(a) => Value::Array(a.iter().map(from_bson).collect()),
        Bson::Document(d) => {
            Value::Object(d.iter().map(|(k, v)| (k.clone(), from_bson(v))).collect())
        }
        other => Value::String(other.to_string()),
    }
}

/// The first field name MongoDB refuses in a stored document: one starting with `$` (an
/// operator; MongoDB before 5.0 refuses them everywhere, later versions in replacements) or
/// holding a NUL (not encodable).
fn bad_field(v: &Value, path: &str) -> Option<String> {
    match v {
        Value::Object(m) => m.iter().find_map(|(k, v)| {
            let here = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            if k.starts_with('$') || k.contains('\0') {
                Some(here)
            } else {
                bad_field(v, &here)
            }
        }),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, v)| bad_field(v, &format!("{path}.{i}"))),
        _ => None,
    }
}

/// The document of an insert or update: `_id` is the record id, then every field of the record
/// (a `_id` in the data is replaced by the record id). Errors name the record and the cause.
pub fn document_of(c: &Change) -> Result<Document, String> {
    let mut doc = Document::new();
    doc.insert("_id", c.id.clone());
    match &c.data {
        Value::Object(m) => {
            if let Some(field) = bad_field(&c.data, "") {
                return Err(format!(
                    "record '{}' of '{}': MongoDB does not store the field name '{}' (it starts with '$' or holds a NUL); rename it with a transform",
                    c.id, c.resource, field.escape_default()
                ));
            }
            for (k, v) in m {
                if k != "_id" {
                    doc.insert(k.clone(), to_bson(v));
                }
            }
        }
        Value::Null => {}
        other => {
            return Err(format!(
                "record '{}' of '{}' is not an object (got {}); a transform must return an object",
                c.id,
                c.resource,
                match other {
                    Value::Array(_) => "an array",
                    Value::String(_) => "a string",
                    Value::Number(_) => "a number",
                    _ => "a boolean",
                }
            ))
        }
    }
    let size = bson_size(&doc);
    if size > MAX_DOCUMENT_BYTES {
        return Err(format!(
            "record '{}' of '{}' is {size} bytes as BSON, over MongoDB's 16 MiB document limit; drop or shorten fields with a transform",
            c.id, c.resource
        ));
    }
    Ok(doc)
}

/// The encoded size of a document.
pub fn bson_size(doc: &Document) -> usize {
    let mut buf = Vec::new();
    match doc.to_writer(&mut buf) {
        Ok(()) => buf.len(),
        Err(_) => usize::MAX,
    }
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
            resource: "users".into(),
            dest: "users".into(),
            id: "u1".into(),
            data,
            before: None,
            ts_ms: 0,
        }
    }

    #[test]
    fn values_keep_their_types() {
        let v = json!({ "i": 7, "big": 9_007_199_254_740_993_i64, "f": 1.5, "b": true, "z": null,
                        "s": "", "l": [1, "x", { "k": false }], "m": { "n": { "deep": [2.25] } } });
        let b = to_bson(&v);
        let d = b.as_document().unwrap();
        assert_eq!(d.get("i"), Some(&Bson::Int32(7)));
        assert_eq!(d.get("big"), Some(&Bson::Int64(9_007_199_254_740_993)));
        assert_eq!(d.get("f"), Some(&Bson::Double(1.5)));
        assert!(matches!(d.get("m"), Some(Bson::Document(_))));
        assert_eq!(from_bson(&b), v);
    }

    #[test]
    fn the_id_is_the_record_id_and_comes_first() {
        let d = document_of(&change(
            json!({ "name": "Ann", "_id": "other", "id": "u1" }),
        ))
        .unwrap();
        assert_eq!(d.keys().next().map(String::as_str), Some("_id"));
        assert_eq!(d.get_str("_id").unwrap(), "u1");
        assert_eq!(d.get_str("name").unwrap(), "Ann");
        assert_eq!(d.len(), 3);
    }

    #[test]
    fn refused_documents_name_the_record_and_the_field() {
        let e = document_of(&change(json!({ "a": { "b": [{ "$where": 1 }] } }))).unwrap_err();
        assert!(
            e.contains("record 'u1'") && e.contains("'a.b.0.$where'"),
            "{e}"
        );
        let e = document_of(&change(json!({ "s": "x".repeat(MAX_DOCUMENT_BYTES) }))).unwrap_err();
        assert!(e.contains("16 MiB"), "{e}");
        assert!(document_of(&change(json!([1]))).is_err());
        assert!(document_of(&change(json!({ "price$": 1 }))).is_ok());
    }
}
