//! Pure message building: the stock SQS driver's JSON body, FIFO group ids, message sizes.

use serde::Serialize;
use serde_json::Value;

use crate::event::{Change, Op};
use crate::time::iso8601;

/// The `source` field of every message body, as the stock driver sends it.
pub const SOURCE: &str = "s3db-replicator";

#[derive(Serialize)]
struct Body<'a> {
    resource: &'a str,
    action: &'static str,
    timestamp: String,
    source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    before: Option<&'a Value>,
    data: &'a Value,
}

/// `{ resource, action, timestamp, source, before (updates), data }`, the record after transform.
pub fn body(c: &Change) -> String {
    serde_json::to_string(&Body {
        resource: &c.resource,
        action: c.op.verb(),
        timestamp: iso8601(c.ts_ms),
        source: SOURCE,
        before: if c.op == Op::Updated {
            c.before.as_ref()
        } else {
            None
        },
        data: &c.data,
    })
    .unwrap_or_default()
}

/// FIFO message group of a record: `resource:id`, in the characters SQS allows (others are
/// percent-encoded) and at most 128 of them (a longer one ends in a hash of the whole).
pub fn group_id(resource: &str, id: &str) -> String {
    let allowed = |b: u8| b.is_ascii_graphic();
    let mut out = String::new();
    for b in format!("{resource}:{id}").bytes() {
        if allowed(b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.len() <= 128 {
        return out;
    }
    let hash = crate::hash::fnv1a64(out.bytes());
    format!("{}#{hash:016x}", &out[..111])
}

pub fn is_fifo(queue_url: &str) -> bool {
    queue_url.trim_end_matches('/').ends_with(".fifo")
}

#[cfg(test)]
mod tests {
    use super::*;
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
    fn bodies_match_the_stock_driver() {
        let v: Value = serde_json::from_str(&body(&change(Op::Updated))).unwrap();
        assert_eq!(
            v,
            json!({ "resource": "users", "action": "update", "timestamp": "2025-10-18T10:30:00.000Z",
                    "source": "s3db-replicator", "before": { "id": "u1", "name": "An" }, "data": { "id": "u1", "name": "Ana" } })
        );
        let v: Value = serde_json::from_str(&body(&change(Op::Deleted))).unwrap();
        assert_eq!(v["action"], "delete");
        assert!(v.get("before").is_none());
    }

    #[test]
    fn group_ids_are_valid_for_any_id() {
        assert_eq!(group_id("users", "a.b:c/d"), "users:a.b:c/d");
        assert_eq!(group_id("users", "é x"), "users:%C3%A9%20x");
        let long = group_id("users", &"x".repeat(300));
        assert_eq!(long.len(), 128);
        assert_ne!(long, group_id("users", &"x".repeat(301)));
        assert!(is_fifo("http://h/1/q.fifo") && !is_fifo("http://h/1/q"));
    }
}
