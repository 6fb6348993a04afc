//! The protocol between tend and its provider plugins, for both sides of the pipe.
//!
//! A plugin is any program. tend starts it with two environment variables
//! ([`MAGIC_COOKIE_ENV`], [`PROTOCOL_VERSIONS_ENV`]) and speaks JSON-RPC 2.0 over its stdin
//! and stdout, one message per line ([`frame`]), at most [`MAX_MESSAGE_BYTES`] each. stderr
//! carries the plugin's logs. `docs/plugins.md` in tend's repository is the contract in
//! prose; this crate is the same contract in types, and tend's host side uses it too, so the
//! two cannot drift.
//!
//! A plugin's loop, answering one request:
//!
//! ```
//! use std::io::BufReader;
//! use tend_plugin::{decode, encode, frame::read_line, methods, Message, MAX_MESSAGE_BYTES};
//!
//! let stdin = br#"{"jsonrpc":"2.0","id":7,"method":"$/ping","params":{}}"#.to_vec();
//! let mut reader = BufReader::new(&stdin[..]);
//! let mut stdout = Vec::new();
//! while let Some(line) = read_line(&mut reader, MAX_MESSAGE_BYTES).unwrap() {
//!     if let Ok(Message::Request { id, method, .. }) = decode(&line) {
//!         assert_eq!(method, methods::PING);
//!         let answer = Message::Response { id: Some(id), outcome: Ok(serde_json::json!({})) };
//!         stdout.extend(encode(&answer).unwrap());
//!     }
//! }
//! assert_eq!(stdout, b"{\"id\":7,\"jsonrpc\":\"2.0\",\"result\":{}}\n");
//! ```

pub mod codes;
pub mod frame;
pub mod message;
pub mod methods;

pub use codes::ErrorCode;
pub use frame::{decode, encode, FrameError};
pub use message::{ErrorData, Id, Message, RpcError};

/// The environment variable tend sets for every plugin it starts.
pub const MAGIC_COOKIE_ENV: &str = "TEND_PLUGIN_MAGIC_COOKIE";
/// Its value. A program started without it is not being run by tend: a plugin then says it
/// is a tend plugin and exits with status 1.
pub const MAGIC_COOKIE: &str = "d7c1d5f2-tend-provider-plugin";
/// The environment variable listing the protocol versions tend speaks, separated by `,`.
pub const PROTOCOL_VERSIONS_ENV: &str = "TEND_PLUGIN_PROTOCOL_VERSIONS";
/// The protocol versions this crate speaks.
pub const PROTOCOL_VERSIONS: &[u32] = &[1];
/// The longest message either side may send, newline excluded: 16 MiB.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
