//! B2BUA scenarios, sans-IO: a scripted UAC and UAS talk to one engine shard on a fake clock.
//! Each test plays SIP text on leg A (127.0.0.10 <-> SBC 127.0.0.1:5060) and leg B (SBC
//! 127.0.0.2:5070 <-> 127.0.0.20:5080) and asserts what the engine sends, when.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sbc_cdr::{CallEventKind, Disposition, ReleaseSide};
use sbc_core::b2bua::{Engine, Event};
use sbc_core::config::Transport;
use sbc_core::config::{
    Config, HeaderPolicy, ListenerConfig, ListenerId, MediaConfig, MediaOptions, RegistrarConfig,
    RegistrarMode, RewriteConfig, RouteConfig, RouteMatch, Side, Target, TcpConfig, TimerConfig,
    TrunkConfig, TrunkId,
};
use sbc_core::sip::{self, HeaderName, Message};
use sbc_core::transport::Flow;
use sbc_media::{LegSide, VirtualBackend};

const UAC: &str = "127.0.0.10:5061";
const UAS: &str = "127.0.0.20:5080";
const UAS2: &str = "127.0.0.21:5080";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn config(targets: &[&str], ring: Duration) -> Config {
    Config {
        timers: TimerConfig::default(),
        shards: 1,
        max_message_size: 65_535,
        max_headers: 128,
        drain_grace: Duration::from_secs(1),
        metrics: None,
        capture: Default::default(),
        records: None,
        policy: Default::default(),
        registrars: Vec::new(),
        // No media timeout: most scenarios run long on the fake clock without RTP.
        media: MediaConfig {
            defaults: MediaOptions {
                inactivity_timeout: Some(None),
                ..MediaConfig::default().defaults
            },
            ..MediaConfig::default()
        },
        tcp: TcpConfig { idle_timeout: Duration::from_secs(60), max_connections: 16 },
        listeners: vec![
            ListenerConfig {
                name: "access".into(),
                side: Side::Access,
                addr: addr("127.0.0.1:5060"),
                advertise: "127.0.0.1".parse().unwrap(),
                media_bind: "127.0.0.1".parse().unwrap(),
                media_advertise: "127.0.0.1".parse().unwrap(),
                media: MediaOptions::default(),
                transports: vec![Transport::Udp, Transport::Tcp],
                tls: None,
                limits: None,
            },
            ListenerConfig {
                name: "trunk".into(),
                side: Side::Trunk,
                addr: addr("127.0.0.2:5070"),
                advertise: "127.0.0.2".parse().unwrap(),
                media_bind: "127.0.0.2".parse().unwrap(),
                media_advertise: "127.0.0.2".parse().unwrap(),
                media: MediaOptions::default(),
                transports: vec![Transport::Udp],
                tls: None,
                limits: None,
            },
        ],
        trunks: targets
            .iter()
            .enumerate()
            .map(|(i, t)| TrunkConfig {
                name: format!("trunk{i}"),
                listener: ListenerId(1),
                targets: vec![Target { addr: addr(t), transport: Transport::Udp }],
                sources: vec!["127.0.0.20/30".parse().unwrap()],
                options: None,
                rewrite: RewriteConfig::default(),
                headers: HeaderPolicy {
                    allow: vec!["P-Asserted-Identity".into()],
                    ..Default::default()
                },
                media: MediaOptions::default(),
                tls: None,
                dtmf: Default::default(),
            })
            .collect(),
        routes: vec![RouteConfig {
            name: "out".into(),
            matcher: RouteMatch { listener: Some(ListenerId(0)), ..Default::default() },
            trunks: (0..targets.len()).map(TrunkId).collect(),
            ring_timeout: ring,
        }],
    }
}

/// The engine plus a fake network: everything sent is kept in order with its destination.
struct Net {
    engine: Engine,
    now: Instant,
    sent: Vec<(Flow, Message)>,
    events: Vec<Event>,
}

impl Net {
    fn new(config: Config) -> Net {
        Net::with_relay(config, None)
    }

    /// A shard whose media goes through `relay` (a socket-free stand-in the test can inspect).
    fn with_relay(config: Config, relay: Option<Arc<VirtualBackend>>) -> Net {
        let config = Arc::new(config);
        let engine = match relay {
            Some(r) => Engine::with_relay(config, 0, 42, r),
            None => Engine::new(config, 0, 42),
        };
        Net { engine, now: Instant::now(), sent: Vec::new(), events: Vec::new() }
    }

    fn uac_sends(&mut self, text: &str) {
        let flow = Flow { listener: ListenerId(0), transport: Transport::Udp, remote: addr(UAC) };
        self.input(flow, text);
    }

    fn uas_sends(&mut self, text: &str) {
        self.peer_sends(UAS, text);
    }

    fn peer_sends(&mut self, peer: &str, text: &str) {
        let flow = Flow { listener: ListenerId(1), transport: Transport::Udp, remote: addr(peer) };
        self.input(flow, text);
    }

    fn input(&mut self, flow: Flow, text: &str) {
        let data = Bytes::from(text.replace('\n', "\r\n"));
        self.engine.handle_datagram(self.now, flow, data);
        self.drain();
    }

    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(at) = self.engine.poll_timeout() {
            if at > end {
                break;
            }
            self.now = at.max(self.now);
            self.engine.handle_timeout(self.now);
            self.drain();
        }
        self.now = end;
        self.engine.handle_timeout(self.now);
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(t) = self.engine.poll_transmit() {
            let msg = match sip::parse(t.data.clone()) {
                Ok(m) => m,
                Err(e) => {
                    panic!("the SBC sent invalid SIP ({e}):\n{}", String::from_utf8_lossy(&t.data))
                }
            };
            self.sent.push((t.flow, msg));
        }
        while let Some(e) = self.engine.poll_event() {
            self.events.push(e);
        }
    }

    /// Everything sent to `peer` since the last call, in order.
    fn take(&mut self, peer: &str) -> Vec<Message> {
        self.take_flows(peer).into_iter().map(|(_, m)| m).collect()
    }

    /// Like [`Net::take`], with the flow each message left on.
    fn take_flows(&mut self, peer: &str) -> Vec<(Flow, Message)> {
        let peer = addr(peer);
        let (mine, rest): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.sent).into_iter().partition(|(f, _)| f.remote == peer);
        self.sent = rest;
        mine
    }

    fn take_one(&mut self, peer: &str) -> Message {
        let mut v = self.take(peer);
        assert_eq!(
            v.len(),
            1,
            "expected one message to {peer}, got {}: {:?}",
            v.len(),
            v.iter().map(summary).collect::<Vec<_>>()
        );
        v.remove(0)
    }

    fn ended(&self) -> Vec<Disposition> {
        self.events
            .iter()
            .filter_map(|Event::Call { kind, .. }| match kind {
                CallEventKind::Ended { disposition, .. } => Some(*disposition),
                _ => None,
            })
            .collect()
    }

    /// The UAC or the UAS answers a request the SBC sent it with 200.
    fn peer_or_uac_answers(&mut self, peer: &str, req: &Message) {
        if peer == UAC {
            self.uac_sends(&uac_response(req, 200, "OK"));
        } else {
            self.uas_sends(&uas_response(req, 200, "OK", "", "", ""));
        }
    }

    fn assert_idle(&mut self) {
        assert_eq!(self.engine.call_count(), 0, "calls left");
        assert_eq!(self.engine.media_session_count(), 0, "media sessions left");
        self.assert_no_permits();
        self.advance(Duration::from_secs(64));
        assert_eq!(self.engine.transaction_count(), 0, "transactions left");
        assert_eq!(self.engine.owner_count(), 0, "transaction owners left");
    }

    /// No admission slot is held: every call gave back its permits, whatever ended it.
    fn assert_no_permits(&self) {
        let policy = self.engine.policy();
        assert_eq!(policy.active(), 0, "admission permits left");
        for t in 0..8 {
            if let Some(usage) = policy.trunk_calls(t) {
                assert_eq!(usage, sbc_policy::TrunkCalls::default(), "trunk {t} slots left");
            }
        }
    }
}

fn summary(m: &Message) -> String {
    match m.method() {
        Some(meth) => meth.to_string(),
        None => format!(
            "{} {}",
            m.code().unwrap_or(0),
            m.cseq().map(|c| c.method.to_string()).unwrap_or_default()
        ),
    }
}

fn hdr(m: &Message, name: HeaderName) -> String {
    String::from_utf8_lossy(m.header(&name).map(|b| &b[..]).unwrap_or(b"")).into_owned()
}

fn branch(m: &Message) -> String {
    String::from_utf8_lossy(&m.top_via().unwrap().branch().unwrap()).into_owned()
}

const SDP: &str =
    "v=0\no=alice 1 1 IN IP4 127.0.0.10\ns=-\nc=IN IP4 127.0.0.10\nt=0 0\nm=audio 6000 RTP/AVP 0\n";

/// Length of a body once `Net::input` has turned its line feeds into CRLF.
fn wire_len(body: &str) -> usize {
    body.len() + body.matches('\n').count()
}

fn invite(call_id: &str, extra: &str, with_sdp: bool) -> String {
    let branch: String = call_id.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    let body = if with_sdp { SDP.to_string() } else { String::new() };
    let ct = if with_sdp { "Content-Type: application/sdp\n" } else { "" };
    format!(
        "INVITE sip:100@127.0.0.1:5060 SIP/2.0\n\
Via: SIP/2.0/UDP 127.0.0.10:5061;branch=z9hG4bK-a-{branch}\n\
Max-Forwards: 70\n\
From: \"Alice\" <sip:alice@client.example>;tag=atag\n\
To: <sip:100@127.0.0.1>\n\
Call-ID: {call_id}\n\
CSeq: 1 INVITE\n\
Contact: <sip:alice@127.0.0.10:5061>\n\
P-Asserted-Identity: <sip:alice@pai.example>\n\
X-Secret-Topology: leak-me-not\n\
{extra}{ct}Content-Length: {}\n\n{body}",
        wire_len(&body)
    )
    .replace("\n\n\r\n", "\n\n")
}

/// A response from the UAS to a request the SBC sent on leg B.
fn uas_response(
    req: &Message,
    code: u16,
    reason: &str,
    to_tag: &str,
    extra: &str,
    body: &str,
) -> String {
    let vias: Vec<String> = req
        .values(&HeaderName::Via)
        .map(|v| format!("Via: {}\n", String::from_utf8_lossy(&v)))
        .collect();
    let to = hdr(req, HeaderName::To);
    let to =
        if to.contains("tag=") || to_tag.is_empty() { to } else { format!("{to};tag={to_tag}") };
    let (ct, body) = if body.is_empty() {
        (String::new(), String::new())
    } else {
        ("Content-Type: application/sdp\n".into(), body.to_string())
    };
    format!(
        "SIP/2.0 {code} {reason}\n{}From: {}\nTo: {to}\nCall-ID: {}\nCSeq: {}\nContact: <sip:bob@127.0.0.20:5080>\n{extra}{ct}Content-Length: {}\n\n{body}",
        vias.concat(),
        hdr(req, HeaderName::From),
        hdr(req, HeaderName::CallId),
        hdr(req, HeaderName::CSeq),
        wire_len(&body)
    )
}

/// A response from the UAC to a request the SBC sent on leg A.
fn uac_response(req: &Message, code: u16, reason: &str) -> String {
    let vias: Vec<String> = req
        .values(&HeaderName::Via)
        .map(|v| format!("Via: {}\n", String::from_utf8_lossy(&v)))
        .collect();
    format!(
        "SIP/2.0 {code} {reason}\n{}From: {}\nTo: {}\nCall-ID: {}\nCSeq: {}\nContent-Length: 0\n\n",
        vias.concat(),
        hdr(req, HeaderName::From),
        hdr(req, HeaderName::To),
        hdr(req, HeaderName::CallId),
        hdr(req, HeaderName::CSeq)
    )
}

/// An in-dialog request from the UAC, using what leg A's 2xx told it.
fn uac_request(method: &str, ok: &Message, cseq: u32, extra: &str, body: &str) -> String {
    let (ct, body) = if body.is_empty() {
        (String::new(), String::new())
    } else {
        ("Content-Type: application/sdp\n".into(), body.to_string())
    };
    format!(
        "{method} sip:100@127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.10:5061;branch=z9hG4bK-a{method}{cseq}\nMax-Forwards: 70\n\
From: {}\nTo: {}\nCall-ID: {}\nCSeq: {cseq} {method}\n{extra}{ct}Content-Length: {}\n\n{body}",
        hdr(ok, HeaderName::From),
        hdr(ok, HeaderName::To),
        hdr(ok, HeaderName::CallId),
        wire_len(&body)
    )
}

/// An in-dialog request from the UAS on leg B.
fn uas_request(method: &str, b_invite: &Message, b_to_tag: &str, cseq: u32, body: &str) -> String {
    let (ct, body) = if body.is_empty() {
        (String::new(), String::new())
    } else {
        ("Content-Type: application/sdp\n".into(), body.to_string())
    };
    let contact = b_invite.contact().unwrap().unwrap().uri.raw;
    format!(
        "{method} {} SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.20:5080;branch=z9hG4bK-b{method}{cseq}\nMax-Forwards: 70\n\
From: {};tag={b_to_tag}\nTo: {}\nCall-ID: {}\nCSeq: {cseq} {method}\nContact: <sip:bob@127.0.0.20:5080>\n{ct}Content-Length: {}\n\n{body}",
        String::from_utf8_lossy(&contact),
        hdr(b_invite, HeaderName::To),
        hdr(b_invite, HeaderName::From),
        hdr(b_invite, HeaderName::CallId),
        wire_len(&body)
    )
}

/// Plays INVITE / 100 / 180 / 200 / ACK and returns (leg B INVITE, leg A 200).
fn establish(net: &mut Net, call_id: &str) -> (Message, Message) {
    net.uac_sends(&invite(call_id, "", true));
    let trying = net.take_one(UAC);
    assert_eq!(trying.code(), Some(100));
    let b_invite = net.take_one(UAS);
    net.uas_sends(&uas_response(&b_invite, 180, "Ringing", "btag", "", ""));
    assert_eq!(net.take_one(UAC).code(), Some(180));
    net.uas_sends(&uas_response(&b_invite, 200, "OK", "btag", "", SDP));
    let ack_b = net.take_one(UAS);
    assert_eq!(ack_b.method(), Some(&sip::Method::Ack));
    let ok = net.take_one(UAC);
    assert_eq!(ok.code(), Some(200));
    net.uac_sends(&uac_request("ACK", &ok, 1, "", ""));
    assert!(net.take(UAS).is_empty(), "leg A's ACK is not relayed for the initial INVITE");
    (b_invite, ok)
}

#[test]
fn basic_call_hides_topology_and_leaves_nothing_behind() {
    let mut net = Net::new(config(&[UAS], Duration::from_secs(60)));
    let (b_invite, ok) = establish(&mut net, "a-call-1@client.example");

    // sbc-media anchors the media: the SDP body names the SBC, not leg A's address or user.
    let b_text = String::from_utf8_lossy(&b_invite.to_bytes()).into_owned();
    assert!(b_text.contains("m=audio "), "the offer crossed:\n{b_text}");
    for leak in [
        "a-call-1",
        "atag",
        "z9hG4bK-a-",
        "127.0.0.10",
        "client.example",
        "X-Secret-Topology",
        "alice 1",
    ] {
        assert!(!b_text.contains(leak), "leg B INVITE leaks {leak}:\n{b_text}");
    }
    assert!(b_text.contains("P-Asserted-Identity"), "allow-listed header must cross");
    assert_eq!(b_invite.request_uri().unwrap().to_string(), format!("sip:100@{UAS}"));
    assert_eq!(hdr(&b_invite, HeaderName::MaxForwards), "69");
    assert!(b_invite.body.starts_with(b"v=0"));
    let a_text = String::from_utf8_lossy(&ok.to_bytes()).into_owned();
    for leak in ["btag", "127.0.0.20", &hdr(&b_invite, HeaderName::CallId)] {
        assert!(!a_text.contains(leak), "leg A 200 leaks {leak}:\n{a_text}");
    }
    assert_eq!(ok.contact().unwrap().unwrap().uri.to_string(), "sip:127.0.0.1:5060");

    net.uac_sends(&uac_request("BYE", &ok, 2, "", ""));
    assert_eq!(net.take_one(UAC).code(), Some(200));
    let bye = net.take_one(UAS);
    assert_eq!(bye.method(), Some(&sip::Method::Bye));
    assert!(hdr(&bye, HeaderName::To).contains("tag=btag"));
    net.uas_sends(&uas_response(&bye, 200, "OK", "", "", ""));
    assert_eq!(net.ended(), vec![Disposition::Answered]);
    net.assert_idle();
}

#[test]
fn callee_hangs_up() {
    let mut net = Net::new(config(&[UAS], Duration::from_secs(60)));
    let (b_invite, _ok) = establish(&mut net, "c2");
    net.uas_sends(&uas_request("BYE", &b_invite, "btag", 1, ""));
    assert_eq!(net.take_one(UAS).code(), Some(200));
    let bye = net.take_one(UAC);
    assert_eq!(bye.method(), Some(&sip::Method::Bye));
    assert_eq!(bye.request_uri().unwrap().to_string(), "sip:alice@127.0.0.10:5061");
    assert!(hdr(&bye, HeaderName::From).contains("<sip:100@127.0.0.1>;tag="));
    assert!(hdr(&bye, HeaderName::To).contains("tag=atag"));
    assert_eq!(hdr(&bye, HeaderName::CallId), "c2");
    net.uac_sends(&uac_response(&bye, 200, "OK"));
    net.assert_idle();
}

#[test]
fn cancel_before_answer_reaches_both_sides() {
    let mut net = Net::new(config(&[UAS], Duration::from_secs(60)));
    net.uac_sends(&invite("c3", "", true));
    net.take(UAC);
    let b_invite = net.take_one(UAS);
    net.uas_sends(&uas_response(&b_invite, 180, "Ringing", "btag", "", ""));
    net.take(UAC);
    net.uac_sends(
        &invite("c3", "", false)
            .replacen("INVITE sip", "CANCEL sip", 1)
            .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL"),
    );
    let to_uac = net.take(UAC);
    let codes: Vec<(u16, String)> =
        to_uac.iter().map(|m| (m.code().unwrap(), m.cseq().unwrap().method.to_string())).collect();
    assert!(codes.contains(&(200, "CANCEL".into())), "{codes:?}");
    assert!(codes.contains(&(487, "INVITE".into())), "{codes:?}");
    let cancel = net.take_one(UAS);
    assert_eq!(cancel.method(), Some(&sip::Method::Cancel));
    assert_eq!(branch(&cancel), branch(&b_invite));
    net.uas_sends(&uas_response(&cancel, 200, "OK", "", "", ""));
    net.uas_sends(&uas_response(&b_invite, 487, "Request Terminated", "btag", "", ""));
    let ack = net.take_one(UAS);
    assert_eq!(ack.method(), Some(&sip::Method::Ack));
    assert_eq!(net.ended(), vec![Disposition::Cancelled]);
    net.assert_idle();
}

#[test]
fn busy_is_relayed_with_reason() {
    let mut net = Net::new(config(&[UAS, UAS2], Duration::from_secs(60)));
    net.uac_sends(&invite("c4", "", true));
    net.take(UAC);
    let b_invite = net.take_one(UAS);
    net.uas_sends(&uas_response(
        &b_invite,
        486,
        "Busy Here",
        "btag",
        "Reason: Q.850;cause=17\n",
        "",
    ));
    assert_eq!(net.take_one(UAS).method(), Some(&sip::Method::Ack));
    let busy = net.take_one(UAC);
    assert_eq!(busy.code(), Some(486), "4xx is not failed over");
    assert_eq!(hdr(&busy, HeaderName::Reason), "Q.850;cause=17");
    assert!(net.take(UAS2).is_empty());
    assert_eq!(net.ended(), vec![Disposition::Busy]);
    net.assert_idle();
}

#[test]
fn failover_on_503_then_on_silence() {
    let mut net = Net::new(config(&["127.0.0.22:5080", UAS, UAS2], Duration::from_secs(300)));
    net.uac_sends(&invite("c5", "", true));
    net.take(UAC);
    // First target never answers: Timer A retransmits, Timer B (64*T1 = 32 s) fails over.
    let silent = net.take_one("127.0.0.22:5080");
    net.advance(Duration::from_millis(600));
    assert_eq!(net.take("127.0.0.22:5080").len(), 1, "Timer A retransmission at T1");
    net.advance(Duration::from_millis(31_500));
    let b1 = net.take_one(UAS);
    assert_ne!(
        hdr(&b1, HeaderName::CallId),
        hdr(&silent, HeaderName::CallId),
        "each attempt is a new leg"
    );
    net.uas_sends(&uas_response(&b1, 503, "Service Unavailable", "x", "", ""));
    net.take(UAS);
    let b2 = net.take_one(UAS2);
    net.peer_sends(UAS2, &uas_response(&b2, 200, "OK", "b2tag", "", SDP));
    assert_eq!(net.take_one(UAS2).method(), Some(&sip::Method::Ack));
    let ok = net.take_one(UAC);
    assert_eq!(ok.code(), Some(200));
    net.uac_sends(&uac_request("ACK", &ok, 1, "", ""));
    net.uac_sends(&uac_request("BYE", &ok, 2, "", ""));
    let bye = net.take_one(UAS2);
    net.peer_sends(UAS2, &uas_response(&bye, 200, "OK", "", "", ""));
    net.assert_idle();
}

#[test]
fn ring_timeout_cancels_leg_b_and_answers_408() {
    let mut net = Net::new(config(&[UAS], Duration::from_secs(2)));
    net.uac_sends(&invite("c6", "", true));
    net.take(UAC);
    let b_invite = net.take_one(UAS);
    net.uas_sends(&uas_response(&b_invite, 180, "Ringing", "btag", "", ""));
    net.take(UAC);
    net.advance(Duration::from_millis(1900));
    assert!(net.take(UAC).is_empty());
    net.advance(Duration::from_millis(200));
    assert_eq!(net.take_one(UAC).code(), Some(408));
    let cancel = net.take_one(UAS);
    assert_eq!(cancel.method(), Some(&sip::Method::Cancel));
    net.uas_sends(&uas_response(&cancel, 200, "OK", "", "", ""));
    net.uas_sends(&uas_response(&b_invite, 487, "Request Terminated", "btag", "", ""));
    assert_eq!(net.ended(), vec![Disposition::NoAnswer]);
    net.assert_idle();
}

#[test]
fn reinvite_from_each_side_and_glare() {
    let mut net = Net::new(config(&[UAS], Duration::from_secs(60)));
    let (b_invite, ok) = establish(&mut net, "c7");
    let hold = SDP.replace("t=0 0\n", "t=0 0\na=sendonly\n");
    net.uac_sends(&uac_request("INVITE", &ok, 2, "Contact: <sip:alice@127.0.0.10:5061>\n", &hold));
    assert_eq!(net.take_one(UAC).code(), Some(100));
    let re_b = net.take_one(UAS);
    assert!(re_b.body.windows(10).any(|w| w == b"a=sendonly"));
    // Glare: the callee sends its own re-INVITE while ours is pending.
    net.uas_sends(&uas_request("INVITE", &b_invite, "btag", 1, SDP));
    let glare: Vec<u16> = net.take(UAS).iter().filter_map(|m| m.code()).collect();
    assert!(glare.contains(&491), "{glare:?}");
    net.uas_sends(&uas_response(&re_b, 200, "OK", "", "", SDP));
    let ok2 = net.take_one(UAC);
    assert_eq!(ok2.code(), Some(200));
    net.uac_sends(&uac_request("ACK", &ok, 2, "", ""));
    let ack_b = net.take_one(UAS);
    assert_eq!(ack_b.method(), Some(&sip::Method::Ack));
    assert_eq!(ack_b.cseq().unwrap().seq, re_b.cseq().unwrap().seq);
    // Now from the callee.
    net.uas_sends(&uas_request("INVITE", &b_invite, "btag", 2, SDP));
    let re_a = net.take(UAC);
    let re_a = re_a.into_iter().find(|m| m.method() == Some(&sip::Method::Invite)).unwrap();
    assert_eq!(hdr(&re_a, HeaderName::CallId), "c7");
    net.uac_sends(
        &uac_response(&re_a, 200, "OK").replace(
            "Content-Length: 0",
            "Contact: <sip:alice@127.0.0.10:5061>\nContent-Length: 0",
        ),
    );
    let ok_b: Vec<Message> = net.take(UAS);
    assert!(ok_b.iter().any(|m| m.code() == Some(200)));
    net.uas_sends(
        &uas_request("ACK", &b_invite, "btag", 2, "")
            .replace("branch=z9hG4bK-bACK2", "branch=z9hG4bK-bACK2x"),
    );
    let ack_a = net.take_one(UAC);
    assert_eq!(ack_a.method(), Some(&sip::Method::Ack));
    net.uac_sends(&uac_request("BYE", &ok, 3, "", ""));
    let bye = net.take(UAS).into_iter().find(|m| m.method() == Some(&sip::Method::Bye)).unwrap();
    net.uas_sends(&uas_response(&bye, 200, "OK", "", "", ""));
    net.assert_idle();
}

#[test]
fn info_and_update_are_relayed_in_dialog() {
    let mut net = Net::new(config(&[UAS], Duration::from_secs(60)));
    let (_b_invite, ok) = establish(&mut net, "c8");
    net.uac_sends(&uac_request("INFO", &ok, 2, "", "").replace(
        "Content-Length: 0",
        "Content-Type: application/dtmf-relay\nContent-Length: 10\n\nSignal=5\n",
    ));
    let info = net.take_one(UAS);
    assert_eq!(info.method(), Some(&sip::Method::Info));
    assert_eq!(&info.body[..], b"Signal=5\r\n");
    assert!(net.take(UAC).is_empty(), "INFO is answered when leg B answers");
    net.uas_sends(&uas_response(&info, 200, "OK", "", "", ""));
    assert_eq!(net.take_one(UAC).code(), Some(200));
    net.uac_sends(&uac_request("UPDATE", &ok, 3, "Contact: <sip:alice@127.0.0.10:5061>\n", SDP));
    let update = net.take_one(UAS);
    assert_eq!(update.method(), Some(&sip::Method::Update));
    net.uas_sends(&uas_response(&update, 200, "OK", "", "", SDP));
    let ok_up = net.take_one(UAC);
    assert_eq!(ok_up.code(), Some(200));
    assert!(ok_up.body.starts_with(b"v=0"));
    net.uac_sends(&uac_request("BYE", &ok, 4, "", ""));
    let bye = net.take(UAS).into_iter().find(|m| m.method() == Some(&sip::Method::Bye)).unwrap();
    net.uas_sends(&uas_response(&bye, 200, "OK", "", "", ""));
    net.assert_idle();
}

#[test]
fn prack_is_mapped_per_leg() {
    let mut net = Net::new(config(&[UAS], Duration::from_secs(60)));
    net.uac_sends(&invite("c9", "Supported: 100rel\n", true));
    net.take(UAC);
    let b_invite = net.take_one(UAS);
    assert!(b_invite.has_token(&HeaderName::Supported, "100rel"));
    net.uas_sends(&uas_response(
        &b_invite,
        183,
        "Session Progress",
        "btag",
        "Require: 100rel\nRSeq: 7001\n",
        SDP,
    ));
    let p183 = net.take_one(UAC);
    assert_eq!(p183.code(), Some(183));
    assert_eq!(p183.rseq(), Some(1), "leg A gets its own RSeq space");
    let prack = uac_request("PRACK", &p183, 2, "RAck: 1 1 INVITE\n", "");
    net.uac_sends(&prack);
    let prack_b = net.take_one(UAS);
    assert_eq!(prack_b.method(), Some(&sip::Method::Prack));
    let (rseq, cseq, _) = prack_b.rack().unwrap();
    assert_eq!((rseq, cseq), (7001, b_invite.cseq().unwrap().seq));
    net.uas_sends(&uas_response(&prack_b, 200, "OK", "", "", ""));
    assert_eq!(net.take_one(UAC).code(), Some(200));
    net.uas_sends(&uas_response(&b_invite, 200, "OK", "btag", "", ""));
    net.take(UAS);
    let ok = net.take_one(UAC);
    net.uac_sends(&uac_request("ACK", &ok, 1, "", ""));
    net.uac_sends(&uac_request("BYE", &ok, 3, "", ""));
    let bye = net.take(UAS).into_iter().find(|m| m.method() == Some(&sip::Method::Bye)).unwrap();
    net.uas_sends(&uas_response(&bye, 200, "OK", "", "", ""));
    net.assert_idle();
}

#[test]
fn forked_second_2xx_is_acked_and_hung_up() {
    let mut net = Net::new(config(&[UAS], Duration::from_secs(60)));
    let (b_invite, ok) = establish(&mut net, "c10");
    net.uas_sends(&uas_response(&b_invite, 200, "OK", "fork2", "", SDP));
    let msgs = net.take(UAS);
    let methods: Vec<String> = msgs.iter().map(summary).collect();
    assert_eq!(methods, vec!["ACK", "BYE"], "second fork is taken and released");
    assert!(hdr(&msgs[1], HeaderName::To).contains("fork2"));
    assert!(net.take(UAC).is_empty(), "leg A sees nothing of the fork");
    net.uac_sends(&uac_request("BYE", &ok, 2, "", ""));
    let bye = net.take(UAS).into_iter().find(|m| m.method() == Some(&sip::Method::Bye)).unwrap();
    assert!(hdr(&bye, HeaderName::To).contains("btag"));
    net.uas_sends(&uas_response(&bye, 200, "OK", "", "", ""));
}

#[test]
fn late_offer_waits_for_leg_a_ack() {
    let mut net = Net::new(config(&[UAS], Duration::from_secs(60)));
    net.uac_sends(&invite("c11", "", false));
    net.take(UAC);
    let b_invite = net.take_one(UAS);
    assert!(b_invite.body.is_empty());
    net.uas_sends(&uas_response(&b_invite, 200, "OK", "btag", "", SDP));
    assert!(net.take(UAS).is_empty(), "leg B's ACK carries leg A's answer");
    let ok = net.take_one(UAC);
    assert!(ok.body.starts_with(b"v=0"));
    net.uac_sends(&uac_request("ACK", &ok, 1, "", SDP));
    let ack = net.take_one(UAS);
    assert_eq!(ack.method(), Some(&sip::Method::Ack));
    assert!(ack.body.starts_with(b"v=0"));
}

#[test]
fn bad_requests_get_the_rfc_answer() {
    let mut net = Net::new(config(&[UAS], Duration::from_secs(60)));
    net.uac_sends(&invite("m0", "", true).replace("Max-Forwards: 70", "Max-Forwards: 0"));
    assert_eq!(net.take(UAC).last().unwrap().code(), Some(483));
    net.uac_sends(&invite("r1", "Require: foo, 100rel\n", true));
    let r = net.take(UAC).pop().unwrap();
    assert_eq!(r.code(), Some(420));
    assert_eq!(hdr(&r, HeaderName::Unsupported), "foo");
    net.uac_sends(
        &invite("s1", "", true)
            .replacen("INVITE sip:100@", "INVITE urn:service:sos?x=", 1)
            .replace("urn:service:sos?x=127.0.0.1:5060", "urn:service:sos"),
    );
    assert_eq!(net.take(UAC).last().unwrap().code(), Some(416));
    net.uac_sends(
        &invite("u1", "", false)
            .replace("INVITE sip", "BYE sip")
            .replace("1 INVITE", "1 BYE")
            .replace("To: <sip:100@127.0.0.1>", "To: <sip:100@127.0.0.1>;tag=nope"),
    );
    assert_eq!(net.take(UAC).last().unwrap().code(), Some(481));
    net.uac_sends("OPTIONS sip:127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.10:5061;branch=z9hG4bKo1\nFrom: <sip:p@x>;tag=1\nTo: <sip:127.0.0.1>\nCall-ID: o1\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n");
    assert_eq!(net.take(UAC).last().unwrap().code(), Some(200));
    // Unparseable: a 400 built from the raw headers.
    net.uac_sends("INVITE sip:100@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.10:5061;branch=z9hG4bKbad\nFrom: <sip:p@x>;tag=1\nTo: <sip:q@x>\nCall-ID: bad1\nCSeq: 1 INVITE\nContent-Length: 99\n\nshort");
    assert_eq!(net.take(UAC).last().unwrap().code(), Some(400));
    // From a trunk listener, an unknown source is refused.
    net.peer_sends("127.0.0.99:5080", &invite("t1", "", true));
    assert_eq!(net.take("127.0.0.99:5080").last().unwrap().code(), Some(403));
    assert_eq!(net.engine.call_count(), 0);
}

#[test]
fn session_timers_refresh_leg_b_and_expire_a_silent_leg_a() {
    let mut net = Net::new(config(&[UAS], Duration::from_secs(60)));
    net.uac_sends(&invite("st1", "Supported: timer\nSession-Expires: 90;refresher=uac\n", true));
    net.take(UAC);
    let b_invite = net.take_one(UAS);
    assert_eq!(hdr(&b_invite, HeaderName::SessionExpires), "1800", "leg B gets its own interval");
    net.uas_sends(&uas_response(
        &b_invite,
        200,
        "OK",
        "btag",
        "Session-Expires: 120;refresher=uac\nRequire: timer\n",
        SDP,
    ));
    net.take(UAS);
    let ok = net.take_one(UAC);
    assert_eq!(hdr(&ok, HeaderName::SessionExpires), "90;refresher=uac");
    net.uac_sends(&uac_request("ACK", &ok, 1, "", ""));
    // Leg A refreshes with a bare UPDATE at 40 s: answered locally, not relayed.
    net.advance(Duration::from_secs(40));
    net.uac_sends(&uac_request("UPDATE", &ok, 2, "Session-Expires: 90;refresher=uac\n", ""));
    let r = net.take(UAC);
    assert_eq!(r.last().unwrap().code(), Some(200));
    // The SBC refreshes leg B itself at half its interval (60 s after answer).
    net.advance(Duration::from_millis(20_200));
    let upd = net.take_one(UAS);
    assert_eq!(upd.method(), Some(&sip::Method::Update));
    assert_eq!(hdr(&upd, HeaderName::SessionExpires), "120;refresher=uac");
    net.uas_sends(&uas_response(&upd, 200, "OK", "", "Session-Expires: 120;refresher=uac\n", ""));
    // Leg A goes quiet: 90 - 30 = 60 s after its last refresh (at 40 s) the call ends, BYE on both legs.
    net.advance(Duration::from_secs(38));
    assert!(net.take(UAC).iter().all(|m| m.method() != Some(&sip::Method::Bye)));
    net.advance(Duration::from_secs(2));
    let bye_a = net.take_one(UAC);
    assert_eq!(bye_a.method(), Some(&sip::Method::Bye));
    let bye_b = net.take_one(UAS);
    assert_eq!(bye_b.method(), Some(&sip::Method::Bye));
    net.uac_sends(&uac_response(&bye_a, 200, "OK"));
    net.uas_sends(&uas_response(&bye_b, 200, "OK", "", "", ""));
    net.assert_idle();
}

#[test]
fn session_interval_below_min_se_is_refused() {
    let mut net = Net::new(config(&[UAS], Duration::from_secs(60)));
    net.uac_sends(&invite("st2", "Session-Expires: 30\n", true));
    let r = net.take(UAC).pop().unwrap();
    assert_eq!(r.code(), Some(422));
    assert_eq!(hdr(&r, HeaderName::MinSe), "90");
    assert!(net.take(UAS).is_empty());
}

#[test]
fn unreachable_tcp_target_fails_over_at_once() {
    let mut cfg = config(&["127.0.0.23:5080", UAS], Duration::from_secs(60));
    cfg.listeners[1].transports.push(Transport::Tcp);
    cfg.trunks[0].targets[0].transport = Transport::Tcp;
    let mut net = Net::new(cfg);
    net.uac_sends(&invite("tcp1", "", true));
    net.take(UAC);
    let first = net.take_one("127.0.0.23:5080");
    assert_eq!(&first.top_via().unwrap().transport[..], b"TCP");
    // The shell reports that the connection could not be opened.
    let flow = Flow {
        listener: ListenerId(1),
        transport: Transport::Tcp,
        remote: addr("127.0.0.23:5080"),
    };
    net.engine.handle_flow_error(net.now, flow);
    net.drain();
    let second = net.take_one(UAS);
    assert_eq!(second.method(), Some(&sip::Method::Invite), "failover without waiting for Timer B");
}

/// A browser on WSS (JsSIP style: `.invalid` Via and Contact hosts, RFC 7118 section 5): every
/// response and the callee's BYE go back on the client's own flow, never toward its Contact.
#[test]
fn wss_client_is_reached_on_its_own_flow_whatever_its_via_and_contact() {
    let mut cfg = config(&[UAS], Duration::from_secs(60));
    cfg.listeners[0].addr = addr("127.0.0.1:8443");
    cfg.listeners[0].transports = vec![Transport::Wss];
    let mut net = Net::new(cfg);
    const WSS: &str = "127.0.0.10:53211";
    let ws = Flow { listener: ListenerId(0), transport: Transport::Wss, remote: addr(WSS) };
    let invite = invite("ws1", "", true)
        .replace("SIP/2.0/UDP 127.0.0.10:5061", "SIP/2.0/WSS df7jal23ls0d.invalid")
        .replace("<sip:alice@127.0.0.10:5061>", "<sip:h7kjh12s@df7jal23ls0d.invalid;transport=ws>");
    net.input(ws, &invite);
    let (flow, trying) = net.take_flows(WSS).remove(0);
    assert_eq!((flow, trying.code()), (ws, Some(100)));
    let b_invite = net.take_one(UAS);
    assert!(!String::from_utf8_lossy(&b_invite.to_bytes()).contains(".invalid"));
    net.uas_sends(&uas_response(&b_invite, 200, "OK", "btag", "", SDP));
    net.take_one(UAS);
    let sent = net.take_flows(WSS);
    let ok = &sent[0].1;
    assert_eq!((sent.len(), sent[0].0, ok.code()), (1, ws, Some(200)));
    assert_eq!(ok.contact().unwrap().unwrap().uri.to_string(), "sip:127.0.0.1:8443;transport=wss");
    assert_eq!(hdr(ok, HeaderName::Via), "SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bK-a-ws1");
    net.input(ws, &uac_request("ACK", ok, 1, "", ""));

    // The callee hangs up: the BYE goes on the WSS flow to the client's Contact as its URI.
    net.uas_sends(&uas_request("BYE", &b_invite, "btag", 1, ""));
    assert_eq!(net.take_one(UAS).code(), Some(200));
    let mut sent = net.take_flows(WSS);
    assert_eq!(sent.len(), 1, "one BYE, on the flow");
    let (flow, bye) = sent.remove(0);
    assert_eq!((flow, bye.method()), (ws, Some(&sip::Method::Bye)));
    assert_eq!(
        bye.request_uri().unwrap().to_string(),
        "sip:h7kjh12s@df7jal23ls0d.invalid;transport=ws"
    );
    assert!(hdr(&bye, HeaderName::Via).starts_with("SIP/2.0/WSS 127.0.0.1:8443;branch="));
    assert!(net.sent.is_empty(), "nothing sent anywhere else: {:?}", net.sent);
    net.input(ws, &uac_response(&bye, 200, "OK"));
    assert_eq!(net.ended(), vec![Disposition::Answered]);
    net.assert_idle();
}

/// The WebSocket connection of leg A is gone when the callee hangs up: the shell reports the
/// flow failed, the BYE on it fails at once (no retransmission, no other destination tried)
/// and the call leaves nothing behind.
#[test]
fn bye_to_a_websocket_client_whose_connection_is_gone_fails_on_the_flow() {
    let mut cfg = config(&[UAS], Duration::from_secs(60));
    cfg.listeners[0].transports = vec![Transport::Ws];
    let mut net = Net::new(cfg);
    const WS: &str = "127.0.0.10:53212";
    let ws = Flow { listener: ListenerId(0), transport: Transport::Ws, remote: addr(WS) };
    let invite = invite("ws2", "", true)
        .replace("SIP/2.0/UDP 127.0.0.10:5061", "SIP/2.0/WS x.invalid")
        .replace("<sip:alice@127.0.0.10:5061>", "<sip:y@x.invalid;transport=ws>");
    net.input(ws, &invite);
    let b_invite = net.take_one(UAS);
    net.uas_sends(&uas_response(&b_invite, 200, "OK", "btag", "", SDP));
    net.take_one(UAS);
    let ok = net.take_flows(WS).pop().unwrap().1;
    net.input(ws, &uac_request("ACK", &ok, 1, "", ""));
    net.uas_sends(&uas_request("BYE", &b_invite, "btag", 1, ""));
    net.take_one(UAS);
    let (flow, bye) = net.take_flows(WS).remove(0);
    assert_eq!((flow, bye.method()), (ws, Some(&sip::Method::Bye)));
    net.engine.handle_flow_error(net.now, ws);
    net.drain();
    net.advance(Duration::from_secs(1));
    assert!(net.sent.is_empty(), "nothing retried or sent elsewhere: {:?}", net.sent);
    assert_eq!(net.engine.call_count(), 0);
    net.assert_idle();
}

#[test]
fn header_policy_allows_removes_rewrites_and_adds() {
    let mut cfg = config(&[UAS], Duration::from_secs(60));
    cfg.trunks[0].headers = HeaderPolicy {
        allow: vec!["P-Asserted-Identity".into(), "Privacy".into(), "X-Account".into()],
        remove: vec!["X-Account".into()],
        add: vec![("X-Carrier-Id".into(), "42".into())],
        rewrite: vec![sbc_core::config::HeaderRewrite {
            name: "P-Asserted-Identity".into(),
            pattern: regex::Regex::new("@pai\\.example").unwrap(),
            replace: "@public.example".into(),
        }],
    };
    let mut net = Net::new(cfg);
    net.uac_sends(&invite("hp1", "Privacy: id\nX-Account: 1234\n", true));
    let b = net.take_one(UAS);
    assert_eq!(hdr(&b, HeaderName::Other(Bytes::from_static(b"Privacy"))), "id");
    assert_eq!(
        hdr(&b, HeaderName::Other(Bytes::from_static(b"P-Asserted-Identity"))),
        "<sip:alice@public.example>"
    );
    assert_eq!(hdr(&b, HeaderName::Other(Bytes::from_static(b"X-Carrier-Id"))), "42");
    assert!(
        b.header(&HeaderName::Other(Bytes::from_static(b"X-Account"))).is_none(),
        "remove wins over allow"
    );
    assert!(b.header(&HeaderName::Other(Bytes::from_static(b"X-Secret-Topology"))).is_none());
}

#[test]
fn answer_racing_the_cancel_is_acked_and_hung_up() {
    let mut net = Net::new(config(&[UAS], Duration::from_secs(60)));
    net.uac_sends(&invite("race1", "", true));
    net.take(UAC);
    let b_invite = net.take_one(UAS);
    net.uas_sends(&uas_response(&b_invite, 180, "Ringing", "btag", "", ""));
    net.take(UAC);
    net.uac_sends(
        &invite("race1", "", false)
            .replacen("INVITE sip", "CANCEL sip", 1)
            .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL"),
    );
    let to_uac: Vec<u16> = net.take(UAC).iter().filter_map(|m| m.code()).collect();
    assert!(to_uac.contains(&487), "{to_uac:?}");
    let cancel = net.take_one(UAS);
    net.uas_sends(&uas_response(&cancel, 200, "OK", "", "", ""));
    // The callee had already answered: its 200 crosses our CANCEL.
    net.uas_sends(&uas_response(&b_invite, 200, "OK", "btag", "", SDP));
    let msgs = net.take(UAS);
    let methods: Vec<String> = msgs.iter().map(summary).collect();
    assert_eq!(methods, vec!["ACK", "BYE"], "the late answer is taken and released");
    assert_eq!(hdr(&msgs[1], HeaderName::CallId), hdr(&b_invite, HeaderName::CallId));
    assert!(hdr(&msgs[1], HeaderName::To).contains("btag"));
    assert!(net.take(UAC).is_empty(), "the caller already has its 487");
    net.uas_sends(&uas_response(&msgs[1], 200, "OK", "", "", ""));
    net.assert_idle();
}

#[test]
fn targets_marked_down_by_options_are_skipped_and_all_down_is_503() {
    let mut cfg = config(&["127.0.0.24:5080", UAS], Duration::from_secs(60));
    let ka = sbc_core::config::KeepAliveConfig {
        interval: Duration::from_secs(10),
        down_after: 1,
        up_after: 1,
    };
    cfg.trunks[0].options = Some(ka);
    cfg.trunks[1].options = Some(ka);
    let health = Arc::new(sbc_core::b2bua::health::TrunkHealth::new(&cfg));
    let mut net = Net::new(cfg);
    net.engine.set_health(net.now, Arc::clone(&health), true);
    net.advance(Duration::from_millis(1));
    // Both targets are probed at once; the UAS answers, the first target never does.
    let probe = net.take_one(UAS);
    assert_eq!(probe.method(), Some(&sip::Method::Options));
    net.uas_sends(&uas_response(&probe, 200, "OK", "p", "", ""));
    assert_eq!(net.take("127.0.0.24:5080").len(), 1);
    net.advance(Duration::from_millis(32_100)); // Timer F of the unanswered probe
    assert!(!health.is_up(TrunkId(0), 0));
    assert!(health.is_up(TrunkId(1), 0));
    net.take(UAS);
    net.take("127.0.0.24:5080");
    // A new call goes straight to the live trunk.
    net.uac_sends(&invite("ka1", "", true));
    net.take(UAC);
    assert!(net.take("127.0.0.24:5080").iter().all(|m| m.method() != Some(&sip::Method::Invite)));
    let b = net.take(UAS).into_iter().find(|m| m.method() == Some(&sip::Method::Invite));
    assert!(b.is_some(), "the call goes to the trunk that is up");
    // With every target down, new calls are refused with 503.
    health.set(TrunkId(1), 0, false);
    net.uac_sends(&invite("ka2", "", true));
    assert_eq!(net.take(UAC).last().unwrap().code(), Some(503));
}

#[test]
fn session_interval_too_small_on_leg_b_is_retried_with_its_min_se() {
    let mut net = Net::new(config(&[UAS], Duration::from_secs(60)));
    net.uac_sends(&invite("se422", "", true));
    net.take(UAC);
    let first = net.take_one(UAS);
    assert_eq!(hdr(&first, HeaderName::SessionExpires), "1800");
    net.uas_sends(&uas_response(
        &first,
        422,
        "Session Interval Too Small",
        "x",
        "Min-SE: 3600\n",
        "",
    ));
    let msgs = net.take(UAS);
    let methods: Vec<String> = msgs.iter().map(summary).collect();
    assert_eq!(methods, vec!["ACK", "INVITE"], "the 422 is ACKed and the INVITE retried");
    let retry = &msgs[1];
    assert_eq!(hdr(retry, HeaderName::SessionExpires), "3600");
    assert_eq!(hdr(retry, HeaderName::MinSe), "3600");
    assert!(net.take(UAC).is_empty(), "the caller never sees the 422");
    net.uas_sends(&uas_response(
        retry,
        200,
        "OK",
        "btag",
        "Session-Expires: 3600;refresher=uac\n",
        SDP,
    ));
    net.take(UAS);
    let ok = net.take_one(UAC);
    assert_eq!(ok.code(), Some(200));
    net.uac_sends(&uac_request("ACK", &ok, 1, "", ""));
    net.uac_sends(&uac_request("BYE", &ok, 2, "", ""));
    let bye = net.take(UAS).into_iter().find(|m| m.method() == Some(&sip::Method::Bye)).unwrap();
    net.uas_sends(&uas_response(&bye, 200, "OK", "", "", ""));
    net.assert_idle();
}

/// The `c=` address and the first `m=` port of an SDP body.
fn sdp_addr(m: &Message) -> (String, u16) {
    let text = String::from_utf8_lossy(&m.body).into_owned();
    let c = text.lines().find_map(|l| l.strip_prefix("c=IN IP4 ")).unwrap_or("").trim().to_owned();
    let port = text
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|l| l.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    (c, port)
}

#[test]
fn media_is_anchored_on_each_legs_listener() {
    let relay = Arc::new(VirtualBackend::new(40_000..=40_099));
    let mut net = Net::with_relay(config(&[UAS], Duration::from_secs(60)), Some(relay.clone()));
    let (b_invite, ok) = establish(&mut net, "anchor@client.example");
    // Leg B leaves through the trunk listener (127.0.0.2), leg A came in on 127.0.0.1.
    let (b_addr, b_port) = sdp_addr(&b_invite);
    let (a_addr, a_port) = sdp_addr(&ok);
    assert_eq!(b_addr, "127.0.0.2");
    assert_eq!(a_addr, "127.0.0.1");
    assert!((40_000..=40_099).contains(&b_port) && (40_000..=40_099).contains(&a_port));
    assert_eq!(relay.open_pairs(), 1);
    let pair = relay.pair_ids()[0];
    // The relay knows each side's peer from that side's SDP.
    let from_a = relay.remote(pair, LegSide::A).unwrap();
    assert_eq!(from_a.rtp, Some(addr("127.0.0.10:6000")));
    assert_eq!(relay.remote(pair, LegSide::B).unwrap().rtp, Some(addr("127.0.0.10:6000")));
    net.uac_sends(&uac_request("BYE", &ok, 2, "", ""));
    let bye = net.take_one(UAS);
    net.uas_sends(&uas_response(&bye, 200, "OK", "", "", ""));
    net.take(UAC);
    assert_eq!(relay.open_pairs(), 0, "the call's ports go back when it ends");
    let media = net.events.iter().find_map(|Event::Call { kind, .. }| match kind {
        CallEventKind::Media { a, b } => Some((a.clone(), b.clone())),
        _ => None,
    });
    assert_eq!(media.map(|(a, b)| (a.codec, b.codec)), Some(("PCMU".into(), "PCMU".into())));
    net.assert_idle();
}

#[test]
fn media_timeout_ends_the_call_on_both_legs() {
    let relay = Arc::new(VirtualBackend::new(40_000..=40_099));
    let mut cfg = config(&[UAS], Duration::from_secs(60));
    cfg.media.defaults.inactivity_timeout = Some(Some(Duration::from_secs(10)));
    let mut net = Net::with_relay(cfg, Some(relay.clone()));
    let (_b_invite, _ok) = establish(&mut net, "silent@client.example");
    let answered = net.now;
    net.advance(Duration::from_secs(5));
    // RTP flowed at t=5 s: the call may live until t=15 s.
    let pair = relay.pair_ids()[0];
    assert!(relay.set_last_packet(pair, net.now));
    net.advance(Duration::from_millis(9_900));
    assert!(net.take(UAC).is_empty() && net.take(UAS).is_empty(), "ended too early");
    net.advance(Duration::from_millis(100));
    assert_eq!(net.now, answered + Duration::from_secs(15));
    for peer in [UAC, UAS] {
        let bye = net.take_one(peer);
        assert_eq!(bye.method(), Some(&sip::Method::Bye));
        assert!(hdr(&bye, HeaderName::Reason).contains("media timeout"), "{}", summary(&bye));
        net.peer_or_uac_answers(peer, &bye);
    }
    let reason = net.events.iter().find_map(|Event::Call { kind, .. }| match kind {
        CallEventKind::Ended { reason, released_by, .. } => Some((reason.clone(), *released_by)),
        _ => None,
    });
    assert_eq!(reason, Some((Some("media timeout".into()), ReleaseSide::Sbc)));
    assert_eq!(relay.open_pairs(), 0);
    net.assert_idle();
}

#[test]
fn no_media_ports_is_503_and_bad_sdp_is_488_with_a_warning() {
    // Two RTP/RTCP pairs: one call (a pair per leg) fits.
    let relay = Arc::new(VirtualBackend::new(40_000..=40_003));
    let mut net = Net::with_relay(config(&[UAS], Duration::from_secs(60)), Some(relay.clone()));
    let (_b_invite, ok) = establish(&mut net, "first@client.example");
    net.uac_sends(&invite("second@client.example", "", true));
    let mut to_uac = net.take(UAC);
    let refusal = to_uac.pop().unwrap();
    assert_eq!(refusal.code(), Some(503));
    assert!(hdr(&refusal, HeaderName::Warning).starts_with("399 "));
    assert!(net.take(UAS).is_empty(), "no leg B without media ports");
    // The first call is untouched and its end frees the ports for the next.
    net.uac_sends(&uac_request("BYE", &ok, 2, "", ""));
    let bye = net.take_one(UAS);
    net.uas_sends(&uas_response(&bye, 200, "OK", "", "", ""));
    net.take(UAC);
    assert_eq!(relay.free_ports(), 2, "both RTP ports (one per side) are free again");
    let (_, ok3) = establish(&mut net, "third@client.example");
    net.uac_sends(&uac_request("BYE", &ok3, 3, "", ""));
    let bye = net.take_one(UAS);
    net.uas_sends(&uas_response(&bye, 200, "OK", "", "", ""));
    net.take(UAC);

    // An offer that is not SDP at all.
    let bad = invite("bad-sdp@client.example", "", true).replace("m=audio 6000", "m=audio 60x0");
    net.uac_sends(&bad);
    let refusal = net.take(UAC).pop().unwrap();
    assert_eq!(refusal.code(), Some(488));
    assert!(
        hdr(&refusal, HeaderName::Warning).contains("m="),
        "{}",
        hdr(&refusal, HeaderName::Warning)
    );
    net.assert_idle();
}

#[test]
fn leg_call_ids_are_reported_per_attempt_when_asked() {
    let mut net = Net::new(config(&[UAS, UAS2], Duration::from_secs(60)));
    // Not asked for: nothing is queued.
    establish(&mut net, "no-report");
    assert_eq!(net.engine.poll_leg_id(), None);

    net.engine.report_leg_ids();
    net.uac_sends(&invite("c-legs", "", true));
    net.take(UAC);
    let b1 = net.take_one(UAS);
    net.uas_sends(&uas_response(&b1, 503, "Service Unavailable", "x", "", ""));
    net.take(UAS);
    let b2 = net.take_one(UAS2);
    let legs: Vec<_> = std::iter::from_fn(|| net.engine.poll_leg_id()).collect();
    let ids: Vec<(LegSide, String)> =
        legs.iter().map(|l| (l.side, String::from_utf8_lossy(&l.call_id).into_owned())).collect();
    assert_eq!(
        ids,
        vec![
            (LegSide::A, "c-legs".to_owned()),
            (LegSide::B, hdr(&b1, HeaderName::CallId)),
            (LegSide::B, hdr(&b2, HeaderName::CallId)),
        ]
    );
    // All three belong to the call of the Started event.
    let started = net
        .events
        .iter()
        .rev()
        .find_map(|Event::Call { call, kind }| {
            matches!(kind, CallEventKind::Started { .. }).then_some(*call)
        })
        .unwrap();
    assert!(legs.iter().all(|l| l.call == started));
}

// ---- edge policy ------------------------------------------------------------------------------

/// `config` with a policy: trunk limits on trunk 0, and `edit` for the rest.
fn policy_config(targets: &[&str], edit: impl FnOnce(&mut sbc_policy::PolicyConfig)) -> Config {
    let mut cfg = config(targets, Duration::from_secs(60));
    edit(&mut cfg.policy.rules);
    cfg
}

const REALM: &str = "sbc.test";
const RURI: &str = "sip:100@127.0.0.1:5060";

fn digest_config() -> Config {
    policy_config(&[UAS], |p| {
        p.realms = vec![sbc_policy::RealmConfig {
            realm: REALM.into(),
            users: vec![sbc_policy::AuthUser {
                name: "alice".into(),
                credential: sbc_policy::Credential::Password("s3cret".into()),
            }],
        }];
        p.auth_algorithms = vec![sbc_policy::Algorithm::Sha256];
        p.nonce_secret = b"0123456789abcdef0123456789abcdef".to_vec().into();
        p.nonce_lifetime = Duration::from_secs(300);
        p.listeners =
            vec![sbc_policy::ListenerPolicy { realm: Some(REALM.into()), ..Default::default() }];
        p.offences.auth_failure =
            Some(sbc_policy::OffenceRule { threshold: 3, window: Duration::from_secs(60) });
    })
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// A parameter of a challenge header value.
fn challenge_param(challenge: &str, name: &str) -> String {
    let start = challenge.find(&format!("{name}=")).unwrap() + name.len() + 1;
    let v = &challenge[start..];
    match v.strip_prefix('"') {
        Some(q) => q[..q.find('"').unwrap()].to_owned(),
        None => v.split(',').next().unwrap().trim().to_owned(),
    }
}

/// The credentials a UA computes for `challenge` (qop=auth, SHA-256).
fn credentials(challenge: &str, user: &str, password: &str, method: &str, uri: &str) -> String {
    let nonce = challenge_param(challenge, "nonce");
    let realm = challenge_param(challenge, "realm");
    let ha1 = sha256_hex(&format!("{user}:{realm}:{password}"));
    let ha2 = sha256_hex(&format!("{method}:{uri}"));
    let resp = sha256_hex(&format!("{ha1}:{nonce}:00000001:c0ffee:auth:{ha2}"));
    format!(
        "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", \
         response=\"{resp}\", algorithm=SHA-256, cnonce=\"c0ffee\", nc=00000001, qop=auth"
    )
}

fn register(call_id: &str, cseq: u32, extra: &str) -> String {
    format!(
        "REGISTER sip:127.0.0.1:5060 SIP/2.0\n\
Via: SIP/2.0/UDP 127.0.0.10:5061;branch=z9hG4bK-r-{call_id}-{cseq}\n\
Max-Forwards: 70\n\
From: <sip:alice@sbc.test>;tag=rtag\n\
To: <sip:alice@sbc.test>\n\
Call-ID: {call_id}\n\
CSeq: {cseq} REGISTER\n\
Contact: <sip:alice@127.0.0.10:5061>\n\
Expires: 600\n\
{extra}Content-Length: 0\n\n"
    )
}

/// The final response to the UAC, skipping 100 Trying.
fn final_to_uac(net: &mut Net) -> Message {
    let mut msgs: Vec<Message> =
        net.take(UAC).into_iter().filter(|m| m.code().is_some_and(|c| c >= 200)).collect();
    assert_eq!(msgs.len(), 1, "{:?}", msgs.iter().map(summary).collect::<Vec<_>>());
    msgs.remove(0)
}

/// A response's shape without what differs per request (nonce, tags, Call-ID, branch, CSeq).
fn shape(m: &Message) -> String {
    let mut out = format!("{} ", m.code().unwrap());
    for h in &m.headers {
        let value = String::from_utf8_lossy(&h.value).into_owned();
        let value = match h.name {
            HeaderName::ProxyAuthenticate | HeaderName::WwwAuthenticate => {
                value.replace(&challenge_param(&value, "nonce"), "NONCE")
            }
            HeaderName::Via | HeaderName::CallId | HeaderName::CSeq => "*".into(),
            HeaderName::From | HeaderName::To => value.split(";tag=").next().unwrap().into(),
            _ => value,
        };
        out += &format!("{}: {value}\n", h.name.as_str());
    }
    out
}

#[test]
fn invite_is_challenged_407_then_accepted_with_the_right_credentials() {
    let mut net = Net::new(digest_config());
    net.engine.set_wall_clock(net.now, std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    net.uac_sends(&invite("d1", "", true));
    let ch = final_to_uac(&mut net);
    assert_eq!(ch.code(), Some(407));
    assert!(net.take(UAS).is_empty(), "nothing reaches the trunk before authentication");
    let challenge = hdr(&ch, HeaderName::ProxyAuthenticate);
    assert!(challenge.starts_with("Digest realm=\"sbc.test\", nonce=\""), "{challenge}");
    assert!(challenge.contains("algorithm=SHA-256, qop=\"auth\""));
    // The caller ACKs the 407 and retries with credentials (same Call-ID, next CSeq).
    let auth = credentials(&challenge, "alice", "s3cret", "INVITE", RURI);
    let retry = invite("d1", &format!("Proxy-Authorization: {auth}\n"), true)
        .replace("CSeq: 1 INVITE", "CSeq: 2 INVITE")
        .replace("branch=z9hG4bK-a-d1", "branch=z9hG4bK-a-d1b");
    net.uac_sends(&retry);
    let b_invite = net.take_one(UAS);
    assert_eq!(b_invite.method(), Some(&sip::Method::Invite));
    assert!(
        b_invite.header(&HeaderName::ProxyAuthorization).is_none(),
        "credentials stay on leg A"
    );
    net.take(UAC);
    net.uas_sends(&uas_response(&b_invite, 200, "OK", "btag", "", SDP));
    net.take(UAS);
    let ok = net.take_one(UAC);
    net.uac_sends(&uac_request("ACK", &ok, 2, "", ""));
    net.uac_sends(&uac_request("BYE", &ok, 3, "", ""));
    let bye = net.take(UAS).into_iter().find(|m| m.method() == Some(&sip::Method::Bye)).unwrap();
    net.uas_sends(&uas_response(&bye, 200, "OK", "", "", ""));
    assert_eq!(net.take_one(UAC).code(), Some(200), "the BYE is answered");
    // The same credentials again (a replay, new branch) are not accepted: fresh challenge.
    let replay = retry
        .replace("branch=z9hG4bK-a-d1b", "branch=z9hG4bK-a-d1c")
        .replace("Call-ID: d1", "Call-ID: d1r");
    net.uac_sends(&replay);
    let again = final_to_uac(&mut net);
    assert_eq!(again.code(), Some(407));
    assert!(hdr(&again, HeaderName::ProxyAuthenticate).ends_with("stale=true"));
    let c = net.engine.policy().counters();
    assert_eq!((c.auth_challenged, c.auth_ok, c.auth_replayed, c.auth_failed), (1, 1, 1, 0));
    net.assert_idle();
}

#[test]
fn wrong_password_and_unknown_user_get_the_same_answer_and_failures_ban() {
    let mut net = Net::new(digest_config());
    let mut answers = Vec::new();
    for (i, user, password) in [(1, "alice", "guess"), (2, "mallory", "guess")] {
        let id = format!("w{i}");
        net.uac_sends(&invite(&id, "", true));
        let challenge = hdr(&final_to_uac(&mut net), HeaderName::ProxyAuthenticate);
        let auth = credentials(&challenge, user, password, "INVITE", RURI);
        let retry = invite(&id, &format!("Proxy-Authorization: {auth}\n"), true)
            .replace("CSeq: 1 INVITE", "CSeq: 2 INVITE")
            .replace(&format!("branch=z9hG4bK-a-{id}"), &format!("branch=z9hG4bK-a-{id}b"));
        net.uac_sends(&retry);
        answers.push(final_to_uac(&mut net));
    }
    assert_eq!(answers[0].code(), Some(407));
    assert!(!hdr(&answers[0], HeaderName::ProxyAuthenticate).contains("stale"));
    assert_eq!(shape(&answers[0]), shape(&answers[1]), "a known user fails like an unknown one");
    assert!(net.take(UAS).is_empty());
    // The third failure (threshold 3) bans the source: its answer is the last it gets.
    net.uac_sends(&invite(
        "w3",
        "Proxy-Authorization: Digest username=\"alice\", realm=\"sbc.test\", \
        nonce=\"00\", uri=\"sip:100@127.0.0.1:5060\", response=\"00\"\n",
        true,
    ));
    assert_eq!(final_to_uac(&mut net).code(), Some(407));
    assert!(net.engine.policy().is_banned(net.now, addr(UAC).ip()));
    net.uac_sends(&invite("w4", "", true));
    assert!(net.take(UAC).is_empty(), "a banned source is dropped silently");
    assert_eq!(net.engine.stats().dropped_banned, 1);
    assert_eq!(net.engine.policy().counters().offences_auth_failure, 3);
}

#[test]
fn expired_nonce_is_answered_stale() {
    let mut net = Net::new(digest_config());
    net.engine.set_wall_clock(net.now, std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    net.uac_sends(&invite("s1", "", true));
    let challenge = hdr(&final_to_uac(&mut net), HeaderName::ProxyAuthenticate);
    net.advance(Duration::from_secs(301));
    net.take(UAC); // the 407's retransmissions (the test sends no ACK)
    let auth = credentials(&challenge, "alice", "s3cret", "INVITE", RURI);
    net.uac_sends(&invite("s2", &format!("Proxy-Authorization: {auth}\n"), true));
    let stale = final_to_uac(&mut net);
    assert_eq!(stale.code(), Some(407));
    assert!(hdr(&stale, HeaderName::ProxyAuthenticate).ends_with(", stale=true"));
    assert_eq!(net.engine.policy().counters().auth_stale, 1);
}

#[test]
fn register_is_challenged_401_then_answered_200_locally() {
    let mut net = Net::new(digest_config());
    net.engine.set_wall_clock(net.now, std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    net.uac_sends(&register("reg1", 1, ""));
    let ch = final_to_uac(&mut net);
    assert_eq!(ch.code(), Some(401));
    let challenge = hdr(&ch, HeaderName::WwwAuthenticate);
    assert!(ch.header(&HeaderName::ProxyAuthenticate).is_none());
    let auth = credentials(&challenge, "alice", "s3cret", "REGISTER", "sip:127.0.0.1:5060");
    net.uac_sends(&register("reg1", 2, &format!("Authorization: {auth}\n")));
    let ok = final_to_uac(&mut net);
    assert_eq!(ok.code(), Some(200));
    assert_eq!(hdr(&ok, HeaderName::Contact), "<sip:alice@127.0.0.10:5061>;expires=600");
    let date = HeaderName::from_bytes(&Bytes::from_static(b"Date"));
    assert_eq!(hdr(&ok, date), "Fri, 15 Jan 2027 08:00:00 GMT");
    assert!(net.take(UAS).is_empty(), "REGISTER is answered locally");
    assert_eq!(net.engine.stats().registers_accepted, 1);
    // Without a realm on the listener REGISTER is not served.
    let mut plain = Net::new(config(&[UAS], Duration::from_secs(60)));
    plain.uac_sends(&register("reg2", 1, ""));
    assert_eq!(final_to_uac(&mut plain).code(), Some(405));
}

fn cac_config() -> Config {
    policy_config(&[UAS], |p| {
        p.trunks = vec![sbc_policy::TrunkLimits { max_outbound: Some(2), ..Default::default() }];
        p.emergency_numbers = vec!["112".into()];
        p.cac_retry_after = Duration::from_secs(9);
    })
}

#[test]
fn trunk_cac_answers_503_with_retry_after_and_permits_come_back() {
    let mut net = Net::new(cac_config());
    let (_b1, ok1) = establish(&mut net, "cac1");
    // The second call rings (early dialogs hold their slot too).
    net.uac_sends(&invite("cac2", "", true));
    net.take(UAC);
    let b2 = net.take_one(UAS);
    assert_eq!(net.engine.policy().trunk_calls(0).unwrap().outbound, 2);
    net.uac_sends(&invite("cac3", "", true));
    let full = final_to_uac(&mut net);
    assert_eq!(full.code(), Some(503));
    assert_eq!(hdr(&full, HeaderName::RetryAfter), "9");
    assert!(net.take(UAS).is_empty(), "the refused call never reaches the trunk");
    // An emergency call connects while the trunk is full.
    let emergency =
        invite("cac4", "", true).replace("sip:100@127.0.0.1:5060", "sip:112@127.0.0.1:5060");
    net.uac_sends(&emergency);
    net.take(UAC);
    let b4 = net.take_one(UAS);
    assert!(b4.request_uri().unwrap().to_string().starts_with("sip:112@"));
    assert_eq!(net.engine.policy().counters().emergency_calls, 1);
    // The ringing call is refused by the callee: its slot comes back, a new call fits.
    net.uas_sends(&uas_response(&b2, 486, "Busy Here", "b2", "", ""));
    net.take(UAS);
    assert_eq!(final_to_uac(&mut net).code(), Some(486));
    net.uas_sends(&uas_response(&b4, 603, "Decline", "b4", "", ""));
    net.take(UAS);
    net.take(UAC);
    net.uac_sends(&invite("cac5", "", true));
    net.take(UAC);
    let b5 = net.take_one(UAS);
    net.uas_sends(&uas_response(&b5, 180, "Ringing", "b5", "", ""));
    // Caller cancels it; the answered call hangs up: every slot is free again.
    net.uac_sends(
        &invite("cac5", "", false)
            .replacen("INVITE sip", "CANCEL sip", 1)
            .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL"),
    );
    let cancel =
        net.take(UAS).into_iter().find(|m| m.method() == Some(&sip::Method::Cancel)).unwrap();
    net.uas_sends(&uas_response(&cancel, 200, "OK", "", "", ""));
    net.uas_sends(&uas_response(&b5, 487, "Request Terminated", "b5", "", ""));
    net.uac_sends(&uac_request("BYE", &ok1, 2, "", ""));
    let bye = net.take(UAS).into_iter().find(|m| m.method() == Some(&sip::Method::Bye)).unwrap();
    net.uas_sends(&uas_response(&bye, 200, "OK", "", "", ""));
    net.take(UAC);
    assert_eq!(net.engine.policy().counters().rejected_trunk_cac, 1);
    net.assert_idle();
}

#[test]
fn outbound_refusal_fails_over_to_the_next_trunk() {
    let mut net = Net::new(policy_config(&[UAS, UAS2], |p| {
        p.trunks = vec![sbc_policy::TrunkLimits { max_total: Some(1), ..Default::default() }];
    }));
    let (_b, ok) = establish(&mut net, "fo1");
    // Trunk 0 is full: the second call goes to trunk 1 at once.
    net.uac_sends(&invite("fo2", "", true));
    net.take(UAC);
    assert!(net.take(UAS).is_empty());
    let b2 = net.take_one(UAS2);
    net.peer_sends(UAS2, &uas_response(&b2, 480, "Temporarily Unavailable", "x", "", ""));
    net.take(UAS2);
    let r = final_to_uac(&mut net);
    assert_eq!(r.code(), Some(480));
    assert!(r.header(&HeaderName::RetryAfter).is_none(), "not the refusal's Retry-After");
    net.uac_sends(&uac_request("BYE", &ok, 2, "", ""));
    let bye = net.take(UAS).into_iter().find(|m| m.method() == Some(&sip::Method::Bye)).unwrap();
    net.uas_sends(&uas_response(&bye, 200, "OK", "", "", ""));
    net.assert_idle();
}

#[test]
fn inbound_trunk_cac_on_a_forbidden_listener_answers_403() {
    let mut cfg = policy_config(&[UAS], |p| {
        p.trunks = vec![sbc_policy::TrunkLimits { max_inbound: Some(1), ..Default::default() }];
        p.listeners = vec![
            Default::default(),
            sbc_policy::ListenerPolicy {
                reject: sbc_policy::RejectMode::Forbidden,
                ..Default::default()
            },
        ];
    });
    // Calls from the trunk (127.0.0.20/30 on the trunk listener) go back out to it.
    cfg.routes.push(RouteConfig {
        name: "in".into(),
        matcher: RouteMatch { trunk: Some(TrunkId(0)), ..Default::default() },
        trunks: vec![TrunkId(0)],
        ring_timeout: Duration::from_secs(60),
    });
    let mut net = Net::new(cfg);
    let peer = "127.0.0.21:5090";
    net.peer_sends(peer, &invite("in1", "", true));
    assert!(net.take(peer).iter().any(|m| m.code() == Some(100)));
    net.take(UAS);
    net.peer_sends(peer, &invite("in2", "", true));
    let r = net.take(peer).into_iter().find(|m| m.code().is_some_and(|c| c >= 200)).unwrap();
    assert_eq!(r.code(), Some(403));
    assert!(r.header(&HeaderName::RetryAfter).is_none());
}

#[test]
fn emergency_calls_bypass_the_source_call_rate_and_are_counted() {
    let mut net = Net::new(policy_config(&[UAS], |p| {
        p.source_call_rate = Some(sbc_policy::Rate::new(1, Duration::from_secs(10)));
        p.emergency_numbers = vec!["112".into()];
    }));
    net.uac_sends(&invite("r1", "", true));
    net.take(UAC);
    net.take_one(UAS);
    net.uac_sends(&invite("r2", "", true));
    let r = final_to_uac(&mut net);
    assert_eq!(r.code(), Some(503));
    assert_eq!(hdr(&r, HeaderName::RetryAfter), "10");
    net.uac_sends(
        &invite("r3", "", true).replace("sip:100@127.0.0.1:5060", "sip:112@127.0.0.1:5060"),
    );
    net.take(UAC);
    assert_eq!(net.take_one(UAS).method(), Some(&sip::Method::Invite));
    let c = net.engine.policy().counters();
    assert_eq!((c.emergency_calls, c.emergency_active, c.rejected_source_rate), (1, 1, 1));
}

#[test]
fn scanners_unknown_users_and_garbage_lead_to_bans() {
    let mut cfg = policy_config(&[UAS], |p| {
        p.scanner_user_agents = vec!["friendly-scanner".into()];
        let rule =
            |n| Some(sbc_policy::OffenceRule { threshold: n, window: Duration::from_secs(60) });
        p.offences.scanner = rule(1);
        p.offences.unknown_user = rule(3);
        p.offences.malformed = rule(2);
    });
    cfg.routes[0].matcher.prefix = Some("1".into());
    let mut net = Net::new(cfg);
    // A scanner's first OPTIONS gets no answer, nor does anything after it.
    net.uac_sends("OPTIONS sip:127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.10:5061;branch=z9hG4bKs1\nFrom: <sip:s@x>;tag=1\nTo: <sip:127.0.0.1>\nCall-ID: s1\nCSeq: 1 OPTIONS\nUser-Agent: friendly-scanner\nContent-Length: 0\n\n");
    assert!(net.take(UAC).is_empty());
    assert_eq!(net.engine.transaction_count(), 0, "no transaction for a dropped request");
    assert!(net.engine.policy().is_banned(net.now, addr(UAC).ip()));
    // 404s: the third one bans.
    let prober = "127.0.0.30:5061";
    let flow = Flow { listener: ListenerId(0), transport: Transport::Udp, remote: addr(prober) };
    for i in 0..3 {
        let probe = invite(&format!("p{i}"), "", true)
            .replace("sip:100@127.0.0.1:5060", &format!("sip:9{i}@127.0.0.1:5060"))
            .replace("127.0.0.10:5061", prober);
        net.input(flow, &probe);
        let r = net.take(prober).into_iter().find(|m| m.code().is_some_and(|c| c >= 200));
        assert_eq!(r.map(|m| m.code()), Some(Some(404)));
    }
    assert!(net.engine.policy().is_banned(net.now, addr(prober).ip()));
    // Two unparseable datagrams ban a third source.
    let junk = "127.0.0.31:5061";
    let flow = Flow { listener: ListenerId(0), transport: Transport::Udp, remote: addr(junk) };
    for _ in 0..2 {
        net.engine.handle_datagram(net.now, flow, Bytes::from_static(b"INVITE nonsense\r\n\r\n"));
    }
    assert!(net.engine.policy().is_banned(net.now, addr(junk).ip()));
    let c = net.engine.policy().counters();
    assert_eq!((c.offences_scanner, c.offences_unknown_user, c.offences_malformed), (1, 3, 2));
    assert_eq!(c.bans_active, 3);
    // Trunk sources are never banned, whatever they send.
    for _ in 0..5 {
        net.engine.handle_datagram(
            net.now,
            Flow { listener: ListenerId(1), transport: Transport::Udp, remote: addr(UAS) },
            Bytes::from_static(b"garbage\r\n\r\n"),
        );
    }
    assert!(!net.engine.policy().is_banned(net.now, addr(UAS).ip()));
}

// ---- registrations ---------------------------------------------------------------------------

/// Access listener 0 relays REGISTER to trunk 0 (the UAS plays the registrar).
fn relay_config() -> Config {
    let mut cfg = config(&[UAS], Duration::from_secs(60));
    cfg.registrars = vec![RegistrarConfig {
        listener: ListenerId(0),
        mode: RegistrarMode::Relay {
            trunk: TrunkId(0),
            upstream_expires: Duration::from_secs(600),
        },
        client_expires: Duration::from_secs(60),
    }];
    cfg
}

/// alice's REGISTER from behind a NAT: its Contact names a private address, while the SBC sees
/// it come from `UAC`.
fn nat_register(call_id: &str, cseq: u32, extra: &str) -> String {
    register(call_id, cseq, extra)
        .replace("Contact: <sip:alice@127.0.0.10:5061>", "Contact: <sip:alice@10.0.0.5:5062>")
}

fn upstream_auth(n: u32) -> String {
    format!(
        "Authorization: Digest username=\"alice\", realm=\"upstream\", nonce=\"n1\", \
         uri=\"sip:127.0.0.1:5060\", response=\"r{n}\"\n"
    )
}

fn tcp_flow() -> Flow {
    Flow { listener: ListenerId(0), transport: Transport::Tcp, remote: addr(UAC) }
}

fn client_sends(net: &mut Net, tcp: bool, text: &str) {
    match tcp {
        true => net.input(tcp_flow(), &text.replace("SIP/2.0/UDP", "SIP/2.0/TCP")),
        false => net.uac_sends(text),
    }
}

/// The user part of a REGISTER's Contact: the SBC's token.
fn contact_user(m: &Message) -> String {
    m.contact().unwrap().unwrap().uri.user_str().unwrap().to_owned()
}

/// alice registers through the relay: challenged by the upstream registrar, then accepted with
/// 300 s. Returns the SBC's token.
fn relay_register(net: &mut Net, tcp: bool) -> String {
    client_sends(net, tcp, &nat_register("rr1", 1, ""));
    let up1 = net.take_one(UAS);
    assert_eq!(up1.method(), Some(&sip::Method::Register));
    let challenge = "Digest realm=\"upstream\", nonce=\"n1\", qop=\"auth\"";
    net.uas_sends(&uas_response(
        &up1,
        401,
        "Unauthorized",
        "up",
        &format!("WWW-Authenticate: {challenge}\n"),
        "",
    ));
    let ch = final_to_uac(net);
    assert_eq!(ch.code(), Some(401));
    assert_eq!(hdr(&ch, HeaderName::WwwAuthenticate), challenge, "relayed unchanged");
    client_sends(net, tcp, &nat_register("rr1", 2, &upstream_auth(2)));
    let up2 = net.take_one(UAS);
    // One upstream registration dialog per binding: same Call-ID and From tag, next CSeq.
    assert_eq!(hdr(&up2, HeaderName::CallId), hdr(&up1, HeaderName::CallId));
    assert_eq!(hdr(&up2, HeaderName::From), hdr(&up1, HeaderName::From));
    assert_eq!(hdr(&up2, HeaderName::CSeq), "2 REGISTER");
    assert_eq!(hdr(&up2, HeaderName::Authorization), upstream_auth(2)[15..].trim_end());
    let token = contact_user(&up2);
    assert_eq!(token, contact_user(&up1));
    net.uas_sends(&uas_response(
        &up2,
        200,
        "OK",
        "up",
        &format!("Contact: <sip:{token}@127.0.0.2:5070>;expires=300\n"),
        "",
    ));
    let ok = final_to_uac(net);
    assert_eq!(ok.code(), Some(200));
    assert_eq!(hdr(&ok, HeaderName::Contact), "<sip:alice@10.0.0.5:5062>;expires=60");
    assert_eq!(net.engine.bindings().len(), 1);
    token
}

#[test]
fn register_is_relayed_with_the_sbc_contact_and_the_challenge_passes_through() {
    let mut net = Net::new(relay_config());
    net.uac_sends(&nat_register("rr1", 1, ""));
    let up = net.take_one(UAS);
    let text = String::from_utf8_lossy(&up.to_bytes()).into_owned();
    // Topology hiding: nothing of the client's addresses, Call-ID or tag goes upstream.
    for leak in ["10.0.0.5", "127.0.0.10", "rr1", "rtag"] {
        assert!(!text.contains(leak), "upstream REGISTER leaks {leak}:\n{text}");
    }
    assert_eq!(up.request_uri().unwrap().to_string(), "sip:127.0.0.1:5060", "R-URI kept");
    assert_eq!(hdr(&up, HeaderName::To), "<sip:alice@sbc.test>");
    assert!(hdr(&up, HeaderName::From).starts_with("<sip:alice@sbc.test>;tag="));
    assert_eq!(hdr(&up, HeaderName::Expires), "600");
    let token = contact_user(&up);
    assert!(token.starts_with("rg") && token.len() == 34, "{token}");
    assert_eq!(hdr(&up, HeaderName::Contact), format!("<sip:{token}@127.0.0.2:5070>"));
    assert!(hdr(&up, HeaderName::Via).contains("127.0.0.2:5070"));

    let mut net = Net::new(relay_config());
    relay_register(&mut net, false);
    assert_eq!(net.engine.stats().registers_relayed, 2);
    net.assert_idle();
}

#[test]
fn refreshes_are_answered_locally_while_the_upstream_registration_lasts() {
    let mut net = Net::new(relay_config());
    let token = relay_register(&mut net, false);
    // Granted 300 s upstream: refreshes are local while at least 150 s are left.
    let mut upstream = Vec::new();
    for (i, cseq) in (3..=6).enumerate() {
        net.advance(Duration::from_secs(50));
        net.uac_sends(&nat_register("rr1", cseq, &upstream_auth(cseq)));
        upstream.extend(net.take(UAS));
        if i < 3 {
            let ok = final_to_uac(&mut net);
            assert_eq!(hdr(&ok, HeaderName::Contact), "<sip:alice@10.0.0.5:5062>;expires=60");
        }
    }
    assert_eq!(upstream.len(), 1, "one upstream REGISTER for four client refreshes");
    let up = &upstream[0];
    assert_eq!(hdr(up, HeaderName::CSeq), "3 REGISTER");
    assert_eq!(hdr(up, HeaderName::Authorization), upstream_auth(6)[15..].trim_end(), "latest");
    assert_eq!(contact_user(up), token, "the same binding");
    // The registrar challenges the refresh (a new nonce): the client hears it and answers.
    let challenge = "Digest realm=\"upstream\", nonce=\"n2\"";
    net.uas_sends(&uas_response(
        up,
        401,
        "Unauthorized",
        "up",
        &format!("WWW-Authenticate: {challenge}\n"),
        "",
    ));
    let ch = final_to_uac(&mut net);
    assert_eq!((ch.code(), hdr(&ch, HeaderName::WwwAuthenticate)), (Some(401), challenge.into()));
    assert_eq!(net.engine.bindings().len(), 1, "a challenge does not end the binding");
    net.uac_sends(&nat_register("rr1", 7, &upstream_auth(7)));
    let up = net.take_one(UAS);
    assert_eq!(hdr(&up, HeaderName::CSeq), "4 REGISTER");
    assert_eq!(hdr(&up, HeaderName::Authorization), upstream_auth(7)[15..].trim_end());
    net.uas_sends(&uas_response(&up, 200, "OK", "up", "Expires: 300\n", ""));
    assert_eq!(final_to_uac(&mut net).code(), Some(200));
    // Registered afresh: the next refresh is local again.
    net.advance(Duration::from_secs(50));
    net.uac_sends(&nat_register("rr1", 8, &upstream_auth(8)));
    assert_eq!(final_to_uac(&mut net).code(), Some(200));
    assert!(net.take(UAS).is_empty());
    assert_eq!(net.engine.stats().registers_accepted, 4);
    assert_eq!(net.engine.stats().registers_relayed, 4);
}

fn trunk_invite(call_id: &str, ruri: &str) -> String {
    format!(
        "INVITE {ruri} SIP/2.0\n\
Via: SIP/2.0/UDP 127.0.0.20:5080;branch=z9hG4bK-t-{call_id}\n\
Max-Forwards: 70\n\
From: <sip:bob@upstream.example>;tag=ttag\n\
To: <{ruri}>\n\
Call-ID: {call_id}\n\
CSeq: 1 INVITE\n\
Contact: <sip:bob@127.0.0.20:5080>\n\
Content-Type: application/sdp\n\
Content-Length: {}\n\n{SDP}",
        wire_len(SDP)
    )
}

/// A call from the trunk to `ruri` reaches the client at `UAC` (with `client_uri` as
/// Request-URI) and is answered and hung up there.
fn call_reaches_client(net: &mut Net, ruri: &str, client_uri: &str, tcp: bool) {
    net.uas_sends(&trunk_invite("tc1", ruri));
    assert_eq!(net.take_one(UAS).code(), Some(100));
    let inv = net.take_one(UAC);
    assert_eq!(inv.method(), Some(&sip::Method::Invite));
    assert_eq!(inv.request_uri().unwrap().to_string(), client_uri);
    assert!(hdr(&inv, HeaderName::To).starts_with("<sip:alice@sbc.test>"));
    assert!(hdr(&inv, HeaderName::Via).contains("127.0.0.1:5060"));
    let (c, _) = sdp_addr(&inv);
    assert_eq!(c, "127.0.0.1", "media anchored on the access listener");
    client_sends(net, tcp, &uas_response(&inv, 180, "Ringing", "ctag", "", ""));
    assert_eq!(net.take_one(UAS).code(), Some(180));
    client_sends(net, tcp, &uas_response(&inv, 200, "OK", "ctag", "", SDP));
    assert_eq!(net.take_one(UAC).method(), Some(&sip::Method::Ack));
    let ok = net.take_one(UAS);
    assert_eq!(ok.code(), Some(200));
    net.uas_sends(&uac_request("ACK", &ok, 1, "", ""));
    net.uas_sends(&uac_request("BYE", &ok, 2, "", ""));
    assert_eq!(net.take_one(UAS).code(), Some(200));
    let bye = net.take_one(UAC);
    assert_eq!(bye.method(), Some(&sip::Method::Bye));
    client_sends(net, tcp, &uac_response(&bye, 200, "OK"));
}

#[test]
fn invite_to_the_token_reaches_the_client_where_its_register_came_from() {
    let mut net = Net::new(relay_config());
    let token = relay_register(&mut net, false);
    // The NATed client is reached at the address its REGISTER came from, with its own
    // Contact as Request-URI.
    call_reaches_client(
        &mut net,
        &format!("sip:{token}@127.0.0.2:5070"),
        "sip:alice@10.0.0.5:5062",
        false,
    );
    assert_eq!(net.ended(), vec![Disposition::Answered]);
    // Another shard sharing the store reaches the client as well.
    let mut other = Net::new(relay_config());
    other.engine.set_bindings(other.now, Arc::clone(net.engine.bindings()), false);
    other.uas_sends(&trunk_invite("tc2", &format!("sip:{token}@127.0.0.2:5070")));
    assert_eq!(other.take_one(UAC).request_uri().unwrap().to_string(), "sip:alice@10.0.0.5:5062");
    // A token of no binding: 404.
    let unknown = format!("sip:rg{}@127.0.0.2:5070", "0".repeat(32));
    net.uas_sends(&trunk_invite("tc3", &unknown));
    let codes: Vec<u16> = net.take(UAS).iter().filter_map(|m| m.code()).collect();
    assert_eq!(codes, [100, 404]);
    assert!(net.take(UAC).is_empty());
    net.assert_idle();
}

#[test]
fn a_call_spiralling_back_to_a_token_is_not_a_loop() {
    // Client to client through the upstream registrar: the registrar's INVITE to the callee's
    // token still carries the SBC's Via of the caller's leg B.
    let mut net = Net::new(relay_config());
    let token = relay_register(&mut net, false);
    net.uac_sends(&invite("sp1", "", true));
    let b = net.take(UAS).into_iter().find(|m| m.method() == Some(&sip::Method::Invite)).unwrap();
    let sbc_via = hdr(&b, HeaderName::Via);
    assert!(sbc_via.contains("127.0.0.2:5070"), "{sbc_via}");
    let spiral = |ruri: &str, call_id: &str| {
        trunk_invite(call_id, ruri).replacen(
            "Max-Forwards: 70\n",
            &format!("Via: {sbc_via}\nMax-Forwards: 69\n"),
            1,
        )
    };
    let _ = net.take(UAC);
    net.uas_sends(&spiral(&format!("sip:{token}@127.0.0.2:5070"), "sp2"));
    assert_eq!(net.take_one(UAS).code(), Some(100));
    let inv = net.take_one(UAC);
    assert_eq!(inv.method(), Some(&sip::Method::Invite));
    assert_eq!(inv.request_uri().unwrap().to_string(), "sip:alice@10.0.0.5:5062");
    // The same Via on a request to anything else is still a loop.
    net.uas_sends(&spiral("sip:100@127.0.0.2:5070", "sp3"));
    let codes: Vec<u16> = net.take(UAS).iter().filter_map(|m| m.code()).collect();
    assert_eq!(codes.last(), Some(&482), "{codes:?}");
}

#[test]
fn a_dropped_connection_removes_the_binding_and_unregisters_upstream() {
    let mut net = Net::new(relay_config());
    let token = relay_register(&mut net, true);
    call_reaches_client(
        &mut net,
        &format!("sip:{token}@127.0.0.2:5070"),
        "sip:alice@10.0.0.5:5062",
        true,
    );
    net.engine.handle_flow_error(net.now, tcp_flow());
    net.drain();
    let un = net.take_one(UAS);
    assert_eq!(un.method(), Some(&sip::Method::Register));
    assert_eq!(hdr(&un, HeaderName::Expires), "0");
    assert_eq!(contact_user(&un), token);
    assert_eq!(hdr(&un, HeaderName::CSeq), "3 REGISTER");
    assert_eq!(hdr(&un, HeaderName::Authorization), upstream_auth(2)[15..].trim_end());
    assert!(net.engine.bindings().is_empty());
    net.uas_sends(&uas_response(&un, 200, "OK", "up", "", ""));
    // A second shard hearing of the same flow finds nothing left to do.
    net.engine.handle_flow_error(net.now, tcp_flow());
    net.drain();
    assert!(net.take(UAS).is_empty());
    net.uas_sends(&trunk_invite("tc4", &format!("sip:{token}@127.0.0.2:5070")));
    let codes: Vec<u16> = net.take(UAS).iter().filter_map(|m| m.code()).collect();
    assert_eq!(codes, [100, 404]);
}

#[test]
fn unregistration_and_a_silent_client_end_the_upstream_registration() {
    let mut net = Net::new(relay_config());
    let token = relay_register(&mut net, false);
    net.uac_sends(&nat_register("rr1", 3, "").replace("Expires: 600", "Expires: 0"));
    let ok = final_to_uac(&mut net);
    assert_eq!(ok.code(), Some(200));
    assert!(ok.header(&HeaderName::Contact).is_none(), "no binding left");
    let un = net.take_one(UAS);
    assert_eq!((hdr(&un, HeaderName::Expires), contact_user(&un)), ("0".into(), token));
    assert!(net.engine.bindings().is_empty());

    // The sweeping shard unregisters a client that stopped refreshing.
    let mut net = Net::new(relay_config());
    let shared = Arc::clone(net.engine.bindings());
    net.engine.set_bindings(net.now, shared, true);
    let token = relay_register(&mut net, false);
    net.advance(Duration::from_secs(59));
    assert!(net.take(UAS).is_empty());
    net.advance(Duration::from_secs(2));
    // The unregistration, and its retransmissions while the registrar is silent.
    let sent = net.take(UAS);
    assert!(!sent.is_empty());
    for un in &sent {
        assert_eq!((hdr(un, HeaderName::Expires), contact_user(un)), ("0".into(), token.clone()));
        assert_eq!(branch(un), branch(&sent[0]), "one transaction");
    }
    assert!(net.engine.bindings().is_empty());
}

/// `digest_config` with a second user; its realm listener is an implicit local registrar.
fn local_config() -> Config {
    let mut cfg = digest_config();
    cfg.policy.rules.realms[0].users.push(sbc_policy::AuthUser {
        name: "bob".into(),
        credential: sbc_policy::Credential::Password("b0b".into()),
    });
    cfg
}

#[test]
fn local_registrar_binds_its_users_and_calls_reach_them() {
    let mut net = Net::new(local_config());
    net.uac_sends(&register("lr1", 1, ""));
    let challenge = hdr(&final_to_uac(&mut net), HeaderName::WwwAuthenticate);
    let auth = credentials(&challenge, "alice", "s3cret", "REGISTER", "sip:127.0.0.1:5060");
    // alice may not register bob's address.
    let as_bob = register("lr1", 2, &format!("Authorization: {auth}\n"))
        .replace("To: <sip:alice@sbc.test>", "To: <sip:bob@sbc.test>");
    net.uac_sends(&as_bob);
    assert_eq!(final_to_uac(&mut net).code(), Some(403));
    net.uac_sends(&register("lr1", 3, ""));
    let challenge = hdr(&final_to_uac(&mut net), HeaderName::WwwAuthenticate);
    let auth = credentials(&challenge, "alice", "s3cret", "REGISTER", "sip:127.0.0.1:5060");
    net.uac_sends(&register("lr1", 4, &format!("Authorization: {auth}\n")));
    let ok = final_to_uac(&mut net);
    assert_eq!(hdr(&ok, HeaderName::Contact), "<sip:alice@127.0.0.10:5061>;expires=600");
    assert!(net.take(UAS).is_empty(), "no upstream");
    call_reaches_client(&mut net, "sip:alice@127.0.0.2:5070", "sip:alice@127.0.0.10:5061", false);
    // bob is a user without a binding: 480; an unknown user goes to the routes (none: 404).
    for (user, code) in [("bob", 480), ("carol", 404)] {
        net.uas_sends(&trunk_invite(&format!("l{user}"), &format!("sip:{user}@sbc.test")));
        let codes: Vec<u16> = net.take(UAS).iter().filter_map(|m| m.code()).collect();
        assert_eq!(codes, [100, code], "{user}");
    }
    assert!(net.take(UAC).is_empty());
}

/// Chrome's offer (UDP/TLS/RTP/SAVPF, ICE, DTLS actpass, BUNDLE, Opus and G.711).
const CHROME_SDP: &str = include_str!("../../sbc-media/tests/data/sdp/chrome.sdp");

/// An INVITE from a browser on leg A carrying `body`.
fn invite_with_body(call_id: &str, body: &str) -> String {
    let body = body.replace("\r\n", "\n");
    invite(call_id, "", true).replace(SDP, &body).replace(
        &format!("Content-Length: {}", wire_len(SDP)),
        &format!("Content-Length: {}", wire_len(&body)),
    )
}

#[test]
fn webrtc_caller_reaches_the_trunk_as_rtp_and_a_media_failure_ends_the_call() {
    let (mut net, relay) = webrtc_net();
    net.uac_sends(&invite_with_body("browser@client.example", CHROME_SDP));
    assert_eq!(net.take_one(UAC).code(), Some(100));
    let b_invite = net.take_one(UAS);
    let offer = String::from_utf8_lossy(&b_invite.body).into_owned();
    assert!(offer.contains("m=audio ") && offer.contains(" RTP/AVP "), "{offer}");
    for gone in [
        "SAVP",
        "a=ice",
        "a=candidate",
        "a=fingerprint",
        "a=setup",
        "a=mid",
        "a=ssrc",
        "a=msid",
        "a=extmap",
        "BUNDLE",
        "a=rtcp-mux",
    ] {
        assert!(!offer.contains(gone), "{gone} reached the trunk:\n{offer}");
    }
    // Chrome's video line is refused (only the audio is bundled): the trunk answers it port 0.
    assert!(offer.contains("m=video 0 RTP/AVP"), "{offer}");
    let trunk_answer = format!("{SDP}m=video 0 RTP/AVP 96\n");
    net.uas_sends(&uas_response(&b_invite, 200, "OK", "btag", "", &trunk_answer));
    assert_eq!(net.take_one(UAS).method(), Some(&sip::Method::Ack));
    let ok = net.take_one(UAC);
    assert_eq!(ok.code(), Some(200));
    let answer = String::from_utf8_lossy(&ok.body).into_owned();
    let (_, port) = sdp_addr(&ok);
    for line in [
        "m=audio ".to_owned() + &port.to_string() + " UDP/TLS/RTP/SAVPF 0",
        "a=ice-lite".into(),
        "a=setup:passive".into(),
        "a=fingerprint:sha-256 AA:BB:CC".into(),
        format!("a=candidate:1 1 udp 2130706431 127.0.0.1 {port} typ host"),
        "a=group:BUNDLE 0".into(),
        "a=rtcp-mux".into(),
    ] {
        assert!(answer.lines().any(|l| l.starts_with(&line)), "{line} missing:\n{answer}");
    }
    assert!(!answer.ends_with("\r\n\r\n"), "no blank last line");
    net.uac_sends(&uac_request("ACK", &ok, 1, "", ""));
    assert!(net.take(UAS).is_empty());

    // The relay reports the browser's certificate does not match: both legs get a BYE.
    fail_fingerprint(&relay);
    net.advance(Duration::from_secs(1));
    for peer in [UAC, UAS] {
        let bye = net.take_one(peer);
        assert_eq!(bye.method(), Some(&sip::Method::Bye));
        assert_eq!(
            hdr(&bye, HeaderName::Reason),
            "Q.850;cause=47;text=\"DTLS fingerprint mismatch\"",
            "{}",
            summary(&bye)
        );
        net.peer_or_uac_answers(peer, &bye);
    }
    let reason = net.events.iter().find_map(|Event::Call { kind, .. }| match kind {
        CallEventKind::Ended { reason, released_by, .. } => Some((reason.clone(), *released_by)),
        _ => None,
    });
    assert_eq!(reason, Some((Some("DTLS fingerprint mismatch".into()), ReleaseSide::Sbc)));
    assert_eq!(relay.open_pairs(), 0);
    net.assert_idle();
}

/// A net whose caller's listener speaks WebRTC, over a virtual relay that can do DTLS.
fn webrtc_net() -> (Net, Arc<VirtualBackend>) {
    let relay = Arc::new(VirtualBackend::new(40_000..=40_099));
    relay.set_dtls_fingerprint(Some("sha-256 AA:BB:CC".into()));
    let mut cfg = config(&[UAS], Duration::from_secs(60));
    cfg.listeners[0].media.profile = Some(sbc_media::MediaProfile::Webrtc);
    (Net::with_relay(cfg, Some(relay.clone())), relay)
}

/// The relay reports that the browser's certificate does not match its SDP fingerprint.
fn fail_fingerprint(relay: &VirtualBackend) {
    use sbc_media::backend::{MediaFailure, PairStats};
    let failed = PairStats {
        failure: Some(MediaFailure::FingerprintMismatch(LegSide::A)),
        ..PairStats::default()
    };
    assert!(relay.set_stats(relay.pair_ids()[0], failed));
}

/// A browser (`user`) calls; the trunk answers with early media in a 183, which the browser
/// gets as the SBC's DTLS answer. Returns the trunk's INVITE and its answer.
fn webrtc_early_media(net: &mut Net, user: &str) -> (Message, String) {
    net.uac_sends(&invite_with_body(&format!("{user}@client.example"), CHROME_SDP));
    assert_eq!(net.take_one(UAC).code(), Some(100));
    let b_invite = net.take_one(UAS);
    let trunk_answer = format!("{SDP}m=video 0 RTP/AVP 96\n");
    net.uas_sends(&uas_response(&b_invite, 183, "Session Progress", "btag", "", &trunk_answer));
    let progress = net.take_one(UAC);
    assert_eq!(progress.code(), Some(183));
    assert!(String::from_utf8_lossy(&progress.body).contains("a=setup:passive"));
    (b_invite, trunk_answer)
}

#[test]
fn a_media_failure_during_early_media_cancels_the_callee_and_refuses_the_caller() {
    let (mut net, relay) = webrtc_net();
    let (b_invite, _) = webrtc_early_media(&mut net, "early");

    // While it rings, nothing fails: nothing happens.
    net.advance(Duration::from_secs(3));
    assert!(net.take(UAC).is_empty() && net.take(UAS).is_empty());
    // The browser's certificate does not match: the callee is cancelled, the caller refused
    // with the failure as the Reason, before anyone answered.
    fail_fingerprint(&relay);
    net.advance(Duration::from_secs(1));
    let refused = net.take_one(UAC);
    assert_eq!(refused.code(), Some(488), "{}", summary(&refused));
    assert_eq!(
        hdr(&refused, HeaderName::Reason),
        "Q.850;cause=47;text=\"DTLS fingerprint mismatch\""
    );
    assert_cancelled_attempt_failed(
        &mut net,
        &relay,
        &b_invite,
        &refused,
        "DTLS fingerprint mismatch",
    );
}

/// The SBC cancelled leg B (`b_invite`) and refused leg A's INVITE (`refused`): the callee
/// confirms the CANCEL and ends its INVITE with 487, the caller ACKs; one record, failed, with
/// `reason`, and nothing left.
fn assert_cancelled_attempt_failed(
    net: &mut Net,
    relay: &VirtualBackend,
    b_invite: &Message,
    refused: &Message,
    reason: &str,
) {
    let cancel = net.take_one(UAS);
    assert_eq!(cancel.method(), Some(&sip::Method::Cancel));
    net.uas_sends(&uas_response(&cancel, 200, "OK", "", "", ""));
    net.uas_sends(&uas_response(b_invite, 487, "Request Terminated", "btag", "", ""));
    net.uac_sends(&uac_request("ACK", refused, 1, "", ""));
    assert_eq!(net.ended(), vec![Disposition::Failed]);
    let ended = net.events.iter().find_map(|Event::Call { kind, .. }| match kind {
        CallEventKind::Ended { reason, .. } => reason.clone(),
        _ => None,
    });
    assert_eq!(ended.as_deref(), Some(reason));
    assert_eq!(relay.open_pairs(), 0);
    net.assert_idle();
}

#[test]
fn early_media_that_works_is_watched_once_into_the_answered_call() {
    let (mut net, relay) = webrtc_net();
    let (b_invite, trunk_answer) = webrtc_early_media(&mut net, "early2");
    net.advance(Duration::from_secs(2));
    net.uas_sends(&uas_response(&b_invite, 200, "OK", "btag", "", &trunk_answer));
    assert_eq!(net.take_one(UAS).method(), Some(&sip::Method::Ack));
    let ok = net.take_one(UAC);
    assert_eq!(ok.code(), Some(200));
    net.uac_sends(&uac_request("ACK", &ok, 1, "", ""));
    // The checks armed by the early media go on after the answer (the 2xx arms no second
    // chain): a failure now ends the answered call with BYEs.
    fail_fingerprint(&relay);
    net.advance(Duration::from_secs(1));
    for peer in [UAC, UAS] {
        let bye = net.take_one(peer);
        assert_eq!(bye.method(), Some(&sip::Method::Bye));
        net.peer_or_uac_answers(peer, &bye);
    }
    assert_eq!(net.ended(), vec![Disposition::Answered]);
    net.assert_idle();
}

#[test]
fn webrtc_listener_without_dtls_in_the_relay_refuses_with_488() {
    use sbc_media::MediaProfile;

    // The relay cannot do DTLS (no fingerprint): a browser's offer cannot be terminated.
    let relay = Arc::new(VirtualBackend::new(40_000..=40_099));
    let mut cfg = config(&[UAS], Duration::from_secs(60));
    cfg.listeners[0].media.profile = Some(MediaProfile::Webrtc);
    let mut net = Net::with_relay(cfg, Some(relay.clone()));
    net.uac_sends(&invite_with_body("nodtls@client.example", CHROME_SDP));
    let codes: Vec<Option<u16>> = net.take(UAC).iter().map(Message::code).collect();
    assert!(codes.contains(&Some(488)), "{codes:?}");
    assert!(net.take(UAS).is_empty(), "nothing reached the trunk");
    assert_eq!(relay.open_pairs(), 0);
}

const SDP_TE: &str = "v=0\no=alice 1 1 IN IP4 127.0.0.10\ns=-\nc=IN IP4 127.0.0.10\nt=0 0\n\
m=audio 6000 RTP/AVP 0 101\na=rtpmap:101 telephone-event/8000\na=fmtp:101 0-15\n";

/// An in-dialog request from the UAS with a body of type `ct`.
fn uas_request_with(method: &str, b_invite: &Message, cseq: u32, ct: &str, body: &str) -> String {
    uas_request(method, b_invite, "btag", cseq, body)
        .replace("Content-Type: application/sdp", &format!("Content-Type: {ct}"))
}

#[test]
fn dtmf_info_trunk_interworks_with_rfc4733_both_ways() {
    use sbc_media::dtmf::{DtmfEvent, DtmfMode};
    let relay = Arc::new(VirtualBackend::new(40_000..=40_099));
    let mut cfg = config(&[UAS], Duration::from_secs(60));
    cfg.trunks[0].dtmf = DtmfMode::Info;
    let mut net = Net::with_relay(cfg, Some(relay.clone()));
    // The caller (RFC 4733) offers telephone-event; the INFO trunk is offered none.
    let invite = invite("dtmf@client.example", "", true).replace(
        &format!("Content-Length: {}\r\n\r\n{SDP}", wire_len(SDP)).replace("\r\n", "\n"),
        &format!("Content-Length: {}\n\n{SDP_TE}", wire_len(SDP_TE)),
    );
    assert!(invite.contains("telephone-event"));
    net.uac_sends(&invite);
    net.take(UAC);
    let b_invite = net.take_one(UAS);
    let offer = String::from_utf8_lossy(&b_invite.body).into_owned();
    assert!(offer.contains("m=audio") && !offer.contains("telephone-event"), "{offer}");
    net.uas_sends(&uas_response(&b_invite, 200, "OK", "btag", "", SDP));
    net.take(UAS);
    let ok = net.take_one(UAC);
    let answer = String::from_utf8_lossy(&ok.body).into_owned();
    assert!(answer.contains("a=rtpmap:101 telephone-event/8000"), "the caller keeps its events");
    net.uac_sends(&uac_request("ACK", &ok, 1, "", ""));
    let pair = relay.pair_ids()[0];
    assert!(relay.remote(pair, LegSide::A).unwrap().telephone_events.is_some());

    // INFO from the trunk: answered by the SBC, played toward the caller, not relayed.
    let ct = "application/dtmf-relay";
    net.uas_sends(&uas_request_with("INFO", &b_invite, 2, ct, "Signal=5\nDuration=200\n"));
    assert_eq!(net.take_one(UAS).code(), Some(200));
    assert!(net.take(UAC).is_empty(), "a DTMF INFO is not relayed");
    let five = DtmfEvent { event: 5, duration_ms: 200 };
    assert_eq!(relay.sent_dtmf(pair), vec![(LegSide::A, five)]);
    net.uas_sends(&uas_request_with("INFO", &b_invite, 3, "application/dtmf", "#"));
    assert_eq!(net.take_one(UAS).code(), Some(200));
    assert_eq!(relay.sent_dtmf(pair)[1], (LegSide::A, DtmfEvent { event: 11, duration_ms: 250 }));
    // A malformed body is refused; another body type is relayed as before.
    net.uas_sends(&uas_request_with("INFO", &b_invite, 4, ct, "Signal=X\n"));
    assert_eq!(net.take_one(UAS).code(), Some(400));
    net.uas_sends(&uas_request_with("INFO", &b_invite, 5, "application/xml", "<x/>\n"));
    let relayed = net.take_one(UAC);
    assert_eq!(relayed.method(), Some(&sip::Method::Info));
    net.uac_sends(&uac_response(&relayed, 200, "OK"));
    assert_eq!(net.take_one(UAS).code(), Some(200));
    assert_eq!(relay.sent_dtmf(pair).len(), 2);

    // A key press detected in the caller's RTP becomes one INFO on the trunk's dialog.
    relay.detect_dtmf(pair, LegSide::A, DtmfEvent { event: 1, duration_ms: 120 });
    net.advance(Duration::from_millis(60));
    let info = net.take_one(UAS);
    assert_eq!(info.method(), Some(&sip::Method::Info));
    assert_eq!(info.call_id(), b_invite.call_id(), "in leg B's dialog");
    assert_eq!(hdr(&info, HeaderName::ContentType), "application/dtmf-relay");
    assert_eq!(&info.body[..], b"Signal=1\r\nDuration=120\r\n");
    assert!(net.take(UAC).is_empty());
    // The trunk refuses it: logged, the call goes on.
    net.uas_sends(&uas_response(&info, 415, "Unsupported Media Type", "", "", ""));
    relay.detect_dtmf(pair, LegSide::A, DtmfEvent { event: 16, duration_ms: 100 });
    net.advance(Duration::from_secs(2));
    assert!(net.take(UAC).is_empty() && net.take(UAS).is_empty(), "flash is no digit; no BYE");
    relay.detect_dtmf(pair, LegSide::A, DtmfEvent { event: 14, duration_ms: 100 });
    net.advance(Duration::from_millis(60));
    let second = net.take_one(UAS);
    assert_eq!(&second.body[..], b"Signal=C\r\nDuration=100\r\n");
    assert!(
        second.cseq().unwrap().seq > info.cseq().unwrap().seq,
        "the SBC's own CSeq space on leg B"
    );
    net.uas_sends(&uas_response(&second, 200, "OK", "", "", ""));

    // An INFO from the caller (the RFC 4733 side) is relayed as before.
    net.uac_sends(&uac_request("INFO", &ok, 2, "", "").replace(
        "Content-Length: 0",
        "Content-Type: application/dtmf-relay\nContent-Length: 10\n\nSignal=5\n",
    ));
    let relayed = net.take_one(UAS);
    assert_eq!(relayed.method(), Some(&sip::Method::Info));
    net.uas_sends(&uas_response(&relayed, 200, "OK", "", "", ""));
    assert_eq!(net.take_one(UAC).code(), Some(200));
    assert_eq!(relay.sent_dtmf(pair).len(), 2);

    let stats = net.engine.stats();
    assert_eq!(stats.dtmf_interworked, 4);
    net.uac_sends(&uac_request("BYE", &ok, 3, "", ""));
    let bye = net.take_one(UAS);
    net.uas_sends(&uas_response(&bye, 200, "OK", "", "", ""));
    net.take(UAC);
    net.assert_idle();
}

/// Calls through a socket-free relay: (net, relay, leg B INVITE, leg A 200, the call's pair).
fn relayed_call(
    call_id: &str,
) -> (Net, Arc<VirtualBackend>, Message, Message, sbc_media::backend::PairId) {
    let relay = Arc::new(VirtualBackend::new(40_000..=40_099));
    let mut net = Net::with_relay(config(&[UAS], Duration::from_secs(60)), Some(relay.clone()));
    let (b_invite, ok) = establish(&mut net, call_id);
    let pair = relay.pair_ids()[0];
    (net, relay, b_invite, ok, pair)
}

/// Both sides of `pair` as the relay has them.
type Sides = (Option<sbc_media::backend::RemoteSpec>, Option<sbc_media::backend::RemoteSpec>);

fn sides(relay: &VirtualBackend, pair: sbc_media::backend::PairId) -> Sides {
    (relay.remote(pair, LegSide::A), relay.remote(pair, LegSide::B))
}

/// The caller re-INVITEs (or UPDATEs) with its media moved to 127.0.0.11; returns the relayed
/// request on leg B.
fn caller_moves(net: &mut Net, ok: &Message, method: &str, cseq: u32) -> Message {
    let moved = SDP.replace("127.0.0.10", "127.0.0.11");
    net.take(UAC);
    net.take(UAS);
    net.uac_sends(&uac_request(method, ok, cseq, "Contact: <sip:alice@127.0.0.10:5061>\n", &moved));
    let relayed = net.take(UAS).into_iter().find(|m| m.method().is_some());
    let relayed = relayed
        .unwrap_or_else(|| panic!("{:?}", net.take(UAC).iter().map(summary).collect::<Vec<_>>()));
    assert_eq!(relayed.method().map(|m| m.to_string()), Some(method.to_owned()));
    relayed
}

fn hang_up(net: &mut Net, ok: &Message, cseq: u32) {
    net.take(UAC);
    net.take(UAS);
    net.uac_sends(&uac_request("BYE", ok, cseq, "", ""));
    let bye = net.take(UAS).into_iter().find(|m| m.method() == Some(&sip::Method::Bye)).unwrap();
    net.uas_sends(&uas_response(&bye, 200, "OK", "", "", ""));
    net.assert_idle();
}

#[test]
fn a_refused_reinvite_leaves_the_media_as_it_was() {
    let (mut net, relay, _b_invite, ok, pair) = relayed_call("refused@client.example");
    let before = sides(&relay, pair);
    let re_b = caller_moves(&mut net, &ok, "INVITE", 2);
    // The relay follows the offerer at once...
    assert_eq!(relay.remote(pair, LegSide::A).unwrap().rtp, Some(addr("127.0.0.11:6000")));
    // ...and goes back when the callee refuses (RFC 3264 §8): the caller keeps the old session.
    net.uas_sends(&uas_response(&re_b, 488, "Not Acceptable Here", "", "", ""));
    let codes: Vec<u16> = net.take(UAC).iter().filter_map(Message::code).collect();
    assert!(codes.contains(&488), "{codes:?}");
    assert_eq!(sides(&relay, pair), before);
    assert_eq!(relay.restore_count(pair, LegSide::A), 1);

    // An UPDATE with an offer, refused by the callee's own glare (491): the same.
    let update = caller_moves(&mut net, &ok, "UPDATE", 3);
    net.uas_sends(&uas_response(&update, 491, "Request Pending", "", "", ""));
    assert_eq!(sides(&relay, pair), before);
    assert_eq!(relay.restore_count(pair, LegSide::A), 2);

    // An offerless re-INVITE refused: no offer was made, nothing to undo.
    net.uac_sends(&uac_request("INVITE", &ok, 4, "Contact: <sip:alice@127.0.0.10:5061>\n", ""));
    let re_b = net.take(UAS).into_iter().find(|m| m.method().is_some()).unwrap();
    net.uas_sends(&uas_response(&re_b, 488, "Not Acceptable Here", "", "", ""));
    assert_eq!(relay.restore_count(pair, LegSide::A), 2);
    assert_eq!(sides(&relay, pair), before);
    hang_up(&mut net, &ok, 5);
}

#[test]
fn a_reinvite_that_times_out_or_is_cancelled_leaves_the_media_as_it_was() {
    let (mut net, relay, _b_invite, ok, pair) = relayed_call("timeout@client.example");
    let before = sides(&relay, pair);
    // The callee never answers: the SBC's own 408 (Timer B) refuses the offer.
    caller_moves(&mut net, &ok, "INVITE", 2);
    assert_ne!(sides(&relay, pair), before);
    net.advance(Duration::from_secs(40));
    let codes: Vec<u16> = net.take(UAC).iter().filter_map(Message::code).collect();
    assert!(codes.contains(&408), "{codes:?}");
    assert_eq!(sides(&relay, pair), before);

    // The re-INVITE is over: the next one is relayed, not answered 491 as glare. The caller
    // cancels it: the callee's 487 refuses the offer.
    let re_b = caller_moves(&mut net, &ok, "INVITE", 3);
    assert_ne!(sides(&relay, pair), before);
    // (RFC 3261 §9.1: the SBC cancels its copy only once a provisional response came.)
    net.uas_sends(&uas_response(&re_b, 100, "Trying", "", "", ""));
    net.uac_sends(
        &uac_request("CANCEL", &ok, 3, "", "").replace("z9hG4bK-aCANCEL3", "z9hG4bK-aINVITE3"),
    );
    let cancel = net.take(UAS).into_iter().find(|m| m.method() == Some(&sip::Method::Cancel));
    net.uas_sends(&uas_response(&cancel.unwrap(), 200, "OK", "", "", ""));
    assert_ne!(sides(&relay, pair), before, "only the final response decides");
    net.uas_sends(&uas_response(&re_b, 487, "Request Terminated", "", "", ""));
    let codes: Vec<u16> = net.take(UAC).iter().filter_map(Message::code).collect();
    assert!(codes.contains(&487), "{codes:?}");
    assert_eq!(sides(&relay, pair), before);
    assert_eq!(relay.restore_count(pair, LegSide::A), 2);
    hang_up(&mut net, &ok, 4);
}

#[test]
fn glare_refused_by_the_sbc_keeps_the_pending_offer() {
    let (mut net, relay, b_invite, ok, pair) = relayed_call("glare@client.example");
    let re_b = caller_moves(&mut net, &ok, "INVITE", 2);
    let moved = sides(&relay, pair);
    // The callee's re-INVITE crosses ours: the SBC answers it 491 before the plane sees it.
    let theirs = SDP.replace("127.0.0.10", "127.0.0.30");
    net.uas_sends(&uas_request("INVITE", &b_invite, "btag", 1, &theirs));
    let codes: Vec<u16> = net.take(UAS).iter().filter_map(Message::code).collect();
    assert!(codes.contains(&491), "{codes:?}");
    assert_eq!(sides(&relay, pair), moved, "the caller's offer stands");
    assert_eq!(relay.restore_count(pair, LegSide::A) + relay.restore_count(pair, LegSide::B), 0);
    // And is accepted.
    net.uas_sends(&uas_response(&re_b, 200, "OK", "", "", SDP));
    assert!(net.take(UAC).iter().any(|m| m.code() == Some(200)));
    assert_eq!(relay.remote(pair, LegSide::A).unwrap().rtp, Some(addr("127.0.0.11:6000")));
    net.uac_sends(&uac_request("ACK", &ok, 2, "", ""));
    hang_up(&mut net, &ok, 3);
}

#[test]
fn a_refused_initial_offer_ends_the_call_and_frees_its_ports() {
    let relay = Arc::new(VirtualBackend::new(40_000..=40_099));
    let free = relay.free_ports();
    let mut net =
        Net::with_relay(config(&[UAS, UAS2], Duration::from_secs(60)), Some(relay.clone()));
    net.uac_sends(&invite("refused-initial@client.example", "", true));
    net.take(UAC);
    let first = net.take_one(UAS);
    assert_eq!(relay.open_pairs(), 1);
    // The first target fails (failover keeps the pair), the second refuses the offer.
    net.uas_sends(&uas_response(&first, 503, "Service Unavailable", "btag", "", ""));
    let second = net.take(UAS2).into_iter().find(|m| m.method().is_some()).unwrap();
    assert_eq!(relay.open_pairs(), 1);
    net.peer_sends(UAS2, &uas_response(&second, 488, "Not Acceptable Here", "btag2", "", ""));
    let codes: Vec<u16> = net.take(UAC).iter().filter_map(Message::code).collect();
    assert!(codes.contains(&488), "{codes:?}");
    assert_eq!((relay.open_pairs(), relay.free_ports()), (0, free));
    net.assert_idle();
}

/// An answer the plane refuses: the caller offered PCMU only, the callee answers PCMA.
fn unoffered_codec() -> String {
    SDP.replace("RTP/AVP 0", "RTP/AVP 8")
}

const BAD_2XX_REASON: &str = "SIP;cause=488;text=\"bad SDP answer\"";

/// The callee's 2xx to `relayed` (the caller's request as relayed on leg B) carried SDP the
/// plane refused: the callee gets the ACK of a re-INVITE's 2xx and a BYE, the caller a 488 to
/// its request (no 2xx, none of the callee's SDP) and a BYE, both with the Reason; one record,
/// failed, released by the SBC, and nothing left.
fn assert_bad_2xx_ends_the_call(net: &mut Net, relay: &VirtualBackend, relayed: &Message) {
    let cseq = relayed.cseq().unwrap();
    let is_invite = cseq.method == sip::Method::Invite;
    let mut to_uas = net.take(UAS);
    let expected = if is_invite { vec!["ACK", "BYE"] } else { vec!["BYE"] };
    assert_eq!(to_uas.iter().map(summary).collect::<Vec<_>>(), expected);
    let callee_bye = to_uas.pop().unwrap();
    if let Some(ack) = to_uas.pop() {
        assert_eq!(ack.cseq().unwrap().seq, cseq.seq, "the ACK is for the relayed re-INVITE");
        assert!(ack.body.is_empty(), "the SBC has no answer to give");
    }
    let to_uac = net.take(UAC);
    assert_eq!(
        to_uac.iter().map(summary).collect::<Vec<_>>(),
        vec![format!("488 {}", cseq.method), "BYE".to_owned()]
    );
    let (refusal, caller_bye) = (&to_uac[0], &to_uac[1]);
    assert_eq!(hdr(refusal, HeaderName::Reason), BAD_2XX_REASON);
    assert!(hdr(refusal, HeaderName::Warning).starts_with("399 "), "{refusal:?}");
    assert!(refusal.body.is_empty(), "none of the callee's SDP reaches the caller");
    assert_eq!(hdr(caller_bye, HeaderName::Reason), BAD_2XX_REASON);
    assert_eq!(hdr(&callee_bye, HeaderName::Reason), BAD_2XX_REASON);
    net.uac_sends(&uac_response(caller_bye, 200, "OK"));
    net.uas_sends(&uas_response(&callee_bye, 200, "OK", "", "", ""));
    // The caller ACKs the 488 to its re-INVITE (hop by hop: the INVITE's branch).
    if is_invite {
        let ack = uac_request("ACK", refusal, refusal.cseq().unwrap().seq, "", "");
        net.uac_sends(&ack.replace("z9hG4bK-aACK", "z9hG4bK-aINVITE"));
    }
    assert_eq!(net.ended(), vec![Disposition::Failed]);
    let ended = net.events.iter().find_map(|Event::Call { kind, .. }| match kind {
        CallEventKind::Ended { reason, released_by, status, .. } => {
            Some((reason.clone(), *released_by, *status))
        }
        _ => None,
    });
    assert_eq!(ended, Some((Some("bad SDP answer".into()), ReleaseSide::Sbc, 488)));
    assert_eq!(relay.open_pairs(), 0);
    net.assert_idle();
}

#[test]
fn a_reinvite_answered_with_sdp_the_plane_refuses_ends_the_call() {
    let (mut net, relay, _b_invite, ok, _pair) = relayed_call("bad-answer@client.example");
    // An answer the plane takes: the caller gets the 2xx with the SBC's SDP, not the callee's.
    let contact = "Contact: <sip:alice@127.0.0.10:5061>\n";
    net.uac_sends(&uac_request("INVITE", &ok, 2, contact, SDP));
    let re_b = net.take(UAS).into_iter().find(|m| m.method().is_some()).unwrap();
    net.take(UAC);
    net.uas_sends(&uas_response(&re_b, 200, "OK", "", "", SDP));
    let ok2 = net.take_one(UAC);
    assert_eq!(ok2.code(), Some(200));
    let (a_addr, a_port) = sdp_addr(&ok2);
    assert_eq!(a_addr, "127.0.0.1");
    assert!((40_000..=40_099).contains(&a_port), "{a_port}");
    net.uac_sends(&uac_request("ACK", &ok, 2, "", ""));
    assert_eq!(net.take_one(UAS).method(), Some(&sip::Method::Ack));

    // The next one is answered with a codec the caller never offered.
    let re_b = caller_moves(&mut net, &ok, "INVITE", 3);
    assert_eq!(net.take_one(UAC).code(), Some(100));
    net.uas_sends(&uas_response(&re_b, 200, "OK", "", "", &unoffered_codec()));
    assert_bad_2xx_ends_the_call(&mut net, &relay, &re_b);
}

#[test]
fn an_update_answered_with_sdp_the_plane_refuses_ends_the_call() {
    let (mut net, relay, _b_invite, ok, _pair) = relayed_call("bad-update@client.example");
    let update = caller_moves(&mut net, &ok, "UPDATE", 2);
    net.uas_sends(&uas_response(&update, 200, "OK", "", "", &unoffered_codec()));
    assert_bad_2xx_ends_the_call(&mut net, &relay, &update);
}

#[test]
fn an_offerless_reinvite_whose_2xx_offer_the_plane_refuses_ends_the_call() {
    let (mut net, relay, _b_invite, ok, _pair) = relayed_call("bad-offer@client.example");
    net.take(UAC);
    net.take(UAS);
    net.uac_sends(&uac_request("INVITE", &ok, 2, "Contact: <sip:alice@127.0.0.10:5061>\n", ""));
    let re_b = net.take(UAS).into_iter().find(|m| m.method().is_some()).unwrap();
    assert!(re_b.body.is_empty());
    assert_eq!(net.take_one(UAC).code(), Some(100));
    let garbage = SDP.replace("m=audio 6000", "m=audio 60x0");
    net.uas_sends(&uas_response(&re_b, 200, "OK", "", "", &garbage));
    assert_bad_2xx_ends_the_call(&mut net, &relay, &re_b);
}

/// `sdp` wrapped in a multipart/mixed body (as SIP-T or SIPREC peers send), and its Content-Type.
fn multipart(sdp: &str) -> (String, &'static str) {
    let body = format!(
        "--b1\r\nContent-Type: application/sdp\r\n\r\n{sdp}\r\n--b1\r\n\
         Content-Type: application/isup\r\n\r\nisup\r\n--b1--\r\n"
    );
    (body, "Content-Type: multipart/mixed;boundary=b1\n")
}

#[test]
fn a_reinvite_answered_with_multipart_ends_the_call_without_relaying_it() {
    let (mut net, relay, _b_invite, ok, _pair) = relayed_call("multipart-2xx@client.example");
    let re_b = caller_moves(&mut net, &ok, "INVITE", 2);
    assert_eq!(net.take_one(UAC).code(), Some(100));
    // The callee's SDP (its own address, 127.0.0.20) inside a multipart body.
    let (body, ct) = multipart(&SDP.replace("127.0.0.10", "127.0.0.20"));
    let ok2 = uas_response(&re_b, 200, "OK", "", "", &body)
        .replace("Content-Type: application/sdp\n", ct);
    net.uas_sends(&ok2);
    assert_bad_2xx_ends_the_call(&mut net, &relay, &re_b);
}

#[test]
fn an_in_dialog_offer_in_a_multipart_body_is_refused_415_and_not_relayed() {
    let (mut net, _relay, _b_invite, ok, _pair) = relayed_call("multipart-offer@client.example");
    net.take(UAC);
    net.take(UAS);
    let (body, ct) = multipart(&SDP.replace("127.0.0.10", "127.0.0.11"));
    for (method, cseq) in [("INVITE", 2), ("UPDATE", 3)] {
        let req = uac_request(method, &ok, cseq, "Contact: <sip:alice@127.0.0.10:5061>\n", &body)
            .replace("Content-Type: application/sdp\n", ct);
        net.uac_sends(&req);
        let refusal = net.take(UAC).into_iter().find(|m| m.code().is_some_and(|c| c >= 200));
        let refusal = refusal.expect("a final response");
        assert_eq!(refusal.code(), Some(415), "{method}");
        assert_eq!(hdr(&refusal, HeaderName::Accept), "application/sdp");
        assert!(net.take(UAS).is_empty(), "nothing of the {method} reaches the callee");
        if method == "INVITE" {
            let ack = uac_request("ACK", &refusal, cseq, "", "");
            net.uac_sends(&ack.replace("z9hG4bK-aACK", "z9hG4bK-aINVITE"));
        }
    }
    // The call goes on.
    hang_up(&mut net, &ok, 4);
}

#[test]
fn an_early_update_answered_with_sdp_the_plane_refuses_ends_the_attempt() {
    let relay = Arc::new(VirtualBackend::new(40_000..=40_099));
    let mut net = Net::with_relay(config(&[UAS], Duration::from_secs(60)), Some(relay.clone()));
    net.uac_sends(&invite("bad-early@client.example", "", true));
    net.take(UAC);
    let b_invite = net.take_one(UAS);
    net.uas_sends(&uas_response(&b_invite, 183, "Session Progress", "btag", "", SDP));
    let progress = net.take_one(UAC);
    assert_eq!(progress.code(), Some(183));
    // While it rings, the caller moves its media (RFC 3311) and the callee answers PCMA.
    let moved = SDP.replace("127.0.0.10", "127.0.0.11");
    let contact = "Contact: <sip:alice@127.0.0.10:5061>\n";
    net.uac_sends(&uac_request("UPDATE", &progress, 2, contact, &moved));
    let update = net.take_one(UAS);
    assert_eq!(update.method(), Some(&sip::Method::Update));
    net.uas_sends(&uas_response(&update, 200, "OK", "", "", &unoffered_codec()));
    // The caller's UPDATE and INVITE are refused, the callee's INVITE cancelled.
    let to_uac = net.take(UAC);
    assert_eq!(to_uac.iter().map(summary).collect::<Vec<_>>(), ["488 UPDATE", "488 INVITE"]);
    for refusal in &to_uac {
        assert_eq!(hdr(refusal, HeaderName::Reason), BAD_2XX_REASON);
        assert!(refusal.body.is_empty());
    }
    assert_cancelled_attempt_failed(&mut net, &relay, &b_invite, &to_uac[1], "bad SDP answer");
}

#[test]
fn a_callee_reinvite_answered_with_sdp_the_plane_refuses_ends_the_call() {
    let (mut net, relay, b_invite, _ok, _pair) = relayed_call("bad-callee@client.example");
    net.take(UAC);
    net.uas_sends(&uas_request("INVITE", &b_invite, "btag", 1, SDP));
    let re_a = net.take(UAC).into_iter().find(|m| m.method().is_some()).unwrap();
    net.take(UAS);
    // The caller answers with a codec the callee never offered.
    let body = unoffered_codec();
    let answer = uac_response(&re_a, 200, "OK").replace(
        "Content-Length: 0\n",
        &format!(
            "Contact: <sip:alice@127.0.0.10:5061>\nContent-Type: application/sdp\n\
             Content-Length: {}\n\n{body}",
            wire_len(&body)
        ),
    );
    net.uac_sends(answer.strip_suffix('\n').unwrap());
    let to_uac = net.take(UAC);
    assert_eq!(to_uac.iter().map(summary).collect::<Vec<_>>(), ["ACK", "BYE"]);
    assert_eq!(to_uac[0].cseq().unwrap().seq, re_a.cseq().unwrap().seq);
    assert!(to_uac[0].body.is_empty());
    let to_uas = net.take(UAS);
    assert_eq!(to_uas.iter().map(summary).collect::<Vec<_>>(), ["488 INVITE", "BYE"]);
    assert!(to_uas[0].body.is_empty(), "none of the caller's SDP reaches the callee");
    for m in [&to_uas[0], &to_uas[1], &to_uac[1]] {
        assert_eq!(hdr(m, HeaderName::Reason), BAD_2XX_REASON, "{}", summary(m));
    }
    net.uac_sends(&uac_response(&to_uac[1], 200, "OK"));
    net.uas_sends(&uas_response(&to_uas[1], 200, "OK", "", "", ""));
    let ack = uas_request("ACK", &b_invite, "btag", 1, "");
    net.uas_sends(&ack.replace("z9hG4bK-bACK1", "z9hG4bK-bINVITE1"));
    assert_eq!(net.ended(), vec![Disposition::Failed]);
    assert_eq!(relay.open_pairs(), 0);
    net.assert_idle();
}
