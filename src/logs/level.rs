//! The `logLevel` option: how much of the engine's logging reaches the host.

use serde::Deserialize;

/// pino's level names. `fatal` and `silent` let nothing through (the engine logs no fatal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Silent,
    Fatal,
    Error,
    #[default]
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub const NAMES: &'static [&'static str] =
        &["silent", "fatal", "error", "warn", "info", "debug", "trace"];

    /// Whether an event at `level` passes.
    pub fn allows(self, level: &tracing::Level) -> bool {
        self >= Self::of(level)
    }

    pub fn of(level: &tracing::Level) -> Self {
        match *level {
            tracing::Level::ERROR => Self::Error,
            tracing::Level::WARN => Self::Warn,
            tracing::Level::INFO => Self::Info,
            tracing::Level::DEBUG => Self::Debug,
            _ => Self::Trace,
        }
    }

    /// The `tracing` filter that lets exactly this much through.
    pub fn filter(self) -> tracing::level_filters::LevelFilter {
        use tracing::level_filters::LevelFilter;
        match self {
            Self::Silent | Self::Fatal => LevelFilter::OFF,
            Self::Error => LevelFilter::ERROR,
            Self::Warn => LevelFilter::WARN,
            Self::Info => LevelFilter::INFO,
            Self::Debug => LevelFilter::DEBUG,
            Self::Trace => LevelFilter::TRACE,
        }
    }

    /// The logger method an event at `level` is written with.
    pub fn method(level: &tracing::Level) -> &'static str {
        match *level {
            tracing::Level::ERROR => "error",
            tracing::Level::WARN => "warn",
            tracing::Level::INFO => "info",
            tracing::Level::DEBUG => "debug",
            _ => "trace",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LogLevel;
    use tracing::Level;

    #[test]
    fn a_level_lets_through_itself_and_everything_more_severe() {
        assert!(LogLevel::Warn.allows(&Level::ERROR));
        assert!(LogLevel::Warn.allows(&Level::WARN));
        assert!(!LogLevel::Warn.allows(&Level::INFO));
        assert!(LogLevel::Debug.allows(&Level::DEBUG));
        assert!(!LogLevel::Debug.allows(&Level::TRACE));
        assert!(!LogLevel::Silent.allows(&Level::ERROR));
        assert!(!LogLevel::Fatal.allows(&Level::ERROR));
    }

    #[test]
    fn names_parse_and_the_default_is_warn() {
        for name in LogLevel::NAMES {
            let parsed: LogLevel = serde_json::from_str(&format!("\"{name}\"")).unwrap();
            assert_eq!(format!("{parsed:?}").to_lowercase(), *name);
        }
        assert!(serde_json::from_str::<LogLevel>("\"verbose\"").is_err());
        assert_eq!(LogLevel::default(), LogLevel::Warn);
    }
}
