//! The change events that flow through the engine.

use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The kind of change. Serialised the way the spec's events and `actions` name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Inserted,
    Updated,
    Deleted,
}

impl Op {
    /// Accepts both spellings: `inserted` (the spec) and `insert` (what the stock code reads).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "inserted" | "insert" => Some(Self::Inserted),
            "updated" | "update" => Some(Self::Updated),
            "deleted" | "delete" => Some(Self::Deleted),
            _ => None,
        }
    }
    /// The spec's event name: `inserted`, `updated`, `deleted`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Inserted => "inserted",
            Self::Updated => "updated",
            Self::Deleted => "deleted",
        }
    }
    /// The short verb used in webhook payloads: `insert`, `update`, `delete`.
    pub const fn verb(self) -> &'static str {
        match self {
            Self::Inserted => "insert",
            Self::Updated => "update",
            Self::Deleted => "delete",
        }
    }
}

/// One change as s3db.js reported it, cleaned of internal fields. Shared by every route
/// that wants it, so fan-out copies a pointer, not the record.
#[derive(Debug)]
pub struct ChangeEvent {
    /// Engine-wide sequence number, in acceptance order.
    pub seq: u64,
    pub op: Op,
    pub resource: String,
    pub id: String,
    pub data: Value,
    pub before: Option<Value>,
    /// Milliseconds since the Unix epoch when the engine accepted the change.
    pub ts_ms: u64,
    pub accepted_at: Instant,
}

/// A change as a sink receives it: routed to a destination name, possibly transformed.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    pub seq: u64,
    /// The change's stable identity, `{outbox id}:{seq of the original change}`: the same when
    /// the change is retried, replayed after a restart or re-sent from a dead letter; never
    /// shared by two changes. Sinks put it in their dedup fields (webhook `Idempotency-Key`,
    /// SQS `MessageDeduplicationId`, BigQuery `insertId`, log rows).
    pub change_id: String,
    pub op: Op,
    /// Source resource name.
    pub resource: String,
    /// Destination name (resource, table, ...) chosen by the route.
    pub dest: String,
    pub id: String,
    pub data: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    pub ts_ms: u64,
}

impl Change {
    /// Ordering key: changes with the same key are applied in order.
    pub fn key(&self) -> (&str, &str) {
        (&self.dest, &self.id)
    }
}

pub type SharedEvent = Arc<ChangeEvent>;

/// Removes the fields s3db.js uses internally (`_*`, `$*`), which must never reach a destination.
pub fn strip_internal(map: &mut Map<String, Value>) {
    map.retain(|k, _| !(k.starts_with('_') || k.starts_with('$')));
}

/// Turns the JSON s3db.js handed to a listener into `(id, data, before)`: lifts `$before`,
/// strips internal fields and checks that the record has an id.
pub fn clean_record(mut value: Value) -> Result<(String, Value, Option<Value>), String> {
    let Value::Object(map) = &mut value else {
        return Err("expected a record object".into());
    };
    let before = match map.remove("$before") {
        Some(Value::Object(mut b)) => {
            strip_internal(&mut b);
            Some(Value::Object(b))
        }
        _ => None,
    };
    strip_internal(map);
    let id = match map.get("id") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err("the record has no 'id'; every replicated record needs one".into()),
    };
    Ok((id, value, before))
}

/// Parses the JSON of a change. JavaScript strings may hold lone UTF-16 surrogates, which
/// `JSON.stringify` writes as `\ud800`-style escapes and no UTF-8 destination can store; they are
/// replaced by U+FFFD (the rest of the record is kept) instead of failing the whole change.
pub fn parse_change(json: &str) -> Result<Value, String> {
    serde_json::from_str(json).or_else(|e| {
        let repaired = replace_lone_surrogates(json);
        if repaired.len() == json.len() && repaired == json {
            return Err(format!("invalid JSON: {e}"));
        }
        serde_json::from_str(&repaired).map_err(|e| format!("invalid JSON: {e}"))
    })
}

fn replace_lone_surrogates(json: &str) -> String {
    let b = json.as_bytes();
    let mut out = String::with_capacity(json.len());
    let hex = |i: usize| -> Option<u16> {
        let s = json.get(i..i + 4)?;
        u16::from_str_radix(s, 16).ok()
    };
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            i += 1;
            continue;
        }
        if b.get(i + 1) != Some(&b'u') {
            i += 2;
            continue;
        }
        let Some(unit) = hex(i + 2) else {
            i += 2;
            continue;
        };
        let high = (0xD800..0xDC00).contains(&unit);
        let low = (0xDC00..0xE000).contains(&unit);
        let paired = high
            && b.get(i + 6) == Some(&b'\\')
            && b.get(i + 7) == Some(&b'u')
            && hex(i + 8).is_some_and(|n| (0xDC00..0xE000).contains(&n));
        if paired {
            i += 12;
        } else if high || low {
            out.push_str(&json[copied..i]);
            out.push_str("\\ufffd");
            i += 6;
            copied = i;
        } else {
            i += 6;
        }
    }
    out.push_str(&json[copied..]);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn lone_surrogates_become_replacement_characters_and_pairs_stay() {
        let v = super::parse_change(
            r#"{"id":"a","s":"x\ud800y","t":"\udc00","ok":"\ud83d\ude00","esc":"\\ud800"}"#,
        )
        .unwrap();
        assert_eq!(v["s"], "x\u{fffd}y");
        assert_eq!(v["t"], "\u{fffd}");
        assert_eq!(v["ok"], "\u{1f600}");
        assert_eq!(v["esc"], "\\ud800", "an escaped backslash is not an escape");
        assert!(super::parse_change("{nope")
            .unwrap_err()
            .contains("invalid JSON"));
    }

    use super::*;
    use serde_json::json;

    #[test]
    fn op_accepts_both_spellings() {
        assert_eq!(Op::parse("insert"), Some(Op::Inserted));
        assert_eq!(Op::parse("inserted"), Some(Op::Inserted));
        assert_eq!(Op::parse("deleted"), Some(Op::Deleted));
        assert_eq!(Op::parse("upsert"), None);
        assert_eq!(Op::Updated.verb(), "update");
    }

    #[test]
    fn clean_record_lifts_before_and_strips_internal_fields() {
        let raw = json!({"id": "a", "name": "x", "_v": "1", "$after": {}, "$before": {"id": "a", "name": "w", "_etag": "e"}});
        let (id, data, before) = clean_record(raw).unwrap();
        assert_eq!(id, "a");
        assert_eq!(data, json!({"id": "a", "name": "x"}));
        assert_eq!(before, Some(json!({"id": "a", "name": "w"})));
    }

    #[test]
    fn clean_record_requires_an_id() {
        assert!(clean_record(json!({"name": "x"}))
            .unwrap_err()
            .contains("'id'"));
        assert!(clean_record(json!([1])).is_err());
        assert_eq!(clean_record(json!({"id": 7})).unwrap().0, "7");
    }
}
