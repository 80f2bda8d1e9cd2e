//! ND-JSON event streams (`/v1/log/audit`, `/v1/log/error`).

use crate::error::ClientError;
use bytes::Bytes;
use futures_util::stream::{self, Stream, StreamExt};
use serde::de::DeserializeOwned;
use std::pin::Pin;

/// A stream of parsed events. It ends when the server closes the connection; a broken
/// connection or an undecodable line is yielded as an error and ends it too.
pub type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, ClientError>> + Send>>;

/// Longest accepted event line. KES events are a few hundred bytes; a server that sends a
/// line this long without a newline is broken, and buffering it forever would be worse.
pub const MAX_EVENT_LEN: usize = 1 << 20;

struct State<S> {
    body: S,
    buf: Vec<u8>,
    eof: bool,
    done: bool,
}

/// Splits a byte stream into lines and decodes each non-empty line as one `T`.
pub fn ndjson<T, S>(body: S) -> EventStream<T>
where
    T: DeserializeOwned + Send + 'static,
    S: Stream<Item = Result<Bytes, ClientError>> + Send + Unpin + 'static,
{
    let state = State {
        body,
        buf: Vec::new(),
        eof: false,
        done: false,
    };
    Box::pin(stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            if let Some(pos) = st.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = st.buf.drain(..=pos).collect();
                match decode_line::<T>(&line) {
                    Some(item) => {
                        st.done = item.is_err();
                        return Some((item, st));
                    }
                    None => continue,
                }
            }
            if st.eof {
                // A final line without a newline still counts.
                let line = std::mem::take(&mut st.buf);
                st.done = true;
                return decode_line::<T>(&line).map(|item| (item, st));
            }
            if st.buf.len() > MAX_EVENT_LEN {
                st.done = true;
                let err = ClientError::Decode(format!("event longer than {MAX_EVENT_LEN} bytes"));
                return Some((Err(err), st));
            }
            match st.body.next().await {
                Some(Ok(chunk)) => st.buf.extend_from_slice(&chunk),
                Some(Err(e)) => {
                    st.done = true;
                    return Some((Err(e), st));
                }
                None => st.eof = true,
            }
        }
    }))
}

fn decode_line<T: DeserializeOwned>(line: &[u8]) -> Option<Result<T, ClientError>> {
    let line = line.trim_ascii();
    if line.is_empty() {
        return None;
    }
    Some(
        serde_json::from_slice(line)
            .map_err(|e| ClientError::Decode(format!("invalid event: {e}"))),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use kes_types::wire::{AuditEvent, ErrorEvent};

    fn chunks(parts: &[&str]) -> impl Stream<Item = Result<Bytes, ClientError>> + Send + Unpin {
        let v: Vec<Result<Bytes, ClientError>> = parts
            .iter()
            .map(|p| Ok(Bytes::copy_from_slice(p.as_bytes())))
            .collect();
        stream::iter(v)
    }

    #[tokio::test]
    async fn splits_lines_across_chunks() {
        let s = ndjson::<ErrorEvent, _>(chunks(&[
            "{\"message\":\"a\"}\n{\"mess",
            "age\":\"b\"}\n\n",
            "{\"message\":\"c\"}",
        ]));
        let got: Vec<_> = s.collect().await;
        let msgs: Vec<String> = got.into_iter().map(|r| r.unwrap().message).collect();
        assert_eq!(msgs, vec!["a", "b", "c"]);
    }

    #[tokio::test]
    async fn parses_audit_events() {
        let line = r#"{"time":"2024-01-02T03:04:05.5Z","request":{"ip":"127.0.0.1","path":"/v1/key/create/k","identity":"ab"},"response":{"code":200,"time":3}}"#;
        let s = ndjson::<AuditEvent, _>(chunks(&[line, "\n"]));
        let got: Vec<_> = s.collect().await;
        assert_eq!(got.len(), 1);
        let ev = got.into_iter().next().unwrap().unwrap();
        assert_eq!(ev.request.path, "/v1/key/create/k");
        assert_eq!(ev.response.code, 200);
    }

    #[tokio::test]
    async fn bad_line_ends_the_stream() {
        let s = ndjson::<ErrorEvent, _>(chunks(&["nope\n{\"message\":\"x\"}\n"]));
        let got: Vec<_> = s.collect().await;
        assert_eq!(got.len(), 1);
        assert!(matches!(got[0], Err(ClientError::Decode(_))));
    }

    #[tokio::test]
    async fn transport_error_ends_the_stream() {
        let v: Vec<Result<Bytes, ClientError>> = vec![
            Ok(Bytes::from_static(b"{\"message\":\"a\"}\n")),
            Err(ClientError::Transport("reset".into())),
            Ok(Bytes::from_static(b"{\"message\":\"b\"}\n")),
        ];
        let got: Vec<_> = ndjson::<ErrorEvent, _>(stream::iter(v)).collect().await;
        assert_eq!(got.len(), 2);
        assert!(got[0].is_ok());
        assert!(matches!(got[1], Err(ClientError::Transport(_))));
    }
}
