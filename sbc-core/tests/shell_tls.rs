//! The shell over real loopback sockets: leg B toward a `;transport=tls` trunk target leaves
//! over TLS, verified against the trunk's CA file with its `server_name` as SNI.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sbc_core::shell::Sbc;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

fn data(name: &str) -> String {
    format!("{}/tests/data/tls/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A port free at the time of asking (the SBC's listeners need fixed numbers).
fn free_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let t = std::net::TcpListener::bind(s.local_addr().unwrap());
    match t {
        Ok(t) => t.local_addr().unwrap().port(),
        Err(_) => free_port(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invite_toward_a_tls_trunk_leaves_over_verified_tls() {
    // The trunk: a TLS server with the test certificate (SAN DNS:sbc.test).
    let chain: Vec<_> = CertificateDer::pem_file_iter(data("one-cert.pem"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(data("one-key.pem")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let trunk = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let trunk_addr = trunk.local_addr().unwrap();

    let (access, tls_port) = (free_port(), free_port());
    let text = format!(
        r#"
sip: {{drain_grace: 0s}}
media: {{ports: 41000-41099, workers: 1}}
listeners:
  - {{name: access, side: access, address: 127.0.0.1, port: {access}}}
  - name: trunk
    side: trunk
    address: 127.0.0.1
    port: {tls_port}
    transports: [tls]
    tls: {{certificate: {cert}, private_key: {key}}}
trunks:
  - name: carrier
    listener: trunk
    targets: ["{trunk_addr};transport=tls"]
    tls: {{ca: {cert}, server_name: sbc.test}}
routes:
  - {{name: out, match: {{listener: access}}, trunks: [carrier]}}
"#,
        cert = data("one-cert.pem"),
        key = data("one-key.pem"),
    );
    let config = sbc_core::config::load_str("t.yaml", &text).expect("valid config");
    let sbc = Sbc::start(Arc::new(config)).await.expect("starts");

    let uac = UdpSocket::bind("127.0.0.1:0").unwrap();
    let uac_addr = uac.local_addr().unwrap();
    let sdp = "v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
               m=audio 40000 RTP/AVP 0\r\n";
    let invite = format!(
        "INVITE sip:100@127.0.0.1:{access} SIP/2.0\r\nVia: SIP/2.0/UDP {uac_addr};branch=z9hG4bKtls1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:100@127.0.0.1>\r\n\
         Call-ID: tls-out-1\r\nCSeq: 1 INVITE\r\nContact: <sip:a@{uac_addr}>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    let to: SocketAddr = format!("127.0.0.1:{access}").parse().unwrap();
    uac.send_to(invite.as_bytes(), to).unwrap();

    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let received = tokio::time::timeout(Duration::from_secs(10), async {
        let (tcp, _) = trunk.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.expect("the SBC completes the handshake");
        let sni = tls.get_ref().1.server_name().map(str::to_owned);
        let mut buf = Vec::new();
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut chunk = [0u8; 4096];
            let n = tls.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed before a whole message");
            buf.extend_from_slice(&chunk[..n]);
        }
        (sni, String::from_utf8_lossy(&buf).into_owned())
    })
    .await
    .expect("an INVITE over TLS within 10 s");
    let (sni, message) = received;
    assert_eq!(sni.as_deref(), Some("sbc.test"));
    let first = message.lines().next().unwrap_or_default();
    assert_eq!(first, format!("INVITE sip:100@{trunk_addr};transport=tls SIP/2.0"));
    assert!(
        message.contains(&format!("Via: SIP/2.0/TLS 127.0.0.1:{tls_port};branch=")),
        "{message}"
    );
    assert!(
        message.contains(&format!("Contact: <sip:127.0.0.1:{tls_port};transport=tls>")),
        "{message}"
    );
    sbc.drain().await;
}
