//! The one conversion from engine errors to JavaScript errors: `err.code` is one of the
//! stable codes of `error::ErrorCode` (`ERR_CONFIG`, `ERR_STOPPED`, ...), listed in index.d.ts.

use crate::error::{EngineError, ErrorCode};

/// A napi status that carries our code string, so JavaScript sees `err.code === 'ERR_STOPPED'`.
pub struct Code(String);

impl AsRef<str> for Code {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<napi::Status> for Code {
    fn from(status: napi::Status) -> Self {
        Self(status.as_ref().to_string())
    }
}

pub fn coded(code: ErrorCode, message: impl Into<String>) -> napi::Error<Code> {
    napi::Error::new(Code(code.as_str().to_string()), message.into())
}

impl From<EngineError> for napi::Error<Code> {
    fn from(e: EngineError) -> Self {
        coded(e.code(), e.to_string())
    }
}
