//! What differs between SQL databases: type names, identifier quoting, primary key type.

use super::types::{AttrType, Attribute};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    /// MySQL, MariaDB and PlanetScale.
    MySql,
    /// SQLite, libSQL and Turso.
    Sqlite,
}

/// Longest identifier all three dialects accept (PostgreSQL's limit).
const MAX_IDENT: usize = 63;

impl Dialect {
    /// Checks an identifier (table or column) before it is ever quoted into SQL. Quoting makes
    /// any name safe; this rejects names no database accepts, with a readable reason.
    pub fn validate_ident(name: &str) -> Result<(), String> {
        if name.is_empty() {
            return Err("an identifier is empty".into());
        }
        if name.len() > MAX_IDENT {
            return Err(format!(
                "identifier '{}…' is longer than {MAX_IDENT} bytes",
                &name[..name.char_indices().nth(20).map_or(name.len(), |(i, _)| i)]
            ));
        }
        if name.chars().any(|c| c == '\0' || c.is_control()) {
            return Err(format!("identifier {name:?} contains a control character"));
        }
        Ok(())
    }

    /// Quotes an identifier (doubling the quote character inside it).
    pub fn quote(self, name: &str) -> String {
        match self {
            Self::MySql => format!("`{}`", name.replace('`', "``")),
            Self::Postgres | Self::Sqlite => format!("\"{}\"", name.replace('"', "\"\"")),
        }
    }

    /// A table reference, `schema.table` allowed: each part quoted on its own.
    pub fn quote_table(self, table: &str) -> String {
        table
            .split('.')
            .map(|p| self.quote(p))
            .collect::<Vec<_>>()
            .join(".")
    }

    pub fn id_type(self) -> &'static str {
        match self {
            Self::Postgres | Self::MySql => "VARCHAR(255)",
            Self::Sqlite => "TEXT",
        }
    }

    /// The spec's type-mapping table (SQLite: its storage classes).
    pub fn column_type(self, a: &Attribute) -> String {
        use AttrType::*;
        match self {
            Self::Postgres => match &a.kind {
                String => a
                    .max_length
                    .map_or("TEXT".into(), |n| format!("VARCHAR({n})")),
                Number => "DOUBLE PRECISION".into(),
                Boolean => "BOOLEAN".into(),
                Json | Array | Embedding(_) => "JSONB".into(),
                Ip4 | Ip6 => "INET".into(),
                Secret => "TEXT".into(),
                Uuid => "UUID".into(),
                Date => "DATE".into(),
                DateTime => "TIMESTAMPTZ".into(),
            },
            Self::MySql => match &a.kind {
                String => a
                    .max_length
                    .map_or("TEXT".into(), |n| format!("VARCHAR({n})")),
                Number => "DOUBLE".into(),
                Boolean => "TINYINT(1)".into(),
                Json | Array | Embedding(_) => "JSON".into(),
                Ip4 => "VARCHAR(15)".into(),
                Ip6 => "VARCHAR(45)".into(),
                Secret => "TEXT".into(),
                Uuid => "CHAR(36)".into(),
                Date => "DATE".into(),
                DateTime => "DATETIME(3)".into(),
            },
            Self::Sqlite => match &a.kind {
                Number => "REAL".into(),
                Boolean => "INTEGER".into(),
                // JSON is stored as text (SQLite's json functions read it).
                _ => "TEXT".into(),
            },
        }
    }

    /// Whether a live column type (as the database reports it) is what `column_type` creates.
    /// Lenient about spelling (`double precision` = `float8`, `varchar(255)` = `character varying`).
    pub fn same_type(self, wanted: &str, live: &str) -> bool {
        normalize(self, wanted) == normalize(self, live)
    }
}

fn normalize(d: Dialect, t: &str) -> String {
    let t = t.trim().to_ascii_lowercase();
    let base = t.split('(').next().unwrap_or(&t).trim().to_string();
    let mapped = match (d, base.as_str()) {
        (Dialect::Postgres, "double precision" | "float8") => "float8",
        (Dialect::Postgres, "varchar" | "character varying") => "varchar",
        (Dialect::Postgres, "timestamptz" | "timestamp with time zone") => "timestamptz",
        (Dialect::Postgres, "boolean" | "bool") => "bool",
        (Dialect::MySql, "tinyint" | "boolean" | "bool") => "tinyint",
        (Dialect::MySql, "json" | "longtext") => "json",
        (Dialect::MySql, "double" | "double precision" | "real") => "double",
        (Dialect::Sqlite, b) if b.contains("int") => "integer",
        (Dialect::Sqlite, b) if b.contains("char") || b.contains("clob") || b.contains("text") => {
            "text"
        }
        (Dialect::Sqlite, b) if b.contains("real") || b.contains("floa") || b.contains("doub") => {
            "real"
        }
        (_, b) => return b.to_string(),
    };
    mapped.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: AttrType, max: Option<u32>) -> Attribute {
        Attribute {
            name: "c".into(),
            kind,
            required: false,
            max_length: max,
        }
    }

    #[test]
    fn maps_the_spec_table() {
        use AttrType::*;
        let rows = [
            (String, None, "TEXT", "TEXT"),
            (String, Some(255), "VARCHAR(255)", "VARCHAR(255)"),
            (Number, None, "DOUBLE PRECISION", "DOUBLE"),
            (Boolean, None, "BOOLEAN", "TINYINT(1)"),
            (Json, None, "JSONB", "JSON"),
            (Array, None, "JSONB", "JSON"),
            (Embedding(1536), None, "JSONB", "JSON"),
            (Ip4, None, "INET", "VARCHAR(15)"),
            (Ip6, None, "INET", "VARCHAR(45)"),
            (Secret, None, "TEXT", "TEXT"),
            (Uuid, None, "UUID", "CHAR(36)"),
            (Date, None, "DATE", "DATE"),
        ];
        for (kind, max, pg, my) in rows {
            assert_eq!(Dialect::Postgres.column_type(&attr(kind.clone(), max)), pg);
            assert_eq!(Dialect::MySql.column_type(&attr(kind, max)), my);
        }
        assert_eq!(
            Dialect::Postgres.column_type(&attr(DateTime, None)),
            "TIMESTAMPTZ"
        );
        assert_eq!(Dialect::Sqlite.column_type(&attr(Number, None)), "REAL");
        assert_eq!(Dialect::Sqlite.column_type(&attr(Json, None)), "TEXT");
    }

    #[test]
    fn quotes_and_validates_identifiers() {
        assert_eq!(Dialect::Postgres.quote("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(Dialect::MySql.quote("a`b"), "`a``b`");
        assert_eq!(
            Dialect::Postgres.quote_table("analytics.users"),
            "\"analytics\".\"users\""
        );
        assert!(Dialect::validate_ident("select").is_ok());
        assert!(Dialect::validate_ident("").is_err());
        assert!(Dialect::validate_ident("a\0b").is_err());
        assert!(Dialect::validate_ident(&"x".repeat(64)).is_err());
    }

    #[test]
    fn compares_live_types_leniently() {
        assert!(Dialect::Postgres.same_type("DOUBLE PRECISION", "double precision"));
        assert!(Dialect::Postgres.same_type("VARCHAR(255)", "character varying"));
        assert!(Dialect::Postgres.same_type("TIMESTAMPTZ", "timestamp with time zone"));
        assert!(!Dialect::Postgres.same_type("TEXT", "integer"));
        assert!(Dialect::MySql.same_type("TINYINT(1)", "tinyint"));
        assert!(Dialect::MySql.same_type("JSON", "longtext"));
        assert!(Dialect::Sqlite.same_type("REAL", "double"));
    }
}
