//! JSON values → MySQL parameters, by the live type of the column they go to: JSON columns get
//! JSON text, `TINYINT(1)` booleans, DATETIME/TIMESTAMP `YYYY-MM-DD HH:MM:SS.ffffff` in UTC
//! (from ISO 8601 or epoch milliseconds), DATE `YYYY-MM-DD`, text columns the text of
//! non-string values. Everything is bound, never interpolated.

use serde_json::Value;

/// A bound parameter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Param {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Text(String),
}

impl Param {
    /// Rough size on the wire, to keep statements well under `max_allowed_packet`.
    pub(crate) fn wire_size(&self) -> usize {
        match self {
            Self::Text(s) => s.len() + 9,
            _ => 9,
        }
    }
}

/// What a column does with a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ColKind {
    Json,
    Bool,
    Numeric,
    DateTime,
    Date,
    Text,
    /// No live type known: values keep their JSON type.
    Unknown,
}

/// The kind of a column from its MySQL `COLUMN_TYPE` (lowercase; `json` for MariaDB's JSON
/// alias of LONGTEXT).
pub(crate) fn kind_of(ty: Option<&str>) -> ColKind {
    let Some(ty) = ty else {
        return ColKind::Unknown;
    };
    let ty = ty.trim().to_ascii_lowercase();
    if ty == "json" {
        return ColKind::Json;
    }
    if ty.starts_with("tinyint(1)") || ty == "bool" || ty == "boolean" {
        return ColKind::Bool;
    }
    let base = ty.split(['(', ' ']).next().unwrap_or("");
    match base {
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "decimal"
        | "numeric" | "dec" | "fixed" | "float" | "double" | "real" | "bit" | "year" => {
            ColKind::Numeric
        }
        "datetime" | "timestamp" => ColKind::DateTime,
        "date" => ColKind::Date,
        _ => ColKind::Text,
    }
}

fn number(n: &serde_json::Number) -> Param {
    if let Some(i) = n.as_i64() {
        Param::Int(i)
    } else if let Some(u) = n.as_u64() {
        Param::UInt(u)
    } else {
        Param::Float(n.as_f64().unwrap_or(0.0))
    }
}

fn epoch_ms_micros(n: &serde_json::Number) -> Option<i64> {
    if let Some(i) = n.as_i64() {
        return i.checked_mul(1000);
    }
    let f = n.as_f64()?;
    f.is_finite().then(|| (f * 1000.0).round() as i64)
}

/// Converts one value for a column of `kind`.
pub(crate) fn convert(v: &Value, kind: ColKind) -> Param {
    let json_text = || Param::Text(v.to_string());
    match (kind, v) {
        (_, Value::Null) => Param::Null,
        (ColKind::Json, _) => json_text(),
        (_, Value::Object(_) | Value::Array(_)) => json_text(),
        (ColKind::Text, Value::String(s))
        | (ColKind::Unknown | ColKind::Bool | ColKind::Numeric, Value::String(s)) => {
            Param::Text(s.clone())
        }
        (ColKind::Text, Value::Number(n)) => Param::Text(n.to_string()),
        (ColKind::Text, Value::Bool(b)) => Param::Text(b.to_string()),
        (ColKind::Bool | ColKind::Unknown, Value::Bool(b)) => Param::Bool(*b),
        (ColKind::Numeric, Value::Bool(b)) => Param::Int(i64::from(*b)),
        (ColKind::Bool | ColKind::Numeric | ColKind::Unknown, Value::Number(n)) => number(n),
        (ColKind::DateTime, Value::String(s)) => {
            Param::Text(parse_iso8601(s).map_or_else(|| s.clone(), format_datetime))
        }
        (ColKind::DateTime, Value::Number(n)) => {
            epoch_ms_micros(n).map_or_else(|| number(n), |m| Param::Text(format_datetime(m)))
        }
        (ColKind::Date, Value::String(s)) => {
            Param::Text(date_part(s).map_or_else(|| s.clone(), str::to_string))
        }
        (ColKind::Date, Value::Number(n)) => epoch_ms_micros(n).map_or_else(
            || number(n),
            |m| Param::Text(format_datetime(m)[..10].to_string()),
        ),
        (ColKind::DateTime | ColKind::Date, Value::Bool(b)) => Param::Bool(*b),
    }
}

/// `YYYY-MM-DD` at the start of an ISO 8601 string (the calendar date as written, as
/// PostgreSQL's DATE input reads it).
fn date_part(s: &str) -> Option<&str> {
    let head = s.get(..10)?;
    let rest = &s[10..];
    if !(rest.is_empty() || rest.starts_with(['T', 't', ' '])) {
        return None;
    }
    let (y, m, d) = (
        head.get(..4)?.parse::<i64>().ok()?,
        head.get(5..7)?.parse::<u32>().ok()?,
        head.get(8..10)?.parse::<u32>().ok()?,
    );
    (head.as_bytes()[4] == b'-' && head.as_bytes()[7] == b'-' && valid_date(y, m, d))
        .then_some(head)
}

fn valid_date(y: i64, m: u32, d: u32) -> bool {
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&d)
}

/// Days since 1970-01-01 of a civil date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Parses ISO 8601 / RFC 3339 (`2025-10-18`, `2025-10-18T10:30:00.123Z`,
/// `2025-10-18 10:30:00+02:00`) into microseconds since the Unix epoch, UTC. A time without
/// an offset is taken as UTC.
pub(crate) fn parse_iso8601(s: &str) -> Option<i64> {
    let s = s.trim();
    let date = s.get(..10)?;
    date_part(date)?;
    let (y, mo, d) = (
        date[..4].parse::<i64>().ok()?,
        date[5..7].parse::<u32>().ok()?,
        date[8..10].parse::<u32>().ok()?,
    );
    let mut micros = days_from_civil(y, mo, d) * 86_400_000_000;
    let rest = &s[10..];
    if rest.is_empty() {
        return Some(micros);
    }
    let rest = rest.strip_prefix(['T', 't', ' '])?;
    let b = rest.as_bytes();
    let two = |i: usize| -> Option<i64> {
        rest.get(i..i + 2)
            .filter(|x| x.bytes().all(|c| c.is_ascii_digit()))?
            .parse()
            .ok()
    };
    let h = two(0)?;
    if b.get(2) != Some(&b':') {
        return None;
    }
    let mi = two(3)?;
    let mut i = 5;
    let mut sec = 0;
    let mut frac = 0i64;
    if b.get(i) == Some(&b':') {
        sec = two(6)?;
        i = 8;
        if matches!(b.get(i), Some(b'.' | b',')) {
            i += 1;
            let start = i;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            let digits = &rest[start..i];
            if digits.is_empty() {
                return None;
            }
            let mut six: String = digits.chars().take(6).collect();
            while six.len() < 6 {
                six.push('0');
            }
            frac = six.parse().ok()?;
        }
    }
    if h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    micros += ((h * 60 + mi) * 60 + sec.min(59)) * 1_000_000 + frac;
    let zone = &rest[i..];
    let offset_min = match zone {
        "" | "Z" | "z" => 0,
        _ => {
            let sign = match zone.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let z = zone[1..].replace(':', "");
            if z.len() != 2 && z.len() != 4 || !z.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let oh: i64 = z[..2].parse().ok()?;
            let om: i64 = if z.len() == 4 {
                z[2..].parse().ok()?
            } else {
                0
            };
            if oh > 23 || om > 59 {
                return None;
            }
            sign * (oh * 60 + om)
        }
    };
    Some(micros - offset_min * 60_000_000)
}

/// `YYYY-MM-DD HH:MM:SS.ffffff` (UTC) for MySQL DATETIME/TIMESTAMP.
pub(crate) fn format_datetime(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{frac:06}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn column_kinds_from_mysql_types() {
        assert_eq!(kind_of(Some("json")), ColKind::Json);
        assert_eq!(kind_of(Some("tinyint(1)")), ColKind::Bool);
        assert_eq!(kind_of(Some("tinyint(4)")), ColKind::Numeric);
        assert_eq!(kind_of(Some("bigint(20) unsigned")), ColKind::Numeric);
        assert_eq!(kind_of(Some("double")), ColKind::Numeric);
        assert_eq!(kind_of(Some("datetime(3)")), ColKind::DateTime);
        assert_eq!(kind_of(Some("timestamp")), ColKind::DateTime);
        assert_eq!(kind_of(Some("date")), ColKind::Date);
        assert_eq!(kind_of(Some("varchar(255)")), ColKind::Text);
        assert_eq!(kind_of(Some("longtext")), ColKind::Text);
        assert_eq!(kind_of(None), ColKind::Unknown);
    }

    #[test]
    fn values_follow_the_column() {
        assert_eq!(
            convert(&json!({ "a": [1, true] }), ColKind::Json),
            Param::Text("{\"a\":[1,true]}".into())
        );
        assert_eq!(
            convert(&json!("hi"), ColKind::Json),
            Param::Text("\"hi\"".into()),
            "a string stays a JSON string"
        );
        assert_eq!(
            convert(&json!(true), ColKind::Json),
            Param::Text("true".into())
        );
        assert_eq!(convert(&json!(null), ColKind::Json), Param::Null);
        assert_eq!(convert(&json!(true), ColKind::Bool), Param::Bool(true));
        assert_eq!(convert(&json!(true), ColKind::Numeric), Param::Int(1));
        assert_eq!(convert(&json!(1.5), ColKind::Numeric), Param::Float(1.5));
        assert_eq!(
            convert(&json!(u64::MAX), ColKind::Numeric),
            Param::UInt(u64::MAX)
        );
        assert_eq!(
            convert(&json!("abc"), ColKind::Numeric),
            Param::Text("abc".into()),
            "the server rejects it"
        );
        assert_eq!(
            convert(&json!([1]), ColKind::Text),
            Param::Text("[1]".into())
        );
        assert_eq!(convert(&json!(42), ColKind::Text), Param::Text("42".into()));
        assert_eq!(
            convert(&json!(false), ColKind::Text),
            Param::Text("false".into())
        );
        assert_eq!(
            convert(&json!("2025-10-18T10:30:00.123Z"), ColKind::DateTime),
            Param::Text("2025-10-18 10:30:00.123000".into())
        );
        assert_eq!(
            convert(&json!("2025-10-18T01:30:00+02:00"), ColKind::DateTime),
            Param::Text("2025-10-17 23:30:00.000000".into())
        );
        assert_eq!(
            convert(&json!(1_760_783_400_000u64), ColKind::DateTime),
            Param::Text("2025-10-18 10:30:00.000000".into())
        );
        assert_eq!(
            convert(&json!("not a date"), ColKind::DateTime),
            Param::Text("not a date".into())
        );
        assert_eq!(
            convert(&json!("2024-02-29T00:00:00.000Z"), ColKind::Date),
            Param::Text("2024-02-29".into())
        );
        assert_eq!(
            convert(&json!("2024-02-29"), ColKind::Date),
            Param::Text("2024-02-29".into())
        );
        assert_eq!(
            convert(&json!("2023-02-29"), ColKind::Date),
            Param::Text("2023-02-29".into()),
            "invalid: left to the server"
        );
        assert_eq!(
            convert(&json!({}), ColKind::Unknown),
            Param::Text("{}".into())
        );
        assert_eq!(convert(&json!(false), ColKind::Unknown), Param::Bool(false));
    }

    #[test]
    fn iso8601_parsing() {
        assert_eq!(parse_iso8601("1970-01-01"), Some(0));
        assert_eq!(parse_iso8601("1970-01-01T00:00:01Z"), Some(1_000_000));
        assert_eq!(parse_iso8601("1970-01-01T00:00:00.5Z"), Some(500_000));
        assert_eq!(parse_iso8601("1970-01-01 01:00:00+0100"), Some(0));
        assert_eq!(parse_iso8601("1970-01-01T00:00-00:30"), Some(1_800_000_000));
        assert_eq!(parse_iso8601("1969-12-31T23:59:59.999999Z"), Some(-1));
        assert_eq!(
            parse_iso8601("2000-02-29T12:00:00.1234567Z")
                .map(format_datetime)
                .as_deref(),
            Some("2000-02-29 12:00:00.123456")
        );
        for bad in [
            "",
            "2025",
            "2025-13-01",
            "2025-10-18T25:00Z",
            "2025-10-18T10:30:00+5",
            "2025-10-18X",
            "2025-10-18T10:30:00.Z",
            "2025-10-18T1:30",
        ] {
            assert_eq!(parse_iso8601(bad), None, "{bad}");
        }
        assert_eq!(format_datetime(-1), "1969-12-31 23:59:59.999999");
        assert_eq!(
            format_datetime(253_402_300_799_000_000),
            "9999-12-31 23:59:59.000000"
        );
    }
}
