//! Classifies libSQL failures for the engine's retry logic.
//!
//! Local files report SQLite's extended result code (`Error::SqliteFailure`). A remote server
//! reports errors as text inside `Error::Hrana`: a stream error carries the SQLite code name
//! (`code: "SQLITE_CONSTRAINT_CHECK"`), an HTTP failure `status=…`, a transport failure
//! `http error`. Codes decide first; without one, SQL error messages are permanent and anything
//! else (transport, unexpected answers) is retried: the engine bounds the retries.

use crate::error::{redact, SinkError};

/// SQLite primary result codes that are worth retrying.
const RETRYABLE_CODES: &[i32] = &[
    5,  // SQLITE_BUSY
    6,  // SQLITE_LOCKED
    7,  // SQLITE_NOMEM
    9,  // SQLITE_INTERRUPT
    10, // SQLITE_IOERR
    13, // SQLITE_FULL
    14, // SQLITE_CANTOPEN
    15, // SQLITE_PROTOCOL
    17, // SQLITE_SCHEMA (the schema changed under a prepared statement)
];

/// Error codes of a libSQL server (SQLite code names plus sqld's own) worth retrying.
const RETRYABLE_NAMES: &[&str] = &[
    "SQLITE_BUSY",
    "SQLITE_LOCKED",
    "SQLITE_NOMEM",
    "SQLITE_INTERRUPT",
    "SQLITE_IOERR",
    "SQLITE_FULL",
    "SQLITE_CANTOPEN",
    "SQLITE_PROTOCOL",
    "SQLITE_SCHEMA",
    "TRANSACTION_TIMEOUT",
    "TRANSACTION_BUSY",
    "STREAM_EXPIRED",
    "BLOCKED",
];

/// Messages of SQL errors that no retry fixes (a row or a statement the table cannot take).
const PERMANENT_MESSAGES: &[&str] = &[
    "constraint failed",
    "datatype mismatch",
    "no such table",
    "no such column",
    "has no column named",
    "syntax error",
    "does not match any primary key or unique constraint",
    "too big",
    "too many sql variables",
    "too many columns",
    "sql_parse_error",
    "sql_input_error",
    "args_invalid",
];

/// Classifies a libSQL error; `context` says what was being done ("writing to table 't'").
pub fn classify(error: &libsql::Error, context: &str) -> SinkError {
    let detail = redact(&error.to_string());
    let message = format!("Turso {context}: {detail}");
    let retryable = match error {
        libsql::Error::SqliteFailure(code, _) => RETRYABLE_CODES.contains(&(code & 0xff)),
        libsql::Error::ConnectionFailed(_) | libsql::Error::InvalidTlsConfiguration(_) => true,
        libsql::Error::Misuse(_)
        | libsql::Error::ToSqlConversionFailure(_)
        | libsql::Error::Sqlite3SyntaxError(..)
        | libsql::Error::Sqlite3UnsupportedStatement
        | libsql::Error::Sqlite3ParserError(_)
        | libsql::Error::InvalidColumnName(_) => false,
        _ => text_is_retryable(&detail),
    };
    if retryable {
        SinkError::retryable(message)
    } else {
        SinkError::permanent(message)
    }
}

/// The error code a server's message carries, if any: `code: "SQLITE_BUSY"` in a stream
/// error, `"code":"STREAM_EXPIRED"` in the JSON body of an HTTP error.
fn code_name(text: &str) -> Option<&str> {
    let at = ["code: \"", "\"code\":\""]
        .iter()
        .find_map(|p| text.find(p).map(|i| i + p.len()))?;
    let rest = &text[at..];
    let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))?;
    Some(&rest[..end]).filter(|c| !c.is_empty())
}

/// `status=NNN` of a failed HTTP request, if any.
fn http_status(text: &str) -> Option<u16> {
    let at = text.find("status=")? + 7;
    text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()
}

fn text_is_retryable(text: &str) -> bool {
    if let Some(code) = code_name(text) {
        return RETRYABLE_NAMES.iter().any(|r| code.starts_with(r));
    }
    let lower = text.to_ascii_lowercase();
    if PERMANENT_MESSAGES.iter().any(|m| lower.contains(m)) {
        return false;
    }
    if let Some(status) = http_status(text) {
        // 401/403: a wrong or revoked token does not fix itself (as the webhook's 4xx).
        return !matches!(status, 400..=499) || matches!(status, 408 | 409 | 425 | 429);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn kind(e: libsql::Error) -> ErrorKind {
        classify(&e, "test").kind
    }

    #[test]
    fn local_codes() {
        let busy = libsql::Error::SqliteFailure(5, "database is locked".into());
        assert_eq!(kind(busy), ErrorKind::Retryable);
        // SQLITE_BUSY_SNAPSHOT (517) and SQLITE_IOERR_WRITE (778) are extended codes.
        assert_eq!(
            kind(libsql::Error::SqliteFailure(517, "x".into())),
            ErrorKind::Retryable
        );
        assert_eq!(
            kind(libsql::Error::SqliteFailure(778, "x".into())),
            ErrorKind::Retryable
        );
        // SQLITE_CONSTRAINT_CHECK (275), SQLITE_CONSTRAINT_NOTNULL (1299), MISMATCH, ERROR.
        for code in [275, 1299, 20, 1] {
            assert_eq!(
                kind(libsql::Error::SqliteFailure(code, "x".into())),
                ErrorKind::Permanent,
                "{code}"
            );
        }
        assert_eq!(
            kind(libsql::Error::ConnectionFailed("refused".into())),
            ErrorKind::Retryable
        );
    }

    #[test]
    fn remote_messages() {
        let hrana = |s: &str| libsql::Error::Hrana(s.to_string().into());
        assert_eq!(
            kind(hrana(
                r#"stream error: `Error { message: "SQLite error: CHECK constraint failed: n", code: "SQLITE_CONSTRAINT_CHECK" }`"#
            )),
            ErrorKind::Permanent
        );
        // A column named "connection" must not make a constraint error look transient.
        assert_eq!(
            kind(hrana(
                r#"stream error: `Error { message: "UNIQUE constraint failed: t.connection", code: "SQLITE_CONSTRAINT_UNIQUE" }`"#
            )),
            ErrorKind::Permanent
        );
        assert_eq!(
            kind(hrana(
                r#"stream error: `Error { message: "database is locked", code: "SQLITE_BUSY" }`"#
            )),
            ErrorKind::Retryable
        );
        assert_eq!(
            kind(hrana("api error: `no such table: t`")),
            ErrorKind::Permanent
        );
        assert_eq!(
            kind(hrana(
                "http error: `error trying to connect: tcp connect error: Connection refused`"
            )),
            ErrorKind::Retryable
        );
        assert_eq!(
            kind(hrana("api error: `status=502 Bad Gateway, body=`")),
            ErrorKind::Retryable
        );
        assert_eq!(
            kind(hrana("api error: `status=429 Too Many Requests, body=`")),
            ErrorKind::Retryable
        );
        assert_eq!(
            kind(hrana("api error: `status=401 Unauthorized, body=`")),
            ErrorKind::Permanent
        );
        // What sqld answers for a stream idle too long, and for a malformed statement.
        let expired = r#"api error: `status=400 Bad Request, body={"message":"The stream has expired due to inactivity","code":"STREAM_EXPIRED"}`"#;
        assert_eq!(kind(hrana(expired)), ErrorKind::Retryable);
        let parse = r#"api error: `status=400 Bad Request, body={"message":"bad","code":"SQL_PARSE_ERROR"}`"#;
        assert_eq!(kind(hrana(parse)), ErrorKind::Permanent);
        assert_eq!(
            kind(hrana("unexpected response: `...`")),
            ErrorKind::Retryable
        );
    }

    #[test]
    fn messages_name_the_context_and_hide_credentials() {
        let e = classify(
            &libsql::Error::ConnectionFailed("https://tok@db.turso.io".into()),
            "connecting",
        );
        assert!(e.message.starts_with("Turso connecting: "), "{}", e.message);
        assert!(!e.message.contains("tok@"), "{}", e.message);
    }
}
