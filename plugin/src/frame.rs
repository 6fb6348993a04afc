//! Framing: one JSON message per line, UTF-8, at most [`MAX_MESSAGE_BYTES`].

use std::io::BufRead;

use crate::codes::ErrorCode;
use crate::message::{Message, RpcError};
use crate::MAX_MESSAGE_BYTES;

/// What can be wrong with a line.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The line is longer than the limit; the rest of it was skipped.
    #[error("a message of over {limit} bytes")]
    TooLong {
        /// The limit.
        limit: usize,
    },
    /// The line is not JSON.
    #[error("not JSON: {0}")]
    NotJson(String),
    /// JSON, but not a JSON-RPC message.
    #[error("not a JSON-RPC 2.0 message: {}", .0.message)]
    Invalid(RpcError),
    /// Reading failed.
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
}

impl FrameError {
    /// The error to answer the sender with.
    pub fn to_rpc(&self) -> RpcError {
        match self {
            FrameError::NotJson(why) => RpcError::new(ErrorCode::ParseError, why.clone()),
            FrameError::Invalid(error) => error.clone(),
            other => RpcError::new(ErrorCode::InvalidRequest, other.to_string()),
        }
    }
}

/// The message as one line, newline included; `Err` when it is longer than the limit.
pub fn encode(message: &Message) -> Result<Vec<u8>, FrameError> {
    let mut line =
        serde_json::to_vec(&message.to_value()).map_err(|e| FrameError::NotJson(e.to_string()))?;
    if line.len() > MAX_MESSAGE_BYTES {
        return Err(FrameError::TooLong {
            limit: MAX_MESSAGE_BYTES,
        });
    }
    line.push(b'\n');
    Ok(line)
}

/// Reads one message from a line (without its newline).
pub fn decode(line: &[u8]) -> Result<Message, FrameError> {
    let value: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| FrameError::NotJson(e.to_string()))?;
    Message::from_value(value).map_err(FrameError::Invalid)
}

/// A line being read in chunks, refusing one longer than its limit.
struct Line {
    bytes: Vec<u8>,
    too_long: bool,
    limit: usize,
}

impl Line {
    fn new(limit: usize) -> Line {
        Line {
            bytes: Vec::new(),
            too_long: false,
            limit,
        }
    }

    /// Takes what `buf` holds of the line: how many bytes were used, and the line once its
    /// newline came.
    fn feed(&mut self, buf: &[u8]) -> (usize, Option<Result<Vec<u8>, FrameError>>) {
        let (chunk, end) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        if !self.too_long && self.bytes.len() + chunk.len() > self.limit {
            self.too_long = true;
            self.bytes = Vec::new();
        }
        if !self.too_long {
            self.bytes.extend_from_slice(chunk);
        }
        match end {
            Some(used) => (used, Some(self.take())),
            None => (buf.len(), None),
        }
    }

    /// The line at the end of the input: `None` when nothing was left.
    fn finish(mut self) -> Result<Option<Vec<u8>>, FrameError> {
        if self.bytes.is_empty() && !self.too_long {
            return Ok(None);
        }
        self.take().map(Some)
    }

    fn take(&mut self) -> Result<Vec<u8>, FrameError> {
        let too_long = std::mem::take(&mut self.too_long);
        let bytes = std::mem::take(&mut self.bytes);
        if too_long {
            Err(FrameError::TooLong { limit: self.limit })
        } else {
            Ok(bytes)
        }
    }
}

/// Reads the next line, without its newline, refusing one longer than `limit` (whose
/// rest is read and dropped, so the next line can be read). `Ok(None)` at the end.
pub fn read_line(reader: &mut impl BufRead, limit: usize) -> Result<Option<Vec<u8>>, FrameError> {
    let mut line = Line::new(limit);
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return line.finish();
        }
        let (used, done) = line.feed(buf);
        reader.consume(used);
        if let Some(done) = done {
            return done.map(Some);
        }
    }
}

/// [`read_line`] for tokio readers.
#[cfg(feature = "tokio")]
pub async fn read_line_async(
    reader: &mut (impl tokio::io::AsyncBufRead + Unpin),
    limit: usize,
) -> Result<Option<Vec<u8>>, FrameError> {
    use tokio::io::AsyncBufReadExt;
    let mut line = Line::new(limit);
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return line.finish();
        }
        let (used, done) = line.feed(buf);
        reader.consume(used);
        if let Some(done) = done {
            return done.map(Some);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_message_is_one_line_and_reads_back() {
        let message = Message::request(1, "$/ping", json!({"text": "a\nb"}));
        let line = encode(&message).unwrap();
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        assert!(line.ends_with(b"\n"));
        assert_eq!(decode(&line[..line.len() - 1]).unwrap(), message);
    }

    #[test]
    fn a_line_over_the_limit_is_refused_and_the_next_one_still_reads() {
        let input = b"0123456789\n{\"x\":1}\nlast".to_vec();
        let mut reader = std::io::BufReader::with_capacity(4, &input[..]);
        assert!(matches!(
            read_line(&mut reader, 8),
            Err(FrameError::TooLong { limit: 8 })
        ));
        assert_eq!(read_line(&mut reader, 8).unwrap().unwrap(), b"{\"x\":1}");
        assert_eq!(read_line(&mut reader, 8).unwrap().unwrap(), b"last");
        assert!(read_line(&mut reader, 8).unwrap().is_none());
    }

    #[test]
    fn what_is_not_json_answers_parse_error() {
        let error = decode(b"hello").unwrap_err();
        assert_eq!(error.to_rpc().code, ErrorCode::ParseError);
        let error = decode(b"{\"jsonrpc\":\"1.0\"}").unwrap_err();
        assert_eq!(error.to_rpc().code, ErrorCode::InvalidRequest);
    }
}
