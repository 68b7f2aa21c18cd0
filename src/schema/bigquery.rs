//! The spec's BigQuery type column: s3db.js attribute types as BigQuery column types.

use super::types::{AttrType, Attribute};

/// The BigQuery type of an attribute (the spec's table: numbers `FLOAT64`, objects, arrays
/// and embeddings `JSON`, `datetime` `TIMESTAMP`, `date` `DATE`, everything else `STRING`).
pub fn bigquery_type(a: &Attribute) -> &'static str {
    match a.kind {
        AttrType::String | AttrType::Ip4 | AttrType::Ip6 | AttrType::Secret | AttrType::Uuid => {
            "STRING"
        }
        AttrType::Number => "FLOAT64",
        AttrType::Boolean => "BOOL",
        AttrType::Json | AttrType::Array | AttrType::Embedding(_) => "JSON",
        AttrType::Date => "DATE",
        AttrType::DateTime => "TIMESTAMP",
    }
}

/// A type as the API reports it, in its standard-SQL name (`FLOAT` is `FLOAT64`, ...).
pub fn normalize_bigquery_type(t: &str) -> String {
    match t.to_ascii_uppercase().as_str() {
        "FLOAT" => "FLOAT64".into(),
        "INTEGER" => "INT64".into(),
        "BOOLEAN" => "BOOL".into(),
        "RECORD" => "STRUCT".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::parse_attributes;
    use serde_json::json;

    #[test]
    fn the_spec_type_column() {
        let s = parse_attributes(&json!({
            "s": "string", "m": "string|maxlength:255", "n": "number", "b": "boolean", "o": "object",
            "j": "json", "a": "array", "e": "embedding:1536", "i4": "ip4", "i6": "ip6", "p": "secret",
            "u": "uuid", "d": "date", "t": "datetime"
        }));
        let ty = |n: &str| bigquery_type(s.attributes.iter().find(|a| a.name == n).unwrap());
        for (n, want) in [
            ("s", "STRING"),
            ("m", "STRING"),
            ("n", "FLOAT64"),
            ("b", "BOOL"),
            ("o", "JSON"),
            ("j", "JSON"),
            ("a", "JSON"),
            ("e", "JSON"),
            ("i4", "STRING"),
            ("i6", "STRING"),
            ("p", "STRING"),
            ("u", "STRING"),
            ("d", "DATE"),
            ("t", "TIMESTAMP"),
        ] {
            assert_eq!(ty(n), want, "{n}");
        }
        assert_eq!(normalize_bigquery_type("FLOAT"), "FLOAT64");
        assert_eq!(normalize_bigquery_type("integer"), "INT64");
        assert_eq!(normalize_bigquery_type("BOOLEAN"), "BOOL");
    }
}
