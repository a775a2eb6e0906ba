//! SIP over WebSocket (RFC 7118), inbound only: browsers connect to the SBC.
//!
//! The HTTP upgrade must offer the `sip` subprotocol, which is echoed in
//! `Sec-WebSocket-Protocol` (RFC 7118 section 4.1); any other handshake is refused with 400.
//! Each text or binary message carries one whole SIP message (section 5), parsed with the same
//! parser and limits as a datagram (the WebSocket message size is capped at the SIP limit).
//! A quiet client is pinged at half the idle timeout; a client that answers nothing, not
//! even the ping, is closed at the idle timeout. A `CRLFCRLF` message (the keep-alive SIP.js
//! sends) gets a `CRLF` answer, as on TCP (RFC 5626 section 3.5.1).

use std::time::Instant;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use sbc_policy::{DropReason, SourceVerdict};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message as WsMessage, Utf8Bytes};

use super::Router;
use crate::transport::Flow;

/// The subprotocol of SIP over WebSocket (RFC 7118 section 4.1, IANA registry).
const SUBPROTOCOL: &str = "sip";

/// Whether a `Sec-WebSocket-Protocol` header value (a comma-separated list) offers `sip`.
pub(super) fn offers_sip(value: &[u8]) -> bool {
    value.split(|&b| b == b',').any(|p| p.trim_ascii().eq_ignore_ascii_case(SUBPROTOCOL.as_bytes()))
}

/// The handshake callback: accept only clients that offer `sip`, and echo it.
#[allow(clippy::result_large_err)] // the signature is tungstenite's Callback
fn check_handshake(req: &Request, mut resp: Response) -> Result<Response, ErrorResponse> {
    let offered = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .any(|v| offers_sip(v.as_bytes()));
    if !offered {
        let mut refuse = ErrorResponse::new(Some("the sip subprotocol is required\n".into()));
        *refuse.status_mut() = StatusCode::BAD_REQUEST;
        return Err(refuse);
    }
    resp.headers_mut()
        .insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(SUBPROTOCOL));
    Ok(resp)
}

/// Runs the upgrade; `None` when the client is refused or too slow.
pub(super) async fn handshake<S>(stream: S, router: &Router) -> Option<WebSocketStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let max = router.limits.max_size;
    let config = WebSocketConfig::default().max_message_size(Some(max)).max_frame_size(Some(max));
    let accept =
        tokio_tungstenite::accept_hdr_async_with_config(stream, check_handshake, Some(config));
    match tokio::time::timeout(super::tls::HANDSHAKE_TIMEOUT, accept).await {
        Ok(Ok(ws)) => Some(ws),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "websocket handshake refused");
            None
        }
        Err(_) => None,
    }
}

/// One outgoing SIP message as one WebSocket message: text when it is UTF-8 (what browsers'
/// SIP stacks expect), binary otherwise (RFC 7118 section 5 allows both).
fn frame(data: Bytes) -> WsMessage {
    match Utf8Bytes::try_from(data.clone()) {
        Ok(text) => WsMessage::Text(text),
        Err(_) => WsMessage::Binary(data),
    }
}

/// Serves an upgraded connection until it closes, fails or stays idle.
pub(super) async fn serve<S>(
    mut ws: WebSocketStream<S>,
    flow: Flow,
    reply: mpsc::Sender<Bytes>,
    mut out: mpsc::Receiver<Bytes>,
    router: &Router,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let idle = router.config.limits(flow.listener).idle_timeout;
    let mut last_heard = tokio::time::Instant::now();
    let mut pinged = false;
    loop {
        // Quiet for half the timeout: ping once; quiet for the whole timeout: gone.
        let deadline = if pinged { last_heard + idle } else { last_heard + idle / 2 };
        tokio::select! {
            incoming = ws.next() => {
                let message = match incoming {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => {
                        tracing::debug!(remote = %flow.remote, error = %e, "websocket error");
                        break;
                    }
                    None => break,
                };
                last_heard = tokio::time::Instant::now();
                pinged = false;
                let data = match message {
                    WsMessage::Text(t) => Bytes::from(t),
                    WsMessage::Binary(b) => b,
                    // tungstenite queues the pong (and the close reply): flush sends it.
                    WsMessage::Ping(_) | WsMessage::Close(_) => {
                        if ws.flush().await.is_err() {
                            break;
                        }
                        continue;
                    }
                    WsMessage::Pong(_) | WsMessage::Frame(_) => continue,
                };
                if data.iter().all(|b| matches!(b, b'\r' | b'\n')) {
                    if data.len() >= 4 {
                        let _ = reply.try_send(Bytes::from_static(b"\r\n"));
                    }
                    continue;
                }
                match router.policy.check_source(Instant::now(), flow.remote.ip(), flow.listener.0)
                {
                    SourceVerdict::Allow => router.dispatch(flow, data, |resp| {
                        let _ = reply.try_send(resp);
                    }),
                    SourceVerdict::Drop(DropReason::RateLimited) => {}
                    SourceVerdict::Drop(_) => break,
                }
            }
            data = out.recv() => {
                let Some(data) = data else { break };
                if ws.send(frame(data)).await.is_err() {
                    break;
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                if pinged {
                    tracing::debug!(remote = %flow.remote, "websocket idle: closing");
                    break;
                }
                pinged = true;
                if ws.send(WsMessage::Ping(Bytes::new())).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = ws.close(None).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_must_be_offered() {
        assert!(offers_sip(b"sip"));
        assert!(offers_sip(b"chat, SIP"));
        assert!(!offers_sip(b"sips"));
        assert!(!offers_sip(b""));
        let req = |proto: Option<&str>| {
            let mut r = Request::new(());
            if let Some(p) = proto {
                r.headers_mut().insert(header::SEC_WEBSOCKET_PROTOCOL, p.parse().unwrap());
            }
            r
        };
        let ok = check_handshake(&req(Some("foo, sip")), Response::new(())).unwrap();
        assert_eq!(ok.headers()[header::SEC_WEBSOCKET_PROTOCOL], "sip");
        let refused = check_handshake(&req(Some("foo")), Response::new(())).unwrap_err();
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
        assert!(check_handshake(&req(None), Response::new(())).is_err());
    }

    #[test]
    fn frames_are_text_when_utf8() {
        assert!(matches!(
            frame(Bytes::from_static(b"OPTIONS sip:a SIP/2.0\r\n")),
            WsMessage::Text(_)
        ));
        assert!(matches!(frame(Bytes::from_static(b"\xff\xfe")), WsMessage::Binary(_)));
    }
}
