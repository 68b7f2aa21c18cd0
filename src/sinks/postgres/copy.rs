//! The bulk path: a large group of upserts goes to the server as `COPY … FROM STDIN` text into
//! a temporary staging table, then one `INSERT … SELECT … ON CONFLICT DO UPDATE` from it. On a
//! backlog (a full sync, `replicateBatch`, catching up after an outage) this parses the rows
//! once, in PostgreSQL's fastest input path, instead of building and decomposing one large
//! `jsonb` parameter.
//!
//! It must write exactly what the `jsonb_populate_recordset` path writes, so a group is staged
//! only when every value of every row converts the same way through both (see [`stageable`]);
//! any other group keeps the `jsonb` path. A row the table refuses fails the COPY or the
//! INSERT, the whole statement as in the `jsonb` path, and the SQL sink isolates it the same way
//! (its smaller retries fall under [`STAGE_MIN_ROWS`]).

use serde_json::{Map, Value};

use super::backend::ColumnIndex;

/// Fewer rows than this go through the `jsonb` parameter: creating the staging table costs
/// about one round trip, which a small group does not earn back.
pub(crate) const STAGE_MIN_ROWS: usize = 1_000;

/// How one column's values are written as COPY text.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// `jsonb`: each value as JSON text (a string keeps its quotes, as `jsonb_populate_recordset`
    /// keeps a JSON string a JSON string).
    Jsonb,
    /// Numeric types: numbers and strings as their text.
    Number,
    /// Any other scalar type (text, varchar, boolean, uuid, timestamps, enums ...): strings,
    /// booleans and integers as their text, each read by the column type's own input function.
    Scalar,
}

fn kind_of(ty: &str) -> Option<Kind> {
    match ty {
        "jsonb" => Some(Kind::Jsonb),
        // `json` keeps its input text verbatim, which `jsonb_populate_recordset` normalises.
        "json" => None,
        "double precision" | "real" | "numeric" | "integer" | "bigint" | "smallint" | "float8"
        | "float4" | "int8" | "int4" | "int2" | "decimal" => Some(Kind::Number),
        "text"
        | "character varying"
        | "varchar"
        | "character"
        | "bpchar"
        | "citext"
        | "boolean"
        | "bool"
        | "uuid"
        | "date"
        | "timestamp with time zone"
        | "timestamp without time zone"
        | "timestamptz"
        | "timestamp"
        | "time with time zone"
        | "time without time zone"
        | "interval"
        | "inet"
        | "cidr"
        | "macaddr" => Some(Kind::Scalar),
        // Arrays (`_text` ...), composite and other user-defined types have conversions of their
        // own for JSON values (a JSON string into an array column is an error there).
        _ => None,
    }
}

/// Whether a value converts to the same column value through COPY text as through
/// `jsonb_populate_recordset`: a JSON string goes to the column's input function unquoted in
/// both; a number's text can differ (`1e21` vs `1000000000000000000000`), which only a numeric
/// column (or an integer) makes harmless; arrays and objects only as `jsonb`.
fn same_either_way(kind: Kind, v: &Value) -> bool {
    match (kind, v) {
        (_, Value::Null | Value::String(_)) => true,
        (Kind::Jsonb, _) => true,
        (_, Value::Bool(_)) => true,
        (Kind::Number, Value::Number(_)) => true,
        (Kind::Scalar, Value::Number(n)) => n.is_i64() || n.is_u64(),
        (_, Value::Array(_) | Value::Object(_)) => false,
    }
}

/// The columns' kinds when every row of the group can be staged, else `None`.
fn kinds(
    columns: &[String],
    rows: &[Map<String, Value>],
    idx: &ColumnIndex<'_>,
) -> Option<Vec<Kind>> {
    let kinds: Vec<Kind> = columns
        .iter()
        .map(|c| kind_of(idx.type_of(c)?))
        .collect::<Option<_>>()?;
    let fits = rows.iter().all(|row| {
        columns
            .iter()
            .zip(&kinds)
            .all(|(c, kind)| row.get(c).is_none_or(|v| same_either_way(*kind, v)))
    });
    fits.then_some(kinds)
}

/// The group as COPY text (tab-separated, one line per row, `\N` for NULL), or `None` when
/// it must go through the `jsonb` path. Every row of a group has every column.
pub(crate) fn stageable(
    columns: &[String],
    rows: &[Map<String, Value>],
    idx: &ColumnIndex<'_>,
) -> Option<Vec<u8>> {
    if rows.len() < STAGE_MIN_ROWS {
        return None;
    }
    let kinds = kinds(columns, rows, idx)?;
    let mut out = String::with_capacity(rows.len() * 16 * columns.len());
    for row in rows {
        for (i, (c, kind)) in columns.iter().zip(&kinds).enumerate() {
            if i > 0 {
                out.push('\t');
            }
            match (row.get(c).unwrap_or(&Value::Null), kind) {
                (Value::Null, _) => out.push_str("\\N"),
                (v, Kind::Jsonb) => escape_into(&mut out, &v.to_string()),
                (Value::String(s), _) => escape_into(&mut out, s),
                (v, _) => out.push_str(&v.to_string()),
            }
        }
        out.push('\n');
    }
    Some(out.into_bytes())
}

/// COPY text escapes: the backslash itself and the characters that end a field or a row.
fn escape_into(out: &mut String, s: &str) {
    for ch in s.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::json;

    use super::*;

    fn rows(n: usize, row: Value) -> Vec<Map<String, Value>> {
        (0..n).map(|_| row.as_object().unwrap().clone()).collect()
    }

    fn live(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn cols(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn values_are_copy_text_with_escapes_and_nulls() {
        let l = live(&[
            ("id", "character varying"),
            ("s", "text"),
            ("n", "double precision"),
            ("b", "boolean"),
            ("j", "jsonb"),
        ]);
        let idx = ColumnIndex::new(&l);
        let r = rows(
            STAGE_MIN_ROWS,
            json!({ "id": "a\\b", "s": "x\ty\nz\r", "n": 1.5, "b": true, "j": { "k": ["v", 1] } }),
        );
        let text =
            String::from_utf8(stageable(&cols(&["id", "s", "n", "b", "j"]), &r, &idx).unwrap())
                .unwrap();
        let first = text.lines().next().unwrap();
        assert_eq!(first, "a\\\\b\tx\\ty\\nz\\r\t1.5\ttrue\t{\"k\":[\"v\",1]}");
        assert_eq!(text.lines().count(), STAGE_MIN_ROWS);
        let r = rows(
            STAGE_MIN_ROWS,
            json!({ "id": "a", "s": null, "n": null, "b": null, "j": "plain" }),
        );
        let text =
            String::from_utf8(stageable(&cols(&["id", "s", "n", "b", "j"]), &r, &idx).unwrap())
                .unwrap();
        assert_eq!(
            text.lines().next().unwrap(),
            "a\t\\N\t\\N\t\\N\t\"plain\"",
            "a JSON string in jsonb keeps its quotes"
        );
    }

    #[test]
    fn groups_whose_values_would_convert_differently_keep_the_jsonb_path() {
        let l = live(&[
            ("id", "text"),
            ("t", "text"),
            ("tags", "_text"),
            ("doc", "json"),
            ("n", "numeric"),
        ]);
        let idx = ColumnIndex::new(&l);
        let go = |row: Value, c: &[&str]| {
            stageable(&cols(c), &rows(STAGE_MIN_ROWS, row), &idx).is_some()
        };
        assert!(
            go(json!({ "id": "a", "t": 7, "n": 1e21 }), &["id", "t", "n"]),
            "integers anywhere, any number in numeric"
        );
        assert!(
            !go(json!({ "id": "a", "t": 1.5 }), &["id", "t"]),
            "a float's text into a text column"
        );
        assert!(
            !go(json!({ "id": "a", "t": { "x": 1 } }), &["id", "t"]),
            "an object into text"
        );
        assert!(
            !go(json!({ "id": "a", "tags": ["x"] }), &["id", "tags"]),
            "a JSON array into an array column"
        );
        assert!(
            !go(json!({ "id": "a", "tags": "{x,y}" }), &["id", "tags"]),
            "array columns at all"
        );
        assert!(
            !go(json!({ "id": "a", "doc": "x" }), &["id", "doc"]),
            "json columns"
        );
        assert!(
            !go(json!({ "id": "a", "gone": "x" }), &["id", "gone"]),
            "a column the table does not have"
        );
        assert!(
            stageable(
                &cols(&["id"]),
                &rows(STAGE_MIN_ROWS - 1, json!({ "id": "a" })),
                &idx
            )
            .is_none(),
            "small groups"
        );
    }
}
