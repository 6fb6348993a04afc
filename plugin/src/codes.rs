//! Error codes: JSON-RPC's own, and tend's from 1000.

use serde::{Deserialize, Serialize};

/// The error codes a plugin (or tend) answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "i64", from = "i64")]
pub enum ErrorCode {
    /// -32700: the line is not JSON.
    ParseError,
    /// -32600: JSON, but not a JSON-RPC 2.0 request.
    InvalidRequest,
    /// -32601: no such method.
    MethodNotFound,
    /// -32602: the method's parameters are wrong.
    InvalidParams,
    /// -32603: the plugin failed.
    InternalError,
    /// 1000: the instance spec or the settings are wrong; never retried.
    InvalidSpec,
    /// 1001: no such instance.
    NotFound,
    /// 1002: it exists already.
    AlreadyExists,
    /// 1003: the backend cannot be reached now; retried.
    Unavailable,
    /// 1004: the backend refuses more.
    QuotaExceeded,
    /// 1005: the plugin may not do this.
    PermissionDenied,
    /// 1006: the call did not finish within its deadline; its outcome is unknown.
    DeadlineExceeded,
    /// 1007: the call carries an epoch older than one already seen.
    StaleEpoch,
    /// 1008: the plugin does not do this.
    Unsupported,
    /// Any other code.
    Other(i64),
}

impl ErrorCode {
    /// The number on the wire.
    pub fn code(self) -> i64 {
        match self {
            ErrorCode::ParseError => -32700,
            ErrorCode::InvalidRequest => -32600,
            ErrorCode::MethodNotFound => -32601,
            ErrorCode::InvalidParams => -32602,
            ErrorCode::InternalError => -32603,
            ErrorCode::InvalidSpec => 1000,
            ErrorCode::NotFound => 1001,
            ErrorCode::AlreadyExists => 1002,
            ErrorCode::Unavailable => 1003,
            ErrorCode::QuotaExceeded => 1004,
            ErrorCode::PermissionDenied => 1005,
            ErrorCode::DeadlineExceeded => 1006,
            ErrorCode::StaleEpoch => 1007,
            ErrorCode::Unsupported => 1008,
            ErrorCode::Other(n) => n,
        }
    }

    /// The code of a number on the wire.
    pub fn from_code(n: i64) -> ErrorCode {
        match n {
            -32700 => ErrorCode::ParseError,
            -32600 => ErrorCode::InvalidRequest,
            -32601 => ErrorCode::MethodNotFound,
            -32602 => ErrorCode::InvalidParams,
            -32603 => ErrorCode::InternalError,
            1000 => ErrorCode::InvalidSpec,
            1001 => ErrorCode::NotFound,
            1002 => ErrorCode::AlreadyExists,
            1003 => ErrorCode::Unavailable,
            1004 => ErrorCode::QuotaExceeded,
            1005 => ErrorCode::PermissionDenied,
            1006 => ErrorCode::DeadlineExceeded,
            1007 => ErrorCode::StaleEpoch,
            1008 => ErrorCode::Unsupported,
            other => ErrorCode::Other(other),
        }
    }

    /// Whether a call failing with this code may be tried again, unless its error's data
    /// says otherwise.
    pub fn retryable_by_default(self) -> bool {
        matches!(
            self,
            ErrorCode::Unavailable | ErrorCode::InternalError | ErrorCode::DeadlineExceeded
        )
    }
}

impl From<ErrorCode> for i64 {
    fn from(code: ErrorCode) -> i64 {
        code.code()
    }
}

impl From<i64> for ErrorCode {
    fn from(n: i64) -> ErrorCode {
        ErrorCode::from_code(n)
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    #[test]
    fn every_code_reads_back_as_itself() {
        for n in [
            -32700, -32600, -32601, -32602, -32603, 1000, 1003, 1006, 1008, 42,
        ] {
            assert_eq!(ErrorCode::from_code(n).code(), n);
        }
        assert_eq!(ErrorCode::from_code(1007), ErrorCode::StaleEpoch);
        assert!(!ErrorCode::InvalidSpec.retryable_by_default());
        assert!(ErrorCode::Unavailable.retryable_by_default());
    }
}
