//! Pure payload building: the spec's standardized webhook payload, single and batch.

use serde::Serialize;
use serde_json::Value;

use crate::event::{Change, Op};
use crate::time::iso8601;

pub const SOURCE: &str = "s3db-webhook-replicator";

#[derive(Debug, Serialize)]
pub struct Payload<'a> {
    pub resource: &'a str,
    pub action: &'static str,
    pub timestamp: String,
    pub source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<&'a Value>,
    pub data: &'a Value,
}

pub fn payload(c: &Change) -> Payload<'_> {
    Payload {
        resource: &c.dest,
        action: c.op.verb(),
        timestamp: iso8601(c.ts_ms),
        source: SOURCE,
        before: if c.op == Op::Updated {
            c.before.as_ref()
        } else {
            None
        },
        data: &c.data,
    }
}

pub fn single_body(c: &Change) -> Vec<u8> {
    serde_json::to_vec(&payload(c)).unwrap_or_default()
}

#[derive(Serialize)]
struct BatchBody<'a> {
    batch: Vec<Payload<'a>>,
}

pub fn batch_body(changes: &[Change]) -> Vec<u8> {
    serde_json::to_vec(&BatchBody {
        batch: changes.iter().map(payload).collect(),
    })
    .unwrap_or_default()
}

/// A key a receiver can use to drop redeliveries: `{resource}:{id}:{instance}:{seq}`. The
/// instance (random per engine) keeps keys of different processes apart. Resource and id are
/// percent-encoded outside visible ASCII (and `%`), so any record id makes a valid header.
pub fn idempotency_key(instance: &str, c: &Change) -> String {
    format!(
        "{}:{}:{instance}:{}",
        header_safe(&c.dest),
        header_safe(&c.id),
        c.seq
    )
}

fn header_safe(s: &str) -> std::borrow::Cow<'_, str> {
    let plain = |b: u8| b.is_ascii_graphic() && b != b'%';
    if s.bytes().all(plain) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for b in s.bytes() {
        if plain(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_keys_are_valid_header_values_for_any_id() {
        let mut c = change(Op::Inserted);
        c.id = "a\nb\u{0}c d%é".into();
        let key = idempotency_key("i1", &c);
        assert_eq!(key, format!("users:a%0Ab%00c%20d%25%C3%A9:i1:{}", c.seq));
        assert!(reqwest::header::HeaderValue::from_str(&key).is_ok());
    }
    use serde_json::json;

    fn change(op: Op) -> Change {
        Change {
            seq: 7,
            op,
            resource: "users".into(),
            dest: "users".into(),
            id: "u1".into(),
            data: json!({ "id": "u1", "name": "Ana" }),
            before: Some(json!({ "id": "u1", "name": "An" })),
            ts_ms: 1_760_783_400_000,
        }
    }

    #[test]
    fn insert_payload_matches_the_spec() {
        let v: Value = serde_json::from_slice(&single_body(&change(Op::Inserted))).unwrap();
        assert_eq!(
            v,
            json!({ "resource": "users", "action": "insert", "timestamp": "2025-10-18T10:30:00.000Z",
                    "source": "s3db-webhook-replicator", "data": { "id": "u1", "name": "Ana" } })
        );
    }

    #[test]
    fn update_payload_carries_before() {
        let v: Value = serde_json::from_slice(&single_body(&change(Op::Updated))).unwrap();
        assert_eq!(v["action"], "update");
        assert_eq!(v["before"]["name"], "An");
        let d: Value = serde_json::from_slice(&single_body(&change(Op::Deleted))).unwrap();
        assert_eq!(d["action"], "delete");
        assert!(d.get("before").is_none());
    }

    #[test]
    fn batch_payload_wraps_items() {
        let v: Value =
            serde_json::from_slice(&batch_body(&[change(Op::Inserted), change(Op::Updated)]))
                .unwrap();
        assert_eq!(v["batch"].as_array().unwrap().len(), 2);
        assert_eq!(v["batch"][1]["action"], "update");
        assert_eq!(
            idempotency_key("ab12", &change(Op::Inserted)),
            "users:u1:ab12:7"
        );
    }
}
