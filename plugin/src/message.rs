//! JSON-RPC 2.0 messages: requests, notifications and responses.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::codes::ErrorCode;

/// A request's id: a number or a string.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Id {
    /// A number (tend sends these).
    Number(i64),
    /// A string.
    Text(String),
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Id::Number(n) => write!(f, "{n}"),
            Id::Text(t) => write!(f, "{t:?}"),
        }
    }
}

/// What an error's `data` may say.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorData {
    /// Whether the call may be tried again; without it, the code decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
    /// How long to wait before trying again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// The instance the error is about, when one was made (a failed provision whose
    /// instance exists, tagged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
}

/// A JSON-RPC error object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{message} (code {})", code.code())]
pub struct RpcError {
    /// What kind of error.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
    /// What tend acts on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<ErrorData>,
}

impl RpcError {
    /// An error with no data.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// Whether the call may be tried again: its data's word, else its code's default.
    pub fn retryable(&self) -> bool {
        self.data
            .as_ref()
            .and_then(|d| d.retryable)
            .unwrap_or_else(|| self.code.retryable_by_default())
    }
}

/// One message on the pipe.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    /// A call that wants an answer.
    Request {
        /// Matches the answer to the call.
        id: Id,
        /// The method.
        method: String,
        /// Its parameters (an object, or null).
        params: Value,
    },
    /// A call that wants none.
    Notification {
        /// The method.
        method: String,
        /// Its parameters.
        params: Value,
    },
    /// The answer to a request.
    Response {
        /// The request's id; `None` when the request could not be read at all.
        id: Option<Id>,
        /// Its result, or its error.
        outcome: Result<Value, RpcError>,
    },
}

impl Message {
    /// A request.
    pub fn request(id: i64, method: &str, params: Value) -> Message {
        Message::Request {
            id: Id::Number(id),
            method: method.to_owned(),
            params,
        }
    }

    /// A notification.
    pub fn notification(method: &str, params: Value) -> Message {
        Message::Notification {
            method: method.to_owned(),
            params,
        }
    }

    /// The message as a JSON value.
    pub fn to_value(&self) -> Value {
        match self {
            Message::Request { id, method, params } => {
                json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
            }
            Message::Notification { method, params } => {
                json!({"jsonrpc": "2.0", "method": method, "params": params})
            }
            Message::Response {
                id,
                outcome: Ok(result),
            } => json!({"jsonrpc": "2.0", "id": id, "result": result}),
            Message::Response {
                id,
                outcome: Err(error),
            } => json!({"jsonrpc": "2.0", "id": id, "error": error}),
        }
    }

    /// Reads a message from a JSON value; `Err` says what is wrong with it, as an
    /// `InvalidRequest` error.
    pub fn from_value(value: Value) -> Result<Message, RpcError> {
        let invalid = |why: &str| RpcError::new(ErrorCode::InvalidRequest, why);
        let Value::Object(mut map) = value else {
            return Err(invalid("a message is a JSON object"));
        };
        if map.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return Err(invalid("\"jsonrpc\" must be \"2.0\""));
        }
        let id = match map.remove("id") {
            None => None,
            Some(Value::Null) => None,
            Some(raw) => Some(
                serde_json::from_value::<Id>(raw)
                    .map_err(|_| invalid("\"id\" must be a number or a string"))?,
            ),
        };
        if let Some(method) = map.remove("method") {
            let Value::String(method) = method else {
                return Err(invalid("\"method\" must be a string"));
            };
            let params = map.remove("params").unwrap_or(Value::Null);
            return Ok(match id {
                Some(id) => Message::Request { id, method, params },
                None => Message::Notification { method, params },
            });
        }
        let outcome = match (map.remove("result"), map.remove("error")) {
            (Some(result), None) => Ok(result),
            (None, Some(error)) => Err(serde_json::from_value::<RpcError>(error)
                .map_err(|e| invalid(&format!("\"error\" is not an error object: {e}")))?),
            _ => {
                return Err(invalid(
                    "a response has exactly one of \"result\" and \"error\"",
                ))
            }
        };
        Ok(Message::Response { id, outcome })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_message_reads_back_as_itself() {
        let messages = [
            Message::request(7, "instance.describe", json!({"tags": {}})),
            Message::notification("$/cancel", json!({"id": 7})),
            Message::Response {
                id: Some(Id::Number(7)),
                outcome: Ok(json!({"instances": []})),
            },
            Message::Response {
                id: Some(Id::Text("a".into())),
                outcome: Err(RpcError {
                    code: ErrorCode::Unavailable,
                    message: "down".into(),
                    data: Some(ErrorData {
                        retryable: Some(true),
                        retry_after_ms: Some(500),
                        instance_id: None,
                    }),
                }),
            },
        ];
        for message in messages {
            assert_eq!(Message::from_value(message.to_value()), Ok(message));
        }
    }

    #[test]
    fn what_is_not_json_rpc_is_named() {
        let cases = [
            (json!([1]), "a message is a JSON object"),
            (
                json!({"id": 1, "method": "x"}),
                "\"jsonrpc\" must be \"2.0\"",
            ),
            (json!({"jsonrpc": "2.0", "id": 1}), "exactly one of"),
            (
                json!({"jsonrpc": "2.0", "id": true, "method": "x"}),
                "\"id\" must be",
            ),
        ];
        for (value, why) in cases {
            let error = Message::from_value(value).unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidRequest);
            assert!(error.message.contains(why), "{}", error.message);
        }
    }

    #[test]
    fn retryable_follows_the_data_then_the_code() {
        let mut error = RpcError::new(ErrorCode::Unavailable, "down");
        assert!(error.retryable());
        error.data = Some(ErrorData {
            retryable: Some(false),
            ..ErrorData::default()
        });
        assert!(!error.retryable());
    }
}
