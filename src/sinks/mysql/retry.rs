//! Classifies MySQL / MariaDB / PlanetScale failures for the engine's retry logic.

use sqlx::mysql::MySqlDatabaseError;

use crate::error::{redact, SinkError};
use crate::sinks::postgres::classify_client;

/// Server error numbers worth retrying.
fn retryable_number(n: u16) -> bool {
    matches!(
        n,
        1205 // lock wait timeout
        | 1213 // deadlock
        | 1053 // server shutdown in progress
        | 1077 | 1078 | 1079 | 1080 // normal shutdown / got signal / shutdown complete / forcing close
        | 1152 | 1153 | 1154 | 1155 | 1156 | 1157 | 1158 | 1159 | 1160 | 1161 // aborted connection / network read/write errors
        | 1290 | 1792 | 1836 // read-only (failover in progress)
        | 1317 // query interrupted
        | 1615 // prepared statement needs to be re-prepared
        | 1927 // connection killed (MariaDB)
        | 2006 | 2013 // server has gone away / lost connection
        | 3024 // maximum statement execution time exceeded
        | 4031 // disconnected by the server for inactivity
    )
}

/// Too many connections: slow down.
fn throttling_number(n: u16) -> bool {
    matches!(n, 1040 | 1203 | 1226)
}

/// Vitess (PlanetScale) reports routing and availability trouble as 1105 with a message.
fn vitess_transient(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "not serving",
        "unavailable",
        "deadline exceeded",
        "connection refused",
        "try again",
        "resource_exhausted",
        "too many connections",
        "connection reset",
    ]
    .iter()
    .any(|p| m.contains(p))
}

pub fn classify(e: &sqlx::Error) -> SinkError {
    if let Some(s) = classify_client("MySQL", e) {
        return s;
    }
    let Some(db) = e.as_database_error() else {
        return SinkError::permanent(format!("MySQL: {}", redact(&e.to_string())));
    };
    let number = db
        .try_downcast_ref::<MySqlDatabaseError>()
        .map(MySqlDatabaseError::number)
        .unwrap_or(0);
    let message = redact(&format!("MySQL: {} [error {number}]", db.message()));
    if throttling_number(number) {
        SinkError::throttled(message, None)
    } else if retryable_number(number) || (number == 1105 && vitess_transient(db.message())) {
        SinkError::retryable(message)
    } else {
        SinkError::permanent(message)
    }
}

/// A DDL statement that lost a race with another writer doing the same (a column just added).
pub(crate) fn ddl_already_done(e: &sqlx::Error, sql: &str) -> bool {
    let number = e.as_database_error().and_then(|d| {
        d.try_downcast_ref::<MySqlDatabaseError>()
            .map(MySqlDatabaseError::number)
    });
    let head = sql.trim_start().to_ascii_uppercase();
    match number {
        Some(1050) => head.starts_with("CREATE TABLE IF NOT EXISTS"),
        Some(1060) => head.starts_with("ALTER TABLE") && head.contains(" ADD COLUMN "),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_errors_retry_and_rejections_do_not() {
        for n in [1205, 1213, 2006, 2013, 1927, 1290] {
            assert!(retryable_number(n), "{n}");
        }
        for n in [
            1062, 1048, 1054, 1146, 1366, 1406, 1264, 1292, 3140, 4025, 1045, 1049, 1064, 1142,
        ] {
            assert!(!retryable_number(n) && !throttling_number(n), "{n}");
        }
        assert!(throttling_number(1040));
        assert!(vitess_transient(
            "vttablet: rpc error: code = Unavailable desc = primary is not serving"
        ));
        assert!(!vitess_transient("syntax error at position 5"));
    }

    #[test]
    fn client_errors_never_show_credentials() {
        let io = sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset mysql://u:pw@h/d",
        ));
        let e = classify(&io);
        assert!(
            e.is_retryable() && !e.message.contains(":pw@"),
            "{}",
            e.message
        );
        assert!(classify(&sqlx::Error::PoolTimedOut).is_retryable());
    }
}
