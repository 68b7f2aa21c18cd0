//! Records as BigQuery rows: streaming-insert JSON (tracking fields per mutability mode, values
//! checked against the column types), SQL literals for the `MERGE` of the mutable mode, and the
//! `insertErrors` of an `insertAll` answer.

use serde_json::{Map, Value};

use super::config::Mutability;
use crate::event::{Change, Op};

/// A table's columns, as `tables.get` reports them: name, standard-SQL type, mode.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: String,
    pub ty: String,
    pub repeated: bool,
}

pub fn field_of<'a>(fields: &'a [Field], name: &str) -> Option<&'a Field> {
    fields.iter().find(|f| f.name.eq_ignore_ascii_case(name))
}

/// `_version` of an immutable row: the change's position in its outbox (the `seq` part of its
/// identity `{outbox id}:{seq}`), which increases, is never reused, and is the same when the
/// change is retried, replayed after a restart or re-sent from a dead letter.
pub fn version_of(c: &Change) -> u64 {
    c.change_id
        .rsplit_once(':')
        .and_then(|(_, s)| s.parse().ok())
        .unwrap_or(c.seq)
}

/// The record's fields (the record id as `id`), tracking fields not included.
pub fn record_fields(c: &Change) -> Map<String, Value> {
    let mut m = c.data.as_object().cloned().unwrap_or_default();
    m.insert("id".into(), Value::String(c.id.clone()));
    m
}

/// The streaming-insert row of a change in an append-only or immutable table.
pub fn history_row(c: &Change, mode: Mutability) -> Map<String, Value> {
    let mut m = record_fields(c);
    m.insert("_operation_type".into(), Value::String(c.op.verb().into()));
    m.insert(
        "_operation_timestamp".into(),
        Value::String(crate::time::iso8601(c.ts_ms)),
    );
    if mode == Mutability::Immutable {
        m.insert("_is_deleted".into(), Value::Bool(c.op == Op::Deleted));
        m.insert("_version".into(), Value::from(version_of(c)));
    }
    m
}

/// A value as the streaming API takes it for a column of type `f` (JSON columns as JSON
/// text, numbers for TIMESTAMP as epoch milliseconds); `Err` names the mismatch.
pub fn insert_value(f: &Field, v: &Value) -> Result<Value, String> {
    if v.is_null() {
        return Ok(Value::Null);
    }
    if f.repeated {
        return match v {
            Value::Array(items) => items
                .iter()
                .map(|i| {
                    insert_value(
                        &Field {
                            repeated: false,
                            ..f.clone()
                        },
                        i,
                    )
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            _ => Err(mismatch(f, v)),
        };
    }
    let ok = match (f.ty.as_str(), v) {
        ("JSON", v) => Value::String(v.to_string()),
        ("STRING", Value::String(_)) => v.clone(),
        ("STRING", other) => Value::String(other.to_string()),
        ("INT64", Value::Number(n)) if n.is_i64() || n.is_u64() => v.clone(),
        ("INT64", Value::Number(n)) if n.as_f64().is_some_and(|x| x.fract() == 0.0) => {
            Value::from(n.as_f64().unwrap_or_default() as i64)
        }
        ("INT64", Value::String(s)) if s.trim().parse::<i64>().is_ok() => v.clone(),
        ("FLOAT64" | "NUMERIC" | "BIGNUMERIC", Value::Number(_)) => v.clone(),
        ("FLOAT64" | "NUMERIC" | "BIGNUMERIC", Value::String(s))
            if s.trim().parse::<f64>().is_ok() =>
        {
            v.clone()
        }
        ("BOOL", Value::Bool(_)) => v.clone(),
        ("TIMESTAMP", Value::Number(n)) if n.as_u64().is_some() => {
            Value::String(crate::time::iso8601(n.as_u64().unwrap_or_default()))
        }
        ("TIMESTAMP" | "DATE" | "DATETIME" | "TIME", Value::String(_)) => v.clone(),
        ("STRUCT", Value::Object(_)) => v.clone(),
        ("BYTES" | "GEOGRAPHY", Value::String(_)) => v.clone(),
        _ => return Err(mismatch(f, v)),
    };
    Ok(ok)
}

fn mismatch(f: &Field, v: &Value) -> String {
    let kind = match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    format!(
        "field '{}' is {kind}, which does not fit its column type {}{}",
        f.name,
        if f.repeated { "ARRAY<" } else { "" },
        if f.repeated {
            format!("{}>", f.ty)
        } else {
            f.ty.clone()
        }
    )
}

/// A BigQuery string literal: `'...'` with `\\`, `\'` and control characters escaped.
pub fn string_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for ch in s.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A typed SQL expression for a value of column `f` (the source rows of a `MERGE`).
pub fn sql_literal(f: &Field, v: &Value) -> Result<String, String> {
    if f.repeated || f.ty == "STRUCT" {
        return Err(format!(
            "column '{}' is a {}; mutable tables take scalar and JSON columns only (use a JSON column)",
            f.name,
            if f.repeated { "REPEATED field" } else { "STRUCT" }
        ));
    }
    let v = insert_value(f, v)?;
    let ty = f.ty.as_str();
    Ok(match (&v, ty) {
        (Value::Null, _) => format!("CAST(NULL AS {ty})"),
        (Value::String(s), "JSON") => format!("PARSE_JSON({})", string_literal(s)),
        (Value::String(s), _) => format!("CAST({} AS {ty})", string_literal(s)),
        (Value::Bool(b), _) => (if *b { "TRUE" } else { "FALSE" }).to_string(),
        (Value::Number(n), _) => format!("CAST({} AS {ty})", string_literal(&n.to_string())),
        (other, _) => format!("CAST({} AS {ty})", string_literal(&other.to_string())),
    })
}

/// A quoted column or table path part (`name` has been validated: no backticks).
pub fn quote(name: &str) -> String {
    format!("`{name}`")
}

/// `insertErrors` of an `insertAll` answer: (row index in the request, reason, message).
pub fn insert_errors(answer: &Value) -> Vec<(usize, String, String)> {
    let mut out = Vec::new();
    for e in answer
        .get("insertErrors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(index) = e.get("index").and_then(|i| {
            i.as_u64()
                .or_else(|| i.as_str().and_then(|s| s.parse().ok()))
        }) else {
            continue;
        };
        let first = e
            .get("errors")
            .and_then(Value::as_array)
            .and_then(|a| a.first());
        let reason = first
            .and_then(|f| f.get("reason"))
            .and_then(Value::as_str)
            .unwrap_or("invalid")
            .to_string();
        let message = first
            .and_then(|f| f.get("message"))
            .and_then(Value::as_str)
            .unwrap_or("the row was refused")
            .to_string();
        out.push((index as usize, reason, message));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(name: &str, ty: &str) -> Field {
        Field {
            name: name.into(),
            ty: ty.into(),
            repeated: false,
        }
    }

    fn change(op: Op, seq: u64) -> Change {
        Change {
            seq,
            change_id: format!("00ff00ff00ff00ff:{seq}"),
            op,
            resource: "tx".into(),
            dest: "tx_history".into(),
            id: "t1".into(),
            data: json!({ "amount": 150 }),
            before: None,
            ts_ms: 1_704_103_200_000,
        }
    }

    #[test]
    fn tracking_fields_per_mode() {
        let r = history_row(&change(Op::Updated, 7), Mutability::AppendOnly);
        assert_eq!(r["_operation_type"], "update");
        assert_eq!(r["_operation_timestamp"], "2024-01-01T10:00:00.000Z");
        assert_eq!(r["id"], "t1");
        assert!(!r.contains_key("_version") && !r.contains_key("_is_deleted"));
        let mut c = change(Op::Deleted, 99);
        // A dead letter re-sent later: new seq, same identity, same version.
        c.change_id = "00ff00ff00ff00ff:12".into();
        let r = history_row(&c, Mutability::Immutable);
        assert_eq!(
            (&r["_operation_type"], &r["_is_deleted"], &r["_version"]),
            (&json!("delete"), &json!(true), &json!(12))
        );
    }

    #[test]
    fn values_are_checked_against_column_types() {
        assert_eq!(
            insert_value(&f("j", "JSON"), &json!({ "k": [1] })).unwrap(),
            json!("{\"k\":[1]}")
        );
        assert_eq!(
            insert_value(&f("n", "INT64"), &json!(3.0)).unwrap(),
            json!(3)
        );
        assert!(insert_value(&f("n", "INT64"), &json!(3.5)).is_err());
        let e = insert_value(&f("n", "FLOAT64"), &json!("abc")).unwrap_err();
        assert!(e.contains("'n'") && e.contains("FLOAT64"), "{e}");
        assert!(insert_value(&f("b", "BOOL"), &json!("yes")).is_err());
        assert_eq!(
            insert_value(&f("s", "STRING"), &json!(12)).unwrap(),
            json!("12")
        );
        assert_eq!(
            insert_value(&f("t", "TIMESTAMP"), &json!(1_704_103_200_000u64)).unwrap(),
            json!("2024-01-01T10:00:00.000Z")
        );
    }

    #[test]
    fn literals_escape_and_type() {
        assert_eq!(string_literal("it's \\ a\nb"), "'it\\'s \\\\ a\\nb'");
        assert_eq!(
            sql_literal(&f("s", "STRING"), &json!("o'k")).unwrap(),
            "CAST('o\\'k' AS STRING)"
        );
        assert_eq!(
            sql_literal(&f("j", "JSON"), &json!({ "a": "'" })).unwrap(),
            "PARSE_JSON('{\"a\":\"\\'\"}')"
        );
        assert_eq!(sql_literal(&f("b", "BOOL"), &json!(true)).unwrap(), "TRUE");
        assert_eq!(
            sql_literal(&f("n", "FLOAT64"), &Value::Null).unwrap(),
            "CAST(NULL AS FLOAT64)"
        );
        assert!(sql_literal(&f("n", "FLOAT64"), &json!("x'); DROP TABLE t; --")).is_err());
    }

    #[test]
    fn insert_errors_are_read_per_row() {
        let answer = json!({ "insertErrors": [
            { "index": 2, "errors": [{ "reason": "invalid", "message": "no such field: x" }] },
            { "index": "0", "errors": [{ "reason": "stopped", "message": "" }] }
        ] });
        assert_eq!(
            insert_errors(&answer),
            vec![
                (2, "invalid".into(), "no such field: x".into()),
                (0, "stopped".into(), "".into())
            ]
        );
        assert!(insert_errors(&json!({ "insertErrors": [] })).is_empty());
    }
}
