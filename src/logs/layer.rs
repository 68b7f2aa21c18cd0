//! The `tracing` layer: events of this crate at the engines' levels, and warnings and errors
//! of its dependencies, become [`LogRecord`]s for the engine they ran under.

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use super::routes::{self, ENGINE_FIELD, ENGINE_SPAN};
use super::{LogLevel, LogRecord};

const OWN_TARGET: &str = "s3db_replicator";

/// Forwards events to the engines registered with [`super::EngineLog`].
pub struct HostLogLayer;

/// The engine a span (and what runs in it) belongs to.
struct EngineTag(u64);
/// A span's fields, added to the events inside it (a lane span's `replicator`).
struct SpanFields(Map<String, Value>);

fn own(meta: &Metadata<'_>) -> bool {
    meta.target().starts_with(OWN_TARGET)
}

impl<S> Layer<S> for HostLogLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if meta.is_span() {
            // Only our own spans are worth keeping (a dependency's per-poll spans are not).
            return if own(meta) {
                Interest::always()
            } else {
                Interest::never()
            };
        }
        // Levels change as engines come and go: ask `enabled` each time.
        Interest::sometimes()
    }

    fn enabled(&self, meta: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        if meta.is_span() {
            return own(meta);
        }
        let max = routes::max_level();
        max.allows(meta.level()) && (own(meta) || *meta.level() <= tracing::Level::WARN)
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        // Never below error: the engine spans are at error level and must exist whenever an
        // engine logs at all.
        Some(routes::max_level().max(LogLevel::Error).filter())
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let mut ext = span.extensions_mut();
        if attrs.metadata().name() == ENGINE_SPAN {
            if let Some(Value::Number(n)) = fields.map.remove(&camel(ENGINE_FIELD)) {
                if let Some(engine) = n.as_u64() {
                    ext.insert(EngineTag(engine));
                }
            }
        }
        if !fields.map.is_empty() {
            ext.insert(SpanFields(fields.map));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut fields = Fields::default();
        values.record(&mut fields);
        let mut ext = span.extensions_mut();
        match ext.get_mut::<SpanFields>() {
            Some(SpanFields(map)) => map.extend(fields.map),
            None => ext.insert(SpanFields(fields.map)),
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let engine = ctx.event_scope(event).and_then(|scope| {
            scope
                .into_iter()
                .find_map(|span| span.extensions().get::<EngineTag>().map(|t| t.0))
        });
        let callsite = meta as *const Metadata<'_> as usize;
        // Fields are gathered only for an event that the engine's level lets through.
        routes::dispatch(engine, meta.level(), callsite, || {
            let mut all = Map::new();
            if let Some(scope) = ctx.event_scope(event) {
                // Outer spans first, so the innermost span and then the event itself win.
                for span in scope.from_root() {
                    if let Some(SpanFields(map)) = span.extensions().get::<SpanFields>() {
                        all.extend(map.iter().map(|(k, v)| (k.clone(), v.clone())));
                    }
                }
            }
            let mut fields = Fields::default();
            event.record(&mut fields);
            all.extend(fields.map);
            if !own(meta) {
                all.insert("target".into(), meta.target().into());
            }
            LogRecord {
                level: LogLevel::method(meta.level()),
                message: fields.message.unwrap_or_else(|| meta.name().to_string()),
                fields: all,
            }
        });
    }
}

/// `record_id` → `recordId`: the host's field names are camelCase, like its options.
fn camel(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = !out.is_empty();
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

#[derive(Default)]
struct Fields {
    message: Option<String>,
    map: Map<String, Value>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.message = Some(match value {
                Value::String(s) => s,
                other => other.to_string(),
            });
        } else {
            self.map.insert(camel(field.name()), value);
        }
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_string()));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::String(value.to_string()));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn field_names_become_camel_case() {
        assert_eq!(super::camel("record_id"), "recordId");
        assert_eq!(super::camel("delay_ms"), "delayMs");
        assert_eq!(super::camel("replicator"), "replicator");
        assert_eq!(super::camel("_private"), "private");
    }
}
