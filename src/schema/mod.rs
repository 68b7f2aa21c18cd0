//! Source resource schemas (s3db.js attribute notation) and their SQL shapes: type mapping per
//! dialect, identifier quoting, CREATE TABLE and the diff against a live table.

mod bigquery;
mod ddl;
mod dialect;
mod types;

pub use bigquery::{bigquery_type, normalize_bigquery_type};
pub use ddl::{
    add_column, create_table, diff, drop_column, drop_table, infer_attribute, log_change_id_type,
    log_table, LiveColumn, SchemaDiff, LOG_CHANGE_ID,
};
pub use dialect::Dialect;
pub use types::{parse_attributes, AttrType, Attribute, ResourceSchema};
