//! Turns a batch of changes into the statements of one transaction. Each change carries the
//! full record, so within a batch only the last change of a record matters: the plan keeps it
//! (upsert or delete), which also keeps per-record order.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::event::{Change, Op};

#[derive(Debug, Clone, PartialEq)]
pub struct TableWrite {
    pub table: String,
    /// The key column: `id`, or the destination's `primaryKey`. It holds the record id.
    pub key: String,
    /// `(id, row)` in batch order; every row has the key column.
    pub upserts: Vec<(String, Map<String, Value>)>,
    pub deletes: Vec<String>,
}

impl TableWrite {
    /// Columns of the upsert: the union of the rows' keys, the key column first.
    pub fn columns(&self) -> Vec<String> {
        let mut set = BTreeSet::new();
        for (_, row) in &self.upserts {
            set.extend(row.keys().filter(|k| **k != self.key).cloned());
        }
        std::iter::once(self.key.clone()).chain(set).collect()
    }
}

/// One audit row of `logTable`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRow {
    pub resource: String,
    pub operation: &'static str,
    pub record_id: String,
    pub data: Value,
    pub timestamp_ms: u64,
    /// The change's identity (`Change::change_id`).
    pub change_id: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct WritePlan {
    pub tables: Vec<TableWrite>,
    /// `(logTable, rows)` when the driver has a log table.
    pub log: Option<(String, Vec<LogRow>)>,
}

/// Builds the plan for `changes` (indexes into the batch are preserved by the caller).
/// `key_of(table)` is the table's key column; where it is not `id`, the record id goes into
/// it and the row has no `id` field.
pub fn plan_batch<'k>(
    changes: &[&Change],
    log_table: Option<&str>,
    key_of: impl Fn(&str) -> &'k str,
) -> WritePlan {
    let mut tables: Vec<TableWrite> = Vec::new();
    // The last change of each (table, id) wins.
    let mut last = std::collections::HashMap::new();
    for (i, c) in changes.iter().enumerate() {
        last.insert((c.dest.as_str(), c.id.as_str()), i);
    }
    for (i, c) in changes.iter().enumerate() {
        if last.get(&(c.dest.as_str(), c.id.as_str())) != Some(&i) {
            continue;
        }
        let t = match tables.iter_mut().position(|t| t.table == c.dest) {
            Some(p) => &mut tables[p],
            None => {
                tables.push(TableWrite {
                    table: c.dest.clone(),
                    key: key_of(&c.dest).to_string(),
                    upserts: Vec::new(),
                    deletes: Vec::new(),
                });
                tables.last_mut().expect("just pushed")
            }
        };
        match c.op {
            Op::Deleted => t.deletes.push(c.id.clone()),
            Op::Inserted | Op::Updated => {
                let mut row = c.data.as_object().cloned().unwrap_or_default();
                if t.key != "id" {
                    row.remove("id");
                }
                row.insert(t.key.clone(), Value::String(c.id.clone()));
                t.upserts.push((c.id.clone(), row));
            }
        }
    }
    let log = log_table.map(|name| {
        let rows = changes
            .iter()
            .map(|c| LogRow {
                resource: c.resource.clone(),
                operation: c.op.as_str(),
                record_id: c.id.clone(),
                data: c.data.clone(),
                timestamp_ms: c.ts_ms,
                change_id: c.change_id.clone(),
            })
            .collect();
        (name.to_string(), rows)
    });
    WritePlan { tables, log }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn change(seq: u64, op: Op, dest: &str, id: &str, data: Value) -> Change {
        Change {
            seq,
            change_id: format!("0000000000000000:{seq}"),
            op,
            resource: "users".into(),
            dest: dest.into(),
            id: id.into(),
            data,
            before: None,
            ts_ms: 1,
        }
    }

    #[test]
    fn keeps_the_last_change_per_record_and_groups_by_table() {
        let cs = [
            change(1, Op::Inserted, "t", "a", json!({ "id": "a", "n": 1 })),
            change(2, Op::Updated, "t", "a", json!({ "id": "a", "n": 2 })),
            change(3, Op::Inserted, "t", "b", json!({ "id": "b", "x": true })),
            change(4, Op::Deleted, "t", "b", json!({ "id": "b" })),
            change(5, Op::Inserted, "u", "a", json!({ "id": "a" })),
        ];
        let refs: Vec<&Change> = cs.iter().collect();
        let p = plan_batch(&refs, Some("log"), |_| "id");
        assert_eq!(p.tables.len(), 2);
        assert_eq!(
            p.tables[0].upserts,
            vec![(
                "a".to_string(),
                json!({ "id": "a", "n": 2 }).as_object().unwrap().clone()
            )]
        );
        assert_eq!(p.tables[0].deletes, vec!["b".to_string()]);
        assert_eq!(
            p.tables[0].columns(),
            vec!["id".to_string(), "n".to_string()]
        );
        assert_eq!(
            p.log.as_ref().unwrap().1.len(),
            5,
            "the audit log keeps every operation"
        );
    }

    #[test]
    fn a_delete_then_insert_ends_as_an_upsert() {
        let cs = [
            change(1, Op::Deleted, "t", "a", json!({})),
            change(2, Op::Inserted, "t", "a", json!({ "v": 1 })),
        ];
        let refs: Vec<&Change> = cs.iter().collect();
        let p = plan_batch(&refs, None, |_| "id");
        assert!(p.tables[0].deletes.is_empty());
        assert_eq!(p.tables[0].upserts[0].1["id"], "a", "id is always present");
        assert!(p.log.is_none());
    }
}
