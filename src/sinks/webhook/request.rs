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
    /// The change's identity, in batch items only (a batch has one header for many changes).
    #[serde(rename = "idempotencyKey", skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<&'a str>,
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
        idempotency_key: None,
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
        batch: changes
            .iter()
            .map(|c| Payload {
                idempotency_key: Some(&c.change_id),
                ..payload(c)
            })
            .collect(),
    })
    .unwrap_or_default()
}

/// The `Idempotency-Key` of a one-change request: the change's identity, `{outbox id}:{seq}`
/// (hex digits, `:` and decimal digits, so a valid header for any record id). It stays the same
/// when the change is retried, replayed after a restart or re-sent from a dead letter.
pub fn idempotency_key(c: &Change) -> &str {
    &c.change_id
}

/// The `Idempotency-Key` of a batch request: `batch:` and a 64-bit FNV-1a hash (16 hex digits)
/// of its items' keys, so the same changes in the same order always get the same key. Each
/// item also carries its own `idempotencyKey`.
pub fn batch_idempotency_key(changes: &[Change]) -> String {
    let hash = crate::hash::fnv1a64(
        changes
            .iter()
            .flat_map(|c| c.change_id.bytes().chain(std::iter::once(b'\n'))),
    );
    format!("batch:{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_keys_are_valid_header_values_for_any_id() {
        let mut c = change(Op::Inserted);
        c.id = "a\nb\u{0}c d%é".into();
        c.dest = "tab\tle".into();
        assert_eq!(idempotency_key(&c), "0123456789abcdef:7");
        assert!(reqwest::header::HeaderValue::from_str(idempotency_key(&c)).is_ok());
    }

    #[test]
    fn a_batch_key_depends_on_its_changes_only() {
        let a = change(Op::Inserted);
        let mut b = change(Op::Updated);
        b.change_id = "0123456789abcdef:8".into();
        let key = batch_idempotency_key(&[a.clone(), b.clone()]);
        assert_eq!(key, batch_idempotency_key(&[a.clone(), b.clone()]));
        assert_ne!(key, batch_idempotency_key(std::slice::from_ref(&a)));
        assert_ne!(key, batch_idempotency_key(&[b, a]));
        assert!(key.starts_with("batch:") && key.len() == 22);
    }
    use serde_json::json;

    fn change(op: Op) -> Change {
        Change {
            seq: 7,
            change_id: "0123456789abcdef:7".into(),
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
        assert_eq!(v["batch"][0]["idempotencyKey"], "0123456789abcdef:7");
        let single: Value = serde_json::from_slice(&single_body(&change(Op::Inserted))).unwrap();
        assert!(
            single.get("idempotencyKey").is_none(),
            "the header carries it"
        );
    }
}
