//! Classifies PostgreSQL failures for the engine's retry logic: the server unreachable or
//! busy, and transaction conflicts, are worth retrying; what the server rejects is not.

use crate::error::{redact, SinkError};

/// Errors that are not the server's verdict on a statement (transport, pool, encoding),
/// shared with the MySQL drivers. `None` for `sqlx::Error::Database`.
pub(crate) fn classify_client(what: &str, e: &sqlx::Error) -> Option<SinkError> {
    use sqlx::Error as E;
    let msg = || format!("{what}: {}", redact(&e.to_string()));
    Some(match e {
        E::Database(_) => return None,
        E::Io(_)
        | E::Tls(_)
        | E::Protocol(_)
        | E::PoolTimedOut
        | E::PoolClosed
        | E::WorkerCrashed => SinkError::retryable(msg()),
        // Configuration, invalid arguments, encoding/decoding, missing types.
        _ => SinkError::permanent(msg()),
    })
}

/// Whether a SQLSTATE is transient.
fn retryable_state(code: &str) -> bool {
    matches!(
        code,
        // serialization_failure, deadlock_detected
        "40001" | "40P01"
        // admin_shutdown, crash_shutdown, cannot_connect_now, query_canceled (statement_timeout)
        | "57P01" | "57P02" | "57P03" | "57014"
        // lock_not_available, object_in_use, read_only_sql_transaction (a standby after failover)
        | "55P03" | "55006" | "25006"
        // idle_in_transaction_session_timeout
        | "25P03"
    ) || code.starts_with("08") // connection_exception
        || code.starts_with("53") // insufficient_resources (too many connections, disk full)
        || code.starts_with("58") // system_error (I/O)
}

/// A failed PostgreSQL call as the engine sees it.
pub fn classify(e: &sqlx::Error) -> SinkError {
    if let Some(s) = classify_client("PostgreSQL", e) {
        return s;
    }
    let Some(db) = e.as_database_error() else {
        return SinkError::permanent(format!("PostgreSQL: {}", redact(&e.to_string())));
    };
    let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
    let mut message = format!("PostgreSQL: {}", db.message());
    if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        if let Some(detail) = pg.detail() {
            message.push_str(&format!(" ({detail})"));
        }
    }
    message.push_str(&format!(" [SQLSTATE {code}]"));
    let message = redact(&message);
    if code == "53300" {
        // too_many_connections: slow down.
        return SinkError::throttled(message, None);
    }
    if retryable_state(&code) {
        SinkError::retryable(message)
    } else {
        SinkError::permanent(message)
    }
}

/// Whether a failed DDL statement lost a race with another writer that did the same thing
/// (two lanes creating one table: `CREATE TABLE IF NOT EXISTS` can still hit the catalog's
/// unique index; adding a column that another writer just added).
pub(crate) fn ddl_already_done(e: &sqlx::Error, sql: &str) -> bool {
    let Some(code) = e.as_database_error().and_then(|d| d.code()) else {
        return false;
    };
    let head = sql.trim_start().to_ascii_uppercase();
    match code.as_ref() {
        // duplicate_table, unique_violation on pg_type, duplicate_object (the row type)
        "42P07" | "23505" | "42710" if head.starts_with("CREATE TABLE IF NOT EXISTS") => true,
        "42701" if head.starts_with("ALTER TABLE") && head.contains(" ADD COLUMN ") => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_states_retry_and_rejections_do_not() {
        for c in [
            "40001", "40P01", "08006", "08001", "57P01", "53100", "58030", "25006",
        ] {
            assert!(retryable_state(c), "{c}");
        }
        for c in [
            "23505", "23502", "22P02", "22001", "42703", "42P01", "42601", "28P01", "3D000",
        ] {
            assert!(!retryable_state(c), "{c}");
        }
    }

    #[test]
    fn client_errors_are_classified_without_credentials() {
        let io = sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "refused postgres://u:pw@h/d",
        ));
        let e = classify(&io);
        assert!(e.is_retryable());
        assert!(!e.message.contains(":pw@"), "{}", e.message);
        assert!(classify(&sqlx::Error::PoolTimedOut).is_retryable());
        assert!(!classify(&sqlx::Error::RowNotFound).is_retryable());
        assert!(!classify(&sqlx::Error::Configuration("bad".into())).is_retryable());
    }
}
