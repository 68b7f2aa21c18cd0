//! Parses s3db.js attribute notation (`"string|required|maxlength:255"`, `"embedding:1536"`,
//! nested objects) into typed attributes.

use serde_json::Value;

/// The s3db.js types the spec's type-mapping table names. Anything else maps like `string`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrType {
    String,
    Number,
    Boolean,
    /// `object`, `json`, and nested attribute objects.
    Json,
    Array,
    Embedding(u32),
    Ip4,
    Ip6,
    Secret,
    Uuid,
    Date,
    DateTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub name: String,
    pub kind: AttrType,
    pub required: bool,
    pub max_length: Option<u32>,
}

/// The columns a source resource implies, `id` excluded (every table has the record id as
/// primary key).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResourceSchema {
    pub attributes: Vec<Attribute>,
    /// The table's key column, which holds the record id (a destination's `primaryKey`);
    /// `None` is `id`.
    pub key: Option<String>,
}

impl ResourceSchema {
    /// The key column: `id` unless the destination names another.
    pub fn key(&self) -> &str {
        self.key.as_deref().unwrap_or("id")
    }
}

/// Parses `resource.attributes` as s3db.js holds it. Keys starting with `$$` (validator
/// options), `_` or `$` are not columns; `id` is the primary key and is skipped.
pub fn parse_attributes(attributes: &Value) -> ResourceSchema {
    let Some(map) = attributes.as_object() else {
        return ResourceSchema::default();
    };
    let attributes = map
        .iter()
        .filter(|(name, _)| {
            !(name.starts_with('$') || name.starts_with('_') || name.as_str() == "id")
        })
        .map(|(name, def)| parse_one(name, def))
        .collect();
    ResourceSchema {
        attributes,
        key: None,
    }
}

fn parse_one(name: &str, def: &Value) -> Attribute {
    match def {
        Value::String(notation) => parse_notation(name, notation),
        // `{ type: 'string', required: true }` or a nested object of attributes.
        Value::Object(obj) => match obj.get("type").and_then(Value::as_str) {
            Some(t)
                if !obj.contains_key("$$type")
                    && !t.contains('|')
                    && obj.values().all(|v| !v.is_object()) =>
            {
                let mut a = parse_notation(name, t);
                a.required = obj
                    .get("required")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                a
            }
            _ => Attribute {
                name: name.to_string(),
                kind: AttrType::Json,
                required: false,
                max_length: None,
            },
        },
        _ => Attribute {
            name: name.to_string(),
            kind: AttrType::String,
            required: false,
            max_length: None,
        },
    }
}

fn parse_notation(name: &str, notation: &str) -> Attribute {
    let mut parts = notation.split('|').map(str::trim);
    let base = parts.next().unwrap_or("string");
    let (base, arg) = match base.split_once(':') {
        Some((b, a)) => (b, Some(a)),
        None => (base, None),
    };
    let kind = match base.to_ascii_lowercase().as_str() {
        "number" | "integer" | "int" | "float" | "double" => AttrType::Number,
        "boolean" | "bool" => AttrType::Boolean,
        "object" | "json" => AttrType::Json,
        "array" => AttrType::Array,
        "embedding" => AttrType::Embedding(arg.and_then(|a| a.parse().ok()).unwrap_or(0)),
        "ip4" => AttrType::Ip4,
        "ip6" => AttrType::Ip6,
        "secret" | "password" => AttrType::Secret,
        "uuid" => AttrType::Uuid,
        "date" | "dateonly" => AttrType::Date,
        "datetime" | "timestamp" => AttrType::DateTime,
        _ => AttrType::String,
    };
    let mut required = false;
    let mut max_length = None;
    for p in parts {
        if p == "required" {
            required = true;
        } else if let Some(n) = p.strip_prefix("maxlength:") {
            max_length = n.trim().parse().ok().filter(|n| *n > 0);
        }
    }
    Attribute {
        name: name.to_string(),
        kind,
        required,
        max_length,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_the_spec_types() {
        let s = parse_attributes(&json!({
            "id": "string", "email": "string|required|maxlength:255", "name": "string", "age": "number",
            "active": "boolean", "meta": "json", "obj": "object", "tags": "array|items:string", "vec": "embedding:1536",
            "ip": "ip4", "ip6": "ip6", "pw": "secret", "uid": "uuid", "born": "date", "at": "datetime",
            "profile": { "bio": "string", "links": "array" }, "$$async": true, "_internal": "string"
        }));
        let by = |n: &str| s.attributes.iter().find(|a| a.name == n).cloned().unwrap();
        assert!(s
            .attributes
            .iter()
            .all(|a| a.name != "id" && a.name != "$$async" && a.name != "_internal"));
        assert_eq!(
            by("email"),
            Attribute {
                name: "email".into(),
                kind: AttrType::String,
                required: true,
                max_length: Some(255)
            }
        );
        assert_eq!(by("age").kind, AttrType::Number);
        assert_eq!(by("active").kind, AttrType::Boolean);
        assert_eq!(by("meta").kind, AttrType::Json);
        assert_eq!(by("obj").kind, AttrType::Json);
        assert_eq!(by("tags").kind, AttrType::Array);
        assert_eq!(by("vec").kind, AttrType::Embedding(1536));
        assert_eq!(
            (by("ip").kind, by("ip6").kind),
            (AttrType::Ip4, AttrType::Ip6)
        );
        assert_eq!(
            (by("pw").kind, by("uid").kind),
            (AttrType::Secret, AttrType::Uuid)
        );
        assert_eq!(
            (by("born").kind, by("at").kind),
            (AttrType::Date, AttrType::DateTime)
        );
        assert_eq!(by("profile").kind, AttrType::Json);
    }

    #[test]
    fn unknown_types_map_like_strings() {
        let s = parse_attributes(&json!({ "site": "url|optional", "mail": "email" }));
        assert!(s.attributes.iter().all(|a| a.kind == AttrType::String));
        assert_eq!(parse_attributes(&json!("nope")), ResourceSchema::default());
    }
}
