//! CREATE TABLE for a resource schema, and the difference between a schema and a live table.

use super::dialect::Dialect;
use super::types::{AttrType, Attribute, ResourceSchema};

/// One column of an existing table, as the database describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveColumn {
    pub name: String,
    pub data_type: String,
}

/// What a live table lacks, has in excess, or types differently.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchemaDiff {
    /// `(column, type to create)`.
    pub missing: Vec<(String, String)>,
    /// Columns of the table that the schema does not have (besides `id`).
    pub extra: Vec<String>,
    /// `(column, wanted type, live type)`.
    pub mismatched: Vec<(String, String, String)>,
}

impl SchemaDiff {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty() && self.mismatched.is_empty()
    }

    /// A one-line description for warnings and errors.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.missing.is_empty() {
            parts.push(format!(
                "missing columns: {}",
                self.missing
                    .iter()
                    .map(|(c, _)| c.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if !self.extra.is_empty() {
            parts.push(format!("extra columns: {}", self.extra.join(", ")));
        }
        if !self.mismatched.is_empty() {
            parts.push(format!(
                "different types: {}",
                self.mismatched
                    .iter()
                    .map(|(c, w, l)| format!("{c} (expected {w}, found {l})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        parts.join("; ")
    }
}

/// `CREATE TABLE IF NOT EXISTS` with the key column (`id`, or the destination's `primaryKey`)
/// as primary key and one column per attribute.
pub fn create_table(d: Dialect, table: &str, schema: &ResourceSchema) -> Result<String, String> {
    Dialect::validate_ident(table.rsplit('.').next().unwrap_or(table))?;
    Dialect::validate_ident(schema.key())?;
    let mut cols = vec![format!(
        "{} {} PRIMARY KEY",
        d.quote(schema.key()),
        d.id_type()
    )];
    for a in schema
        .attributes
        .iter()
        .filter(|a| !a.name.eq_ignore_ascii_case(schema.key()))
    {
        Dialect::validate_ident(&a.name)?;
        let not_null = if a.required { " NOT NULL" } else { "" };
        cols.push(format!(
            "{} {}{not_null}",
            d.quote(&a.name),
            d.column_type(a)
        ));
    }
    Ok(format!(
        "CREATE TABLE IF NOT EXISTS {} ({}){}",
        d.quote_table(table),
        cols.join(", "),
        table_options(d)
    ))
}

/// MySQL tables are created as utf8mb4 whatever the server's default (latin1 cannot hold
/// most of Unicode).
fn table_options(d: Dialect) -> &'static str {
    if d == Dialect::MySql {
        " DEFAULT CHARSET=utf8mb4"
    } else {
        ""
    }
}

/// `ALTER TABLE … ADD COLUMN` (always nullable: existing rows have no value).
pub fn add_column(d: Dialect, table: &str, column: &str, sql_type: &str) -> Result<String, String> {
    Dialect::validate_ident(column)?;
    Ok(format!(
        "ALTER TABLE {} ADD COLUMN {} {sql_type}",
        d.quote_table(table),
        d.quote(column)
    ))
}

/// `ALTER TABLE … DROP COLUMN`.
pub fn drop_column(d: Dialect, table: &str, column: &str) -> String {
    format!(
        "ALTER TABLE {} DROP COLUMN {}",
        d.quote_table(table),
        d.quote(column)
    )
}

/// `DROP TABLE IF EXISTS`.
pub fn drop_table(d: Dialect, table: &str) -> String {
    format!("DROP TABLE IF EXISTS {}", d.quote_table(table))
}

/// The `logTable` column holding the change's identity (`{outbox id}:{seq}`): the same for a
/// change applied twice (a replay after a crash), so duplicates can be told apart.
pub const LOG_CHANGE_ID: &str = "change_id";

/// The type of [`LOG_CHANGE_ID`] when it is added to an existing log table.
pub fn log_change_id_type(d: Dialect) -> &'static str {
    if d == Dialect::MySql {
        "VARCHAR(255)"
    } else {
        "TEXT"
    }
}

/// The `logTable` audit table: one row per applied operation.
pub fn log_table(d: Dialect, table: &str) -> Result<String, String> {
    Dialect::validate_ident(table.rsplit('.').next().unwrap_or(table))?;
    let q = |c: &str| d.quote(c);
    let (id, json, ts) = match d {
        Dialect::Postgres => (
            "BIGSERIAL PRIMARY KEY",
            "JSONB",
            "TIMESTAMPTZ NOT NULL DEFAULT NOW()",
        ),
        Dialect::MySql => (
            "BIGINT AUTO_INCREMENT PRIMARY KEY",
            "JSON",
            "DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3)",
        ),
        Dialect::Sqlite => (
            "INTEGER PRIMARY KEY AUTOINCREMENT",
            "TEXT",
            "TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))",
        ),
    };
    let text = if d == Dialect::MySql {
        "VARCHAR(255)"
    } else {
        "TEXT"
    };
    Ok(format!(
        "CREATE TABLE IF NOT EXISTS {} ({} {id}, {} {text} NOT NULL, {} {text} NOT NULL, {} {text} NOT NULL, {} {json}, {} {ts}, {} {text}){}",
        d.quote_table(table),
        q("id"),
        q("resource"),
        q("operation"),
        q("record_id"),
        q("data"),
        q("replicated_at"),
        q(LOG_CHANGE_ID),
        table_options(d),
    ))
}

/// The column an unknown field would get, from its JSON value (schema evolution on write).
pub fn infer_attribute(name: &str, value: &serde_json::Value) -> Attribute {
    use serde_json::Value;
    let kind = match value {
        Value::Number(_) => AttrType::Number,
        Value::Bool(_) => AttrType::Boolean,
        Value::Object(_) => AttrType::Json,
        Value::Array(_) => AttrType::Array,
        Value::String(_) | Value::Null => AttrType::String,
    };
    Attribute {
        name: name.to_string(),
        kind,
        required: false,
        max_length: None,
    }
}

/// Compares a schema with a live table's columns (case-insensitive names).
pub fn diff(d: Dialect, schema: &ResourceSchema, live: &[LiveColumn]) -> SchemaDiff {
    let mut out = SchemaDiff::default();
    let key = schema.key();
    for a in schema
        .attributes
        .iter()
        .filter(|a| !a.name.eq_ignore_ascii_case(key))
    {
        let wanted = d.column_type(a);
        match live.iter().find(|c| c.name.eq_ignore_ascii_case(&a.name)) {
            None => out.missing.push((a.name.clone(), wanted)),
            Some(c) if !d.same_type(&wanted, &c.data_type) => {
                out.mismatched
                    .push((a.name.clone(), wanted, c.data_type.clone()))
            }
            Some(_) => {}
        }
    }
    for c in live {
        if !c.name.eq_ignore_ascii_case(key)
            && !schema
                .attributes
                .iter()
                .any(|a| a.name.eq_ignore_ascii_case(&c.name))
        {
            out.extra.push(c.name.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::parse_attributes;
    use serde_json::json;

    #[test]
    fn creates_tables_with_quoted_identifiers() {
        let s = parse_attributes(
            &json!({ "email": "string|required|maxlength:255", "select": "number", "meta": "json" }),
        );
        assert_eq!(
            create_table(Dialect::Postgres, "users_table", &s).unwrap(),
            "CREATE TABLE IF NOT EXISTS \"users_table\" (\"id\" VARCHAR(255) PRIMARY KEY, \"email\" VARCHAR(255) NOT NULL, \"meta\" JSONB, \"select\" DOUBLE PRECISION)"
        );
        assert!(create_table(Dialect::MySql, "t", &s)
            .unwrap()
            .contains("`select` DOUBLE"));
        assert!(create_table(Dialect::Postgres, "", &s).is_err());
    }

    #[test]
    fn diffs_missing_extra_and_mismatched_columns() {
        let s = parse_attributes(
            &json!({ "name": "string", "age": "number", "phone": "string|maxlength:20" }),
        );
        let live = vec![
            LiveColumn {
                name: "id".into(),
                data_type: "character varying".into(),
            },
            LiveColumn {
                name: "name".into(),
                data_type: "text".into(),
            },
            LiveColumn {
                name: "age".into(),
                data_type: "text".into(),
            },
            LiveColumn {
                name: "legacy".into(),
                data_type: "text".into(),
            },
        ];
        let d = diff(Dialect::Postgres, &s, &live);
        assert_eq!(
            d.missing,
            vec![("phone".to_string(), "VARCHAR(20)".to_string())]
        );
        assert_eq!(d.extra, vec!["legacy".to_string()]);
        assert_eq!(
            d.mismatched,
            vec![(
                "age".to_string(),
                "DOUBLE PRECISION".to_string(),
                "text".to_string()
            )]
        );
        assert!(d.describe().contains("missing columns: phone"));
        assert!(diff(
            Dialect::Postgres,
            &parse_attributes(&json!({ "name": "string" })),
            &live[..2]
        )
        .is_empty());
    }
}
