//! The shell's WebSocket listener over real loopback sockets: the `sip` subprotocol, one SIP
//! message per WebSocket message, the ping of a quiet client and the idle close of a dead one,
//! the close handshake.

use std::net::UdpSocket;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use sbc_core::shell::Sbc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// A port free at the time of asking (the SBC's listeners need fixed numbers).
fn free_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    match std::net::TcpListener::bind(s.local_addr().unwrap()) {
        Ok(t) => t.local_addr().unwrap().port(),
        Err(_) => free_port(),
    }
}

fn options(port: u16, n: u32) -> String {
    format!(
        "OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/WS k3j4.invalid;branch=z9hG4bKws{n}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:u@k3j4.invalid>;tag={n}\r\nTo: <sip:127.0.0.1>\r\n\
         Call-ID: ws-options-{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_subprotocol_messages_pings_idle_and_close() {
    let (ws_port, udp_port) = (free_port(), free_port());
    let text = format!(
        "sip: {{drain_grace: 0s}}
media: {{ports: 41100-41199, workers: 1}}
listeners:
  - {{name: ws, side: access, address: 127.0.0.1, port: {ws_port}, transports: [ws], idle_timeout: 800ms}}
  - {{name: t, side: trunk, address: 127.0.0.1, port: {udp_port}}}
"
    );
    let config = sbc_core::config::load_str("t.yaml", &text).expect("valid config");
    let sbc = Sbc::start(Arc::new(config)).await.expect("starts");
    let url = format!("ws://127.0.0.1:{ws_port}/");

    // Without the subprotocol: refused.
    let tcp = TcpStream::connect(("127.0.0.1", ws_port)).await.unwrap();
    assert!(tokio_tungstenite::client_async(&url, tcp).await.is_err());

    // With it: echoed, and each message gets its answer as one text message.
    let mut request = url.as_str().into_client_request().unwrap();
    let offer = HeaderValue::from_static("chat, sip");
    request.headers_mut().insert("Sec-WebSocket-Protocol", offer);
    let tcp = TcpStream::connect(("127.0.0.1", ws_port)).await.unwrap();
    let (mut ws, response) = tokio_tungstenite::client_async(request, tcp).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "sip");
    ws.send(Message::text(options(ws_port, 1))).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap();
    let Some(Ok(Message::Text(answer))) = answer else { panic!("no text answer: {answer:?}") };
    assert!(answer.starts_with("SIP/2.0 200 OK\r\n"), "{answer}");
    assert!(answer.contains("Via: SIP/2.0/WS k3j4.invalid;branch=z9hG4bKws1"), "{answer}");

    // The live client keeps reading (tungstenite answers pings while it reads), for twice the
    // idle timeout, while it sends nothing: it is pinged, not closed.
    let live = tokio::spawn(async move {
        let mut pings = 0;
        let until = tokio::time::Instant::now() + Duration::from_millis(1600);
        loop {
            match tokio::time::timeout_at(until, ws.next()).await {
                Ok(Some(Ok(m))) => pings += usize::from(m.is_ping()),
                Ok(other) => panic!("the live client was disconnected: {other:?}"),
                Err(_) => break,
            }
        }
        (ws, pings)
    });

    // A dead client (never reads, never answers): pinged at half the idle timeout and closed
    // at the timeout, counted from its last message.
    let mut dead = TcpStream::connect(("127.0.0.1", ws_port)).await.unwrap();
    let upgrade = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: sip\r\n\r\n";
    dead.write_all(upgrade.as_bytes()).await.unwrap();
    let start = Instant::now();
    let mut seen = Vec::new();
    let mut chunk = [0u8; 1024];
    let closed_after = loop {
        match tokio::time::timeout(Duration::from_secs(5), dead.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break start.elapsed(),
            Ok(Ok(n)) => seen.extend_from_slice(&chunk[..n]),
            Err(_) => panic!("a dead client is still connected after 5 s"),
        }
    };
    let head_end = seen.windows(4).position(|w| w == b"\r\n\r\n").expect("101 response") + 4;
    assert!(seen.starts_with(b"HTTP/1.1 101"));
    // Server frames are unmasked: a ping is 0x89 0x00, then a close frame (0x88) at the end.
    let frames = &seen[head_end..];
    assert_eq!(frames.get(..2), Some(&[0x89, 0x00][..]), "a ping first: {frames:?}");
    assert_eq!(frames.get(2), Some(&0x88), "then a close: {frames:?}");
    assert!(closed_after >= Duration::from_millis(700), "closed too early: {closed_after:?}");
    assert!(closed_after < Duration::from_millis(2500), "closed too late: {closed_after:?}");

    let (mut ws, pings) = live.await.unwrap();
    assert!(pings >= 2, "the quiet live client was pinged every half idle timeout: {pings}");
    ws.send(Message::text(options(ws_port, 2))).await.unwrap();
    let answer = loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap() {
            Some(Ok(Message::Text(t))) => break t,
            Some(Ok(_)) => continue,
            other => panic!("the live client was disconnected: {other:?}"),
        }
    };
    assert!(answer.contains("branch=z9hG4bKws2"), "{answer}");

    // The close handshake: our close is answered, then the stream ends.
    ws.close(None).await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(m)) = ws.next().await {
            if m.is_close() {
                return true;
            }
        }
        false
    })
    .await
    .unwrap();
    assert!(end, "the SBC answered the close");
    sbc.drain().await;
}
