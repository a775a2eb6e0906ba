//! Transaction layer tests on a fake clock: every timer at its exact instant, matching, CANCEL,
//! merged requests, and the absence of leaks. Messages are real SIP text run through the parser.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::config::{ListenerId, Transport};
use crate::sip::{self, HeaderName};

const SENT_BY: &str = "203.0.113.1:5060";

fn flow(transport: Transport) -> Flow {
    Flow { listener: ListenerId(0), transport, remote: "192.0.2.10:5060".parse().unwrap() }
}

fn udp() -> Flow {
    flow(Transport::Udp)
}

fn tcp() -> Flow {
    flow(Transport::Tcp)
}

fn layer() -> TransactionLayer {
    TransactionLayer::new(TimerConfig::default(), 3, 7)
}

fn ms(t0: Instant, n: u64) -> Instant {
    t0 + Duration::from_millis(n)
}

/// Parses SIP text written with `\n` line ends.
fn sip(text: &str) -> Message {
    sip::parse(Bytes::from(text.replace('\n', "\r\n"))).unwrap()
}

fn parse(t: &Transmit) -> Message {
    sip::parse(t.data.clone()).unwrap()
}

fn code(t: &Transmit) -> u16 {
    parse(t).code().unwrap()
}

fn method(t: &Transmit) -> Method {
    parse(t).method().unwrap().clone()
}

/// A request as the B2BUA hands it to `send_request`: everything but our Via.
fn outgoing(method: &str) -> Message {
    let mut m = sip(&format!(
        "{method} sip:bob@192.0.2.10 SIP/2.0\n\
         Via: SIP/2.0/UDP removed.invalid;branch=z9hG4bKremoved\n\
         Max-Forwards: 70\n\
         Route: <sip:p1.example;lr>\n\
         Route: <sip:p2.example;lr>\n\
         From: <sip:alice@sbc.example>;tag=a1\n\
         To: <sip:bob@example.com>\n\
         Call-ID: out-1@sbc.example\n\
         CSeq: 7 {method}\n\
         Content-Length: 0\n\n"
    ));
    m.remove(&HeaderName::Via);
    m
}

/// The peer's response to a request we sent.
fn reply(sent: &Transmit, code: u16, to_tag: Option<&str>) -> Message {
    let r = parse(sent).response_to(code, "Whatever", to_tag);
    sip::parse(r.to_bytes()).unwrap()
}

/// A Via of the peer with the given branch.
fn via(branch: &str) -> String {
    format!("SIP/2.0/UDP 198.51.100.7:5060;branch={branch};rport")
}

/// A request from the peer.
fn request_in(method: &str, via: &str, call_id: &str, to_tag: Option<&str>, cseq: &str) -> Message {
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    sip(&format!(
        "{method} sip:bob@203.0.113.1 SIP/2.0\n\
         Via: {via}\n\
         Max-Forwards: 70\n\
         From: <sip:carol@198.51.100.7>;tag=f1\n\
         To: <sip:bob@203.0.113.1>{to_tag}\n\
         Call-ID: {call_id}\n\
         CSeq: {cseq}\n\
         Content-Length: 0\n\n"
    ))
}

fn invite_in(branch: &str) -> Message {
    request_in("INVITE", &via(branch), "in-1", None, "1 INVITE")
}

/// The ACK the peer sends for our non-2xx final (same branch) or 2xx (its own branch).
fn ack_in(branch: &str, to_tag: &str) -> Message {
    request_in("ACK", &via(branch), "in-1", Some(to_tag), "1 ACK")
}

fn cancel_in(branch: &str) -> Message {
    request_in("CANCEL", &via(branch), "in-1", None, "1 CANCEL")
}

fn drain(l: &mut TransactionLayer) -> (Vec<Transmit>, Vec<TxnEvent>) {
    let tx = std::iter::from_fn(|| l.poll_transmit()).collect();
    let ev = std::iter::from_fn(|| l.poll_event()).collect();
    (tx, ev)
}

/// What happened when one deadline fired.
#[derive(Debug)]
struct Step {
    ms: u64,
    tx: Vec<Transmit>,
    ev: Vec<TxnEvent>,
}

/// Follows `poll_timeout` up to `until` ms after `t0`, firing each deadline exactly when due.
fn run(l: &mut TransactionLayer, t0: Instant, until: u64) -> Vec<Step> {
    let mut steps = Vec::new();
    while let Some((at, _)) = l.poll_timeout() {
        if at > ms(t0, until) {
            break;
        }
        l.handle_timeout(at);
        let (tx, ev) = drain(l);
        let ms = u64::try_from((at - t0).as_millis()).unwrap();
        steps.push(Step { ms, tx, ev });
    }
    steps
}

/// Instants (ms after t0) at which something was sent.
fn tx_times(steps: &[Step]) -> Vec<u64> {
    steps.iter().filter(|s| !s.tx.is_empty()).map(|s| s.ms).collect()
}

/// Instant at which `txn` timed out.
fn timed_out_at(steps: &[Step], txn: TxnId) -> Option<u64> {
    steps.iter().find(|s| s.ev.contains(&TxnEvent::TimedOut { txn })).map(|s| s.ms)
}

fn no_events(steps: &[Step]) -> bool {
    steps.iter().all(|s| s.ev.is_empty())
}

/// The id of the transaction a `RequestReceived` opened.
fn received(ev: &[TxnEvent]) -> TxnId {
    match ev {
        [TxnEvent::RequestReceived { txn, .. }] => *txn,
        other => panic!("expected one RequestReceived, got {other:?}"),
    }
}

/// Sends an INVITE on `flow` and returns its id and what went out.
fn start_invite(l: &mut TransactionLayer, t0: Instant, flow: Flow) -> (TxnId, Transmit) {
    let id = l.send_request(t0, outgoing("INVITE"), flow, SENT_BY);
    let (mut tx, ev) = drain(l);
    assert_eq!((tx.len(), ev.len()), (1, 0));
    (id, tx.remove(0))
}

/// Receives an INVITE on `flow` and returns its server transaction.
fn accept_invite(l: &mut TransactionLayer, t0: Instant, branch: &str, flow: Flow) -> TxnId {
    l.handle_message(t0, invite_in(branch), flow);
    let (_, ev) = drain(l);
    received(&ev)
}

// ---- client INVITE ----

#[test]
fn send_request_inserts_our_top_via() {
    let t0 = Instant::now();
    let mut l = layer();
    let (id, tx) = start_invite(&mut l, t0, udp());
    assert_eq!(tx.flow, udp());
    let sent = parse(&tx);
    assert_eq!(sent.via_count(), 1);
    let v = sent.top_via().unwrap();
    assert_eq!(&v.transport[..], b"UDP");
    assert_eq!(v.host.to_string(), "203.0.113.1");
    assert_eq!(v.port, Some(5060));
    assert_eq!(v.param("rport").as_deref(), Some(&b""[..]));
    let b = v.branch().unwrap();
    assert!(b.starts_with(b"z9hG4bK"));
    assert_eq!(shard_of_branch(&b), Some(3));
    assert_eq!(branch::decode(&b), Some((3, id)));

    let (_, tx) = start_invite(&mut l, t0, tcp());
    assert_eq!(&parse(&tx).top_via().unwrap().transport[..], b"TCP");
    // Two branches from one layer differ beyond the slot (the unpredictable suffix).
    let b2 = parse(&tx).top_via().unwrap().branch().unwrap();
    assert_ne!(b[27..], b2[27..]);
}

#[test]
fn shard_of_branch_rejects_foreign_branches() {
    let ours = branch::encode(513, TxnId { index: 9, generation: 2 }, 42);
    assert_eq!(shard_of_branch(ours.as_bytes()), Some(513));
    assert_eq!(shard_of_branch(b"z9hG4bK776asdhds"), None);
    assert_eq!(shard_of_branch(ours.to_uppercase().as_bytes()), None);
    assert_eq!(shard_of_branch(ours.replace('.', "-").as_bytes()), None);
    assert_eq!(shard_of_branch(&ours.as_bytes()[..40]), None);
    assert_eq!(shard_of_branch(b""), None);
}

#[test]
fn timer_a_doubles_until_timer_b_on_udp() {
    let t0 = Instant::now();
    let mut l = layer();
    let (id, first) = start_invite(&mut l, t0, udp());
    assert_eq!(l.poll_timeout(), Some((ms(t0, 500), TimerName::A)));
    l.handle_timeout(ms(t0, 499)); // early: nothing
    assert_eq!(drain(&mut l).0.len(), 0);
    let steps = run(&mut l, t0, 40_000);
    assert_eq!(tx_times(&steps), [500, 1500, 3500, 7500, 15500, 31500]);
    assert!(steps.iter().flat_map(|s| &s.tx).all(|t| *t == first));
    assert_eq!(timed_out_at(&steps, id), Some(32_000));
    assert!(l.is_empty());
    assert_eq!(l.poll_timeout(), None);
}

#[test]
fn invite_over_tcp_is_not_retransmitted() {
    let t0 = Instant::now();
    let mut l = layer();
    let (id, _) = start_invite(&mut l, t0, tcp());
    assert_eq!(l.poll_timeout(), Some((ms(t0, 32_000), TimerName::B)));
    let steps = run(&mut l, t0, 40_000);
    assert!(tx_times(&steps).is_empty());
    assert_eq!(timed_out_at(&steps, id), Some(32_000));
    assert!(l.is_empty());
}

#[test]
fn provisional_stops_timers_a_and_b() {
    let t0 = Instant::now();
    let mut l = layer();
    let (id, invite) = start_invite(&mut l, t0, udp());
    let trying = reply(&invite, 100, None);
    l.handle_message(ms(t0, 100), trying.clone(), udp());
    let ringing = reply(&invite, 180, Some("b1"));
    l.handle_message(ms(t0, 200), ringing.clone(), udp());
    let (tx, ev) = drain(&mut l);
    assert!(tx.is_empty());
    assert_eq!(
        ev,
        [
            TxnEvent::ResponseReceived { txn: id, response: trying },
            TxnEvent::ResponseReceived { txn: id, response: ringing }
        ]
    );
    assert_eq!(l.poll_timeout(), None);
    assert_eq!(l.len(), 1);
}

#[test]
fn non_2xx_final_is_acked_and_timer_d_absorbs_retransmissions() {
    let t0 = Instant::now();
    let mut l = layer();
    let (id, invite_tx) = start_invite(&mut l, t0, udp());
    l.handle_message(ms(t0, 100), reply(&invite_tx, 180, Some("b1")), udp());
    drain(&mut l);
    let busy = reply(&invite_tx, 486, Some("b1"));
    l.handle_message(ms(t0, 200), busy.clone(), udp());
    let (tx, ev) = drain(&mut l);
    assert_eq!(ev, [TxnEvent::ResponseReceived { txn: id, response: busy.clone() }]);
    assert_eq!(tx.len(), 1);
    assert_eq!(tx[0].flow, udp());

    // RFC 3261 section 17.1.1.3.
    let invite = parse(&invite_tx);
    let ack = parse(&tx[0]);
    assert_eq!(ack.method(), Some(&Method::Ack));
    assert_eq!(ack.request_uri(), invite.request_uri());
    assert_eq!(ack.via_count(), 1);
    assert_eq!(ack.header(&HeaderName::Via), invite.header(&HeaderName::Via));
    let routes = |m: &Message| m.values(&HeaderName::Route).collect::<Vec<_>>();
    assert_eq!(routes(&ack), routes(&invite));
    assert_eq!(routes(&ack).len(), 2);
    assert_eq!(ack.from(), invite.from());
    assert_eq!(ack.to(), busy.to());
    assert_eq!(ack.to().unwrap().tag().as_deref(), Some(&b"b1"[..]));
    assert_eq!(ack.call_id(), invite.call_id());
    let cseq = ack.cseq().unwrap();
    assert_eq!((cseq.seq, cseq.method), (7, Method::Ack));
    assert_eq!(ack.max_forwards(), Some(70));

    // A retransmitted final gets the same ACK again and is not passed up.
    l.handle_message(ms(t0, 1200), busy, udp());
    let (again, ev) = drain(&mut l);
    assert_eq!(again, tx);
    assert!(ev.is_empty());

    assert_eq!(l.poll_timeout(), Some((ms(t0, 32_200), TimerName::D)));
    let steps = run(&mut l, t0, 40_000);
    assert!(tx_times(&steps).is_empty() && no_events(&steps));
    assert!(l.is_empty());
}

#[test]
fn non_2xx_final_over_tcp_ends_at_once() {
    let t0 = Instant::now();
    let mut l = layer();
    let (id, invite_tx) = start_invite(&mut l, t0, tcp());
    l.handle_message(ms(t0, 50), reply(&invite_tx, 603, Some("b1")), tcp());
    let (tx, ev) = drain(&mut l);
    assert_eq!(method(&tx[0]), Method::Ack);
    assert!(matches!(&ev[..], [TxnEvent::ResponseReceived { txn, .. }] if *txn == id));
    assert!(l.is_empty()); // Timer D = 0
    assert_eq!(l.poll_timeout(), None);
}

#[test]
fn accepted_client_passes_up_every_2xx_until_timer_m() {
    let t0 = Instant::now();
    let mut l = layer();
    let (id, invite_tx) = start_invite(&mut l, t0, udp());
    let ok_a = reply(&invite_tx, 200, Some("a"));
    let ok_b = reply(&invite_tx, 200, Some("b"));
    l.handle_message(ms(t0, 300), ok_a.clone(), udp());
    assert_eq!(l.poll_timeout(), Some((ms(t0, 32_300), TimerName::M)));
    l.handle_message(ms(t0, 400), ok_b.clone(), udp()); // another fork
    l.handle_message(ms(t0, 800), ok_a.clone(), udp()); // retransmission
    l.handle_message(ms(t0, 900), reply(&invite_tx, 486, Some("c")), udp()); // absorbed
    l.handle_message(ms(t0, 950), reply(&invite_tx, 180, Some("d")), udp()); // absorbed
    let (tx, ev) = drain(&mut l);
    assert!(tx.is_empty(), "the user ACKs a 2xx, not the layer");
    let got: Vec<_> = ev
        .iter()
        .map(|e| match e {
            TxnEvent::ResponseReceived { txn, response } if *txn == id => response.clone(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(got, [ok_a.clone(), ok_b, ok_a.clone()]);

    let steps = run(&mut l, t0, 40_000);
    assert_eq!(steps.len(), 1);
    assert!(no_events(&steps) && l.is_empty());
    // After Timer M, a 2xx is stray: the user may still ACK it from its dialog.
    l.handle_message(ms(t0, 40_000), ok_a.clone(), udp());
    assert_eq!(drain(&mut l).1, [TxnEvent::StrayResponse { response: ok_a, flow: udp() }]);
}

// ---- client non-INVITE ----

#[test]
fn timer_e_doubles_to_t2_until_timer_f() {
    let t0 = Instant::now();
    let mut l = layer();
    let id = l.send_request(t0, outgoing("OPTIONS"), udp(), SENT_BY);
    drain(&mut l);
    assert_eq!(l.poll_timeout(), Some((ms(t0, 500), TimerName::E)));
    let steps = run(&mut l, t0, 40_000);
    assert_eq!(tx_times(&steps), [500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]);
    assert_eq!(timed_out_at(&steps, id), Some(32_000));
    assert!(l.is_empty());
}

#[test]
fn timer_e_runs_at_t2_in_proceeding() {
    let t0 = Instant::now();
    let mut l = layer();
    let id = l.send_request(t0, outgoing("BYE"), udp(), SENT_BY);
    let (tx, _) = drain(&mut l);
    assert_eq!(tx_times(&run(&mut l, t0, 600)), [500]);
    let trying = reply(&tx[0], 100, None);
    l.handle_message(ms(t0, 600), trying.clone(), udp());
    assert_eq!(drain(&mut l).1, [TxnEvent::ResponseReceived { txn: id, response: trying }]);
    // The deadline set in Trying (1500) stands; from then on every T2.
    let steps = run(&mut l, t0, 40_000);
    assert_eq!(tx_times(&steps), [1500, 5500, 9500, 13500, 17500, 21500, 25500, 29500]);
    assert_eq!(timed_out_at(&steps, id), Some(32_000));
}

#[test]
fn non_invite_over_tcp_is_not_retransmitted() {
    let t0 = Instant::now();
    let mut l = layer();
    let id = l.send_request(t0, outgoing("OPTIONS"), tcp(), SENT_BY);
    drain(&mut l);
    assert_eq!(l.poll_timeout(), Some((ms(t0, 32_000), TimerName::F)));
    let steps = run(&mut l, t0, 40_000);
    assert!(tx_times(&steps).is_empty());
    assert_eq!(timed_out_at(&steps, id), Some(32_000));
}

#[test]
fn timer_k_absorbs_final_retransmissions() {
    let t0 = Instant::now();
    let mut l = layer();
    let id = l.send_request(t0, outgoing("OPTIONS"), udp(), SENT_BY);
    let (tx, _) = drain(&mut l);
    let ok = reply(&tx[0], 200, Some("b1"));
    l.handle_message(ms(t0, 100), ok.clone(), udp());
    assert_eq!(drain(&mut l).1, [TxnEvent::ResponseReceived { txn: id, response: ok.clone() }]);
    assert_eq!(l.poll_timeout(), Some((ms(t0, 5100), TimerName::K)));
    l.handle_message(ms(t0, 600), ok, udp());
    assert_eq!(drain(&mut l), (vec![], vec![]));
    let steps = run(&mut l, t0, 40_000);
    assert!(tx_times(&steps).is_empty() && no_events(&steps));
    assert!(l.is_empty());

    // Timer K is 0 over TCP.
    let id = l.send_request(t0, outgoing("OPTIONS"), tcp(), SENT_BY);
    let (tx, _) = drain(&mut l);
    l.handle_message(ms(t0, 100), reply(&tx[0], 404, Some("b1")), tcp());
    assert!(matches!(&drain(&mut l).1[..], [TxnEvent::ResponseReceived { txn, .. }] if *txn == id));
    assert!(l.is_empty());
}

#[test]
fn ack_through_send_request_goes_out_without_a_transaction() {
    let t0 = Instant::now();
    let mut l = layer();
    let id = l.send_request(t0, outgoing("ACK"), udp(), SENT_BY);
    let (tx, _) = drain(&mut l);
    assert_eq!(tx.len(), 1);
    assert!(l.is_empty());
    l.respond(t0, id, outgoing("OPTIONS")); // the returned id is dead: ignored
    assert_eq!(l.poll_timeout(), None);
}

// ---- responses that match nothing ----

#[test]
fn responses_that_match_nothing_are_stray() {
    let t0 = Instant::now();
    let mut l = layer();
    l.send_request(t0, outgoing("OPTIONS"), udp(), SENT_BY);
    let (tx, _) = drain(&mut l);
    let text = String::from_utf8(reply(&tx[0], 200, Some("b1")).to_bytes().to_vec()).unwrap();
    let branch = parse(&tx[0]).top_via().unwrap().branch().unwrap();
    let branch = std::str::from_utf8(&branch).unwrap().to_owned();
    let mut forged_suffix = branch.clone();
    forged_suffix.replace_range(40.., "0000");
    let cases = [
        text.replace(&branch, "z9hG4bKforeign"),
        text.replace(&branch, &forged_suffix),
        text.replace("7 OPTIONS", "7 INVITE"),
        text.replace("7 OPTIONS", "7 CANCEL"),
    ];
    for case in cases {
        let response = sip::parse(Bytes::from(case)).unwrap();
        l.handle_message(ms(t0, 10), response.clone(), udp());
        assert_eq!(drain(&mut l).1, [TxnEvent::StrayResponse { response, flow: udp() }]);
    }
    // A response with a Via above ours is not for us at all (RFC 3261 section 8.1.3.3).
    let two_vias = text.replace("Via: ", "Via: SIP/2.0/UDP 192.0.2.99;branch=z9hG4bKup\r\nVia: ");
    l.handle_message(ms(t0, 10), sip::parse(Bytes::from(two_vias)).unwrap(), udp());
    assert_eq!(drain(&mut l), (vec![], vec![]));
    // Another shard's layer does not know our branch either.
    let mut other = TransactionLayer::new(TimerConfig::default(), 4, 7);
    let response = sip::parse(Bytes::from(text)).unwrap();
    other.handle_message(t0, response, udp());
    assert!(matches!(&drain(&mut other).1[..], [TxnEvent::StrayResponse { .. }]));
    assert_eq!(l.len(), 1);
}

// ---- server INVITE ----

#[test]
fn new_invite_gets_100_trying_and_is_passed_up() {
    let t0 = Instant::now();
    let mut l = layer();
    let invite = invite_in("z9hG4bKaaa");
    l.handle_message(t0, invite.clone(), udp());
    let (tx, ev) = drain(&mut l);
    assert_eq!(tx.len(), 1);
    let trying = parse(&tx[0]);
    assert_eq!(trying.code(), Some(100));
    assert_eq!(trying.to().unwrap().tag(), None);
    assert_eq!(trying.header(&HeaderName::Via), invite.header(&HeaderName::Via));
    let id = received(&ev);
    assert_eq!(ev, [TxnEvent::RequestReceived { txn: id, request: invite.clone(), flow: udp() }]);
    assert_eq!(l.poll_timeout(), None, "no timer in Proceeding");

    // A retransmission gets the last provisional and is not passed up.
    l.handle_message(ms(t0, 500), invite.clone(), udp());
    assert_eq!(drain(&mut l), (tx, vec![]));
    let ringing = invite.response_to(180, "Ringing", Some("s1"));
    l.respond(ms(t0, 600), id, ringing.clone());
    let (tx, _) = drain(&mut l);
    assert_eq!(tx[0].data, ringing.to_bytes());
    l.handle_message(ms(t0, 700), invite, udp());
    assert_eq!(drain(&mut l), (tx, vec![]));
}

#[test]
fn timer_g_retransmits_final_until_timer_h() {
    let t0 = Instant::now();
    let mut l = layer();
    let id = accept_invite(&mut l, t0, "z9hG4bKaaa", udp());
    let busy = invite_in("z9hG4bKaaa").response_to(486, "Busy Here", Some("s1"));
    l.respond(t0, id, busy.clone());
    let (tx, _) = drain(&mut l);
    assert_eq!(tx[0].data, busy.to_bytes());
    assert_eq!(l.poll_timeout(), Some((ms(t0, 500), TimerName::G)));
    let steps = run(&mut l, t0, 40_000);
    assert_eq!(tx_times(&steps), [500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]);
    assert!(steps.iter().flat_map(|s| &s.tx).all(|t| *t == tx[0]));
    assert_eq!(timed_out_at(&steps, id), Some(32_000));
    assert!(l.is_empty());
}

#[test]
fn ack_confirms_and_timer_i_absorbs_the_rest() {
    let t0 = Instant::now();
    let mut l = layer();
    let id = accept_invite(&mut l, t0, "z9hG4bKaaa", udp());
    l.respond(t0, id, invite_in("z9hG4bKaaa").response_to(486, "Busy", Some("s1")));
    drain(&mut l);
    assert_eq!(tx_times(&run(&mut l, t0, 600)), [500]);
    l.handle_message(ms(t0, 700), ack_in("z9hG4bKaaa", "s1"), udp());
    assert_eq!(drain(&mut l), (vec![], vec![]));
    assert_eq!(l.poll_timeout(), Some((ms(t0, 5700), TimerName::I)));
    // In Confirmed, ACK and INVITE retransmissions are absorbed.
    l.handle_message(ms(t0, 800), ack_in("z9hG4bKaaa", "s1"), udp());
    l.handle_message(ms(t0, 900), invite_in("z9hG4bKaaa"), udp());
    assert_eq!(drain(&mut l), (vec![], vec![]));
    let steps = run(&mut l, t0, 40_000);
    assert!(tx_times(&steps).is_empty() && no_events(&steps));
    assert!(l.is_empty());
}

#[test]
fn final_over_tcp_is_sent_once_and_the_ack_ends_it() {
    let t0 = Instant::now();
    let mut l = layer();
    let id = accept_invite(&mut l, t0, "z9hG4bKaaa", tcp());
    l.respond(t0, id, invite_in("z9hG4bKaaa").response_to(486, "Busy", Some("s1")));
    assert_eq!(drain(&mut l).0.len(), 1);
    assert_eq!(l.poll_timeout(), Some((ms(t0, 32_000), TimerName::H)));
    l.handle_message(ms(t0, 100), ack_in("z9hG4bKaaa", "s1"), tcp());
    assert_eq!(drain(&mut l), (vec![], vec![]));
    assert!(l.is_empty()); // Timer I = 0
}

#[test]
fn accepted_server_retransmits_2xx_until_timer_l() {
    let t0 = Instant::now();
    let mut l = layer();
    let id = accept_invite(&mut l, t0, "z9hG4bKaaa", udp());
    let ok = invite_in("z9hG4bKaaa").response_to(200, "OK", Some("s1"));
    l.respond(t0, id, ok.clone());
    assert_eq!(drain(&mut l).0[0].data, ok.to_bytes());
    assert_eq!(l.poll_timeout(), Some((ms(t0, 500), TimerName::Retransmit2xx)));
    let steps = run(&mut l, t0, 40_000);
    assert_eq!(tx_times(&steps), [500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]);
    assert!(steps.iter().flat_map(|s| &s.tx).all(|t| t.data == ok.to_bytes()));
    assert_eq!(timed_out_at(&steps, id), Some(32_000));
    assert!(l.is_empty());
}

#[test]
fn ack_for_2xx_stops_retransmission_and_timer_l_lingers() {
    let t0 = Instant::now();
    let mut l = layer();
    let id = accept_invite(&mut l, t0, "z9hG4bKaaa", udp());
    let ok = invite_in("z9hG4bKaaa").response_to(200, "OK", Some("s1"));
    l.respond(t0, id, ok.clone());
    drain(&mut l);
    assert_eq!(tx_times(&run(&mut l, t0, 600)), [500]);

    // The ACK for a 2xx has its own branch: matched by Call-ID and CSeq number.
    let ack = ack_in("z9hG4bKack1", "s1");
    l.handle_message(ms(t0, 1000), ack.clone(), udp());
    let (tx, ev) = drain(&mut l);
    assert!(tx.is_empty());
    assert_eq!(ev, [TxnEvent::AckReceived { invite: Some(id), request: ack.clone(), flow: udp() }]);
    assert_eq!(l.poll_timeout(), Some((ms(t0, 33_000), TimerName::L)));

    // INVITE retransmissions still get the 2xx; further ACKs go up but do not extend Timer L.
    l.handle_message(ms(t0, 2000), invite_in("z9hG4bKaaa"), udp());
    let (tx, ev) = drain(&mut l);
    assert_eq!((tx.len(), ev.len()), (1, 0));
    assert_eq!(tx[0].data, ok.to_bytes());
    l.handle_message(ms(t0, 3000), ack.clone(), udp());
    assert!(matches!(
        &drain(&mut l).1[..],
        [TxnEvent::AckReceived { invite: Some(i), .. }] if *i == id
    ));
    assert_eq!(l.poll_timeout(), Some((ms(t0, 33_000), TimerName::L)));

    let steps = run(&mut l, t0, 40_000);
    assert!(tx_times(&steps).is_empty() && no_events(&steps));
    assert!(l.is_empty());
    // Once the transaction is gone, the same ACK matches nothing.
    l.handle_message(ms(t0, 40_000), ack.clone(), udp());
    assert_eq!(
        drain(&mut l).1,
        [TxnEvent::AckReceived { invite: None, request: ack, flow: udp() }]
    );
}

#[test]
fn two_hundred_over_tcp_is_sent_once() {
    let t0 = Instant::now();
    let mut l = layer();
    let id = accept_invite(&mut l, t0, "z9hG4bKaaa", tcp());
    l.respond(t0, id, invite_in("z9hG4bKaaa").response_to(200, "OK", Some("s1")));
    assert_eq!(drain(&mut l).0.len(), 1);
    assert_eq!(l.poll_timeout(), Some((ms(t0, 32_000), TimerName::L)));
    let steps = run(&mut l, t0, 40_000);
    assert!(tx_times(&steps).is_empty());
    assert_eq!(timed_out_at(&steps, id), Some(32_000));
}

#[test]
fn stray_ack_is_passed_up() {
    let t0 = Instant::now();
    let mut l = layer();
    let ack = ack_in("z9hG4bKnothing", "x");
    l.handle_message(t0, ack.clone(), udp());
    assert_eq!(
        drain(&mut l),
        (vec![], vec![TxnEvent::AckReceived { invite: None, request: ack, flow: udp() }])
    );
    assert!(l.is_empty());
}

// ---- server non-INVITE ----

#[test]
fn timer_j_answers_retransmissions_then_ends() {
    let t0 = Instant::now();
    let mut l = layer();
    let options = request_in("OPTIONS", &via("z9hG4bKopt"), "in-2", None, "1 OPTIONS");
    l.handle_message(t0, options.clone(), udp());
    let (tx, ev) = drain(&mut l);
    assert!(tx.is_empty(), "no 100 for non-INVITE");
    let id = received(&ev);
    // Trying: retransmissions are absorbed.
    l.handle_message(ms(t0, 500), options.clone(), udp());
    assert_eq!(drain(&mut l), (vec![], vec![]));
    l.respond(ms(t0, 100), id, options.response_to(183, "Progress", Some("s1")));
    let (tx, _) = drain(&mut l);
    l.handle_message(ms(t0, 150), options.clone(), udp());
    assert_eq!(drain(&mut l), (tx, vec![]));
    l.respond(ms(t0, 200), id, options.response_to(200, "OK", Some("s1")));
    let (tx, _) = drain(&mut l);
    assert_eq!(code(&tx[0]), 200);
    l.handle_message(ms(t0, 1000), options.clone(), udp());
    assert_eq!(drain(&mut l), (tx, vec![]));
    assert_eq!(l.poll_timeout(), Some((ms(t0, 32_200), TimerName::J)));
    let steps = run(&mut l, t0, 40_000);
    assert!(tx_times(&steps).is_empty() && no_events(&steps));
    assert!(l.is_empty());

    // Timer J = 0 over TCP.
    l.handle_message(t0, options.clone(), tcp());
    let id = received(&drain(&mut l).1);
    l.respond(t0, id, options.response_to(200, "OK", Some("s1")));
    assert_eq!(drain(&mut l).0.len(), 1);
    assert!(l.is_empty());
}

// ---- CANCEL (server) ----

#[test]
fn cancel_of_proceeding_invite_is_answered_and_passed_up() {
    let t0 = Instant::now();
    let mut l = layer();
    let invite = accept_invite(&mut l, t0, "z9hG4bKaaa", udp());
    l.respond(t0, invite, invite_in("z9hG4bKaaa").response_to(180, "Ringing", Some("s1")));
    drain(&mut l);
    let cancel = cancel_in("z9hG4bKaaa");
    l.handle_message(ms(t0, 100), cancel.clone(), udp());
    let (tx, ev) = drain(&mut l);
    assert_eq!(ev, [TxnEvent::CancelReceived { invite, request: cancel.clone() }]);
    assert_eq!(tx.len(), 1);
    let ok = parse(&tx[0]);
    assert_eq!(ok.code(), Some(200));
    assert_eq!(ok.cseq().unwrap().method, Method::Cancel);
    // RFC 3261 section 9.2: the same To tag as the INVITE's responses.
    assert_eq!(ok.to().unwrap().tag().as_deref(), Some(&b"s1"[..]));
    assert_eq!(l.len(), 2);

    // A CANCEL retransmission gets the 200 again and nothing goes up.
    l.handle_message(ms(t0, 600), cancel, udp());
    assert_eq!(drain(&mut l), (tx, vec![]));
    // The user ends the INVITE with 487.
    l.respond(
        ms(t0, 700),
        invite,
        invite_in("z9hG4bKaaa").response_to(487, "Request Terminated", Some("s1")),
    );
    assert_eq!(code(&drain(&mut l).0[0]), 487);
    l.handle_message(ms(t0, 800), ack_in("z9hG4bKaaa", "s1"), udp());
    let steps = run(&mut l, t0, 40_000);
    assert!(no_events(&steps));
    assert!(l.is_empty());
}

#[test]
fn cancel_matching_nothing_gets_481() {
    let t0 = Instant::now();
    let mut l = layer();
    accept_invite(&mut l, t0, "z9hG4bKaaa", udp());
    // Same call, other branch: no INVITE transaction has this branch.
    let cancel = request_in("CANCEL", &via("z9hG4bKzzz"), "in-9", None, "1 CANCEL");
    l.handle_message(t0, cancel, udp());
    let (tx, ev) = drain(&mut l);
    assert_eq!(code(&tx[0]), 481);
    assert!(ev.is_empty());
    // Same branch but another sent-by is another transaction too (RFC 3261 17.2.3).
    let other_host = request_in(
        "CANCEL",
        "SIP/2.0/UDP 198.51.100.8:5060;branch=z9hG4bKaaa",
        "in-1",
        None,
        "1 CANCEL",
    );
    l.handle_message(t0, other_host, udp());
    let (tx, ev) = drain(&mut l);
    assert_eq!(code(&tx[0]), 481);
    assert!(ev.is_empty());
}

#[test]
fn cancel_after_final_gets_200_without_event() {
    let t0 = Instant::now();
    let mut l = layer();
    let invite = accept_invite(&mut l, t0, "z9hG4bKaaa", udp());
    l.respond(t0, invite, invite_in("z9hG4bKaaa").response_to(200, "OK", Some("s1")));
    drain(&mut l);
    l.handle_message(ms(t0, 100), cancel_in("z9hG4bKaaa"), udp());
    let (tx, ev) = drain(&mut l);
    assert_eq!(code(&tx[0]), 200);
    assert_eq!(parse(&tx[0]).cseq().unwrap().method, Method::Cancel);
    assert!(ev.is_empty());
}

// ---- CANCEL (client) ----

#[test]
fn cancel_after_provisional_is_sent_at_once() {
    let t0 = Instant::now();
    let mut l = layer();
    let (invite, invite_tx) = start_invite(&mut l, t0, udp());
    l.handle_message(ms(t0, 100), reply(&invite_tx, 180, Some("b1")), udp());
    drain(&mut l);
    let cancel = l.cancel(ms(t0, 200), invite).unwrap();
    assert_ne!(cancel, invite);
    let (tx, _) = drain(&mut l);
    assert_eq!(tx.len(), 1);
    assert_eq!(tx[0].flow, udp());

    // RFC 3261 section 9.1.
    let inv = parse(&invite_tx);
    let c = parse(&tx[0]);
    assert_eq!(c.method(), Some(&Method::Cancel));
    assert_eq!(c.request_uri(), inv.request_uri());
    assert_eq!(c.via_count(), 1);
    assert_eq!(c.header(&HeaderName::Via), inv.header(&HeaderName::Via));
    assert_eq!(c.to(), inv.to());
    assert_eq!(c.to().unwrap().tag(), None);
    assert_eq!(c.from(), inv.from());
    assert_eq!(c.call_id(), inv.call_id());
    let cseq = c.cseq().unwrap();
    assert_eq!((cseq.seq, cseq.method), (7, Method::Cancel));
    let routes = |m: &Message| m.values(&HeaderName::Route).collect::<Vec<_>>();
    assert_eq!(routes(&c), routes(&inv));
    assert_eq!(c.max_forwards(), Some(70));
    // Asking again gives the same CANCEL.
    assert_eq!(l.cancel(ms(t0, 250), invite), Some(cancel));
    assert!(drain(&mut l).0.is_empty());

    // Its responses and the INVITE's, despite the shared branch, reach the right transaction.
    let ok = reply(&tx[0], 200, Some("b1"));
    l.handle_message(ms(t0, 300), ok.clone(), udp());
    let terminated = reply(&invite_tx, 487, Some("b1"));
    l.handle_message(ms(t0, 350), terminated.clone(), udp());
    let (tx, ev) = drain(&mut l);
    assert_eq!(
        ev,
        [
            TxnEvent::ResponseReceived { txn: cancel, response: ok },
            TxnEvent::ResponseReceived { txn: invite, response: terminated }
        ]
    );
    assert_eq!(method(&tx[0]), Method::Ack);
    assert_eq!(l.cancel(ms(t0, 400), invite), None, "final response came");
    let steps = run(&mut l, t0, 40_000);
    assert!(no_events(&steps));
    assert!(l.is_empty());
}

#[test]
fn cancel_before_provisional_waits_for_one() {
    let t0 = Instant::now();
    let mut l = layer();
    let (invite, invite_tx) = start_invite(&mut l, t0, udp());
    let cancel = l.cancel(ms(t0, 100), invite).unwrap();
    assert!(drain(&mut l).0.is_empty(), "no CANCEL before a provisional");
    assert_eq!(l.len(), 2);
    assert_eq!(l.cancel(ms(t0, 150), invite), Some(cancel));
    // Timer A still runs for the INVITE.
    assert_eq!(tx_times(&run(&mut l, t0, 600)), [500]);

    l.handle_message(ms(t0, 700), reply(&invite_tx, 100, None), udp());
    let (tx, ev) = drain(&mut l);
    assert_eq!(ev.len(), 1);
    assert_eq!(tx.len(), 1);
    assert_eq!(method(&tx[0]), Method::Cancel);
    // The CANCEL retransmits on Timer E from when it was sent.
    let steps = run(&mut l, t0, 2000);
    assert_eq!(tx_times(&steps), [1200]);
    assert!(steps.iter().flat_map(|s| &s.tx).all(|t| *t == tx[0]));
    l.handle_message(ms(t0, 2000), reply(&tx[0], 200, Some("b1")), udp());
    assert!(matches!(
        &drain(&mut l).1[..],
        [TxnEvent::ResponseReceived { txn, .. }] if *txn == cancel
    ));
}

#[test]
fn deferred_cancel_is_dropped_when_a_final_comes_first() {
    let t0 = Instant::now();
    let mut l = layer();
    let (invite, invite_tx) = start_invite(&mut l, t0, udp());
    let cancel = l.cancel(ms(t0, 100), invite).unwrap();
    l.handle_message(ms(t0, 200), reply(&invite_tx, 486, Some("b1")), udp());
    let (tx, ev) = drain(&mut l);
    assert_eq!(tx.len(), 1);
    assert_eq!(method(&tx[0]), Method::Ack);
    assert!(matches!(&ev[..], [TxnEvent::ResponseReceived { txn, .. }] if *txn == invite));
    assert_eq!(l.len(), 1, "the CANCEL is gone; the INVITE waits in Completed");
    assert_eq!(l.cancel(ms(t0, 300), invite), None);
    l.handle_transport_error(ms(t0, 300), cancel);
    assert!(drain(&mut l).1.is_empty(), "the CANCEL handle is stale");
    run(&mut l, t0, 40_000);
    assert!(l.is_empty());
}

#[test]
fn cancel_response_matches_after_the_invite_ended() {
    let t0 = Instant::now();
    let mut l = layer();
    let (invite, invite_tx) = start_invite(&mut l, t0, tcp());
    l.handle_message(ms(t0, 100), reply(&invite_tx, 180, Some("b1")), tcp());
    let cancel = l.cancel(ms(t0, 200), invite).unwrap();
    let (tx, _) = drain(&mut l);
    let cancel_tx = tx.last().unwrap().clone();
    // Over TCP the 487 ends the INVITE at once (Timer D = 0); the 200 to the CANCEL comes after.
    l.handle_message(ms(t0, 300), reply(&invite_tx, 487, Some("b1")), tcp());
    assert_eq!(l.len(), 1);
    l.handle_message(ms(t0, 310), reply(&cancel_tx, 200, Some("b1")), tcp());
    let ev = drain(&mut l).1;
    assert!(matches!(&ev[1], TxnEvent::ResponseReceived { txn, .. } if *txn == cancel));
    assert!(l.is_empty());
}

#[test]
fn invite_times_out_64_t1_after_its_cancel() {
    let t0 = Instant::now();
    let mut l = layer();
    let (invite, invite_tx) = start_invite(&mut l, t0, udp());
    l.handle_message(ms(t0, 100), reply(&invite_tx, 180, Some("b1")), udp());
    let cancel = l.cancel(ms(t0, 1000), invite).unwrap();
    drain(&mut l);
    let steps = run(&mut l, t0, 60_000);
    assert_eq!(timed_out_at(&steps, invite), Some(33_000));
    assert_eq!(timed_out_at(&steps, cancel), Some(33_000));
    assert!(l.is_empty());
}

// ---- merged requests, RFC 2543, bounds ----

#[test]
fn merged_request_gets_482() {
    let t0 = Instant::now();
    let mut l = layer();
    accept_invite(&mut l, t0, "z9hG4bKpath1", udp());
    // The same request (From tag, Call-ID, CSeq) by another path: another branch.
    l.handle_message(ms(t0, 10), invite_in("z9hG4bKpath2"), udp());
    let (tx, ev) = drain(&mut l);
    assert!(ev.is_empty());
    assert_eq!(tx.len(), 1);
    let r = parse(&tx[0]);
    assert_eq!(r.code(), Some(482));
    assert!(r.to().unwrap().tag().is_some());
    assert_eq!(l.len(), 1);
    // A request with a To tag (in a dialog) is not checked for merging.
    let reinvite = request_in("INVITE", &via("z9hG4bKpath3"), "in-1", Some("s1"), "1 INVITE");
    l.handle_message(ms(t0, 20), reinvite, udp());
    assert!(matches!(&drain(&mut l).1[..], [TxnEvent::RequestReceived { .. }]));
}

#[test]
fn rfc2543_requests_match_without_a_branch() {
    let t0 = Instant::now();
    let mut l = layer();
    let via = "SIP/2.0/UDP 198.51.100.7:5060";
    let invite = request_in("INVITE", via, "old-1", None, "5 INVITE");
    l.handle_message(t0, invite.clone(), udp());
    let (tx, ev) = drain(&mut l);
    let id = received(&ev);
    // The retransmission matches (and is not taken for a merged request).
    l.handle_message(ms(t0, 500), invite.clone(), udp());
    assert_eq!(drain(&mut l), (tx, vec![]));
    // So does the CANCEL (same fields but the method).
    let cancel = request_in("CANCEL", via, "old-1", None, "5 CANCEL");
    l.handle_message(ms(t0, 600), cancel.clone(), udp());
    let (tx, ev) = drain(&mut l);
    assert_eq!(code(&tx[0]), 200);
    assert_eq!(ev, [TxnEvent::CancelReceived { invite: id, request: cancel }]);
    // And the ACK for the 487, whose To carries our tag.
    l.respond(ms(t0, 700), id, invite.response_to(487, "Request Terminated", Some("s1")));
    drain(&mut l);
    let ack = request_in("ACK", via, "old-1", Some("s1"), "5 ACK");
    l.handle_message(ms(t0, 800), ack, udp());
    assert_eq!(drain(&mut l), (vec![], vec![]));
    // The INVITE's Timer I comes first; then the CANCEL's Timer J.
    assert_eq!(l.poll_timeout(), Some((ms(t0, 5800), TimerName::I)));
    let steps = run(&mut l, t0, 40_000);
    assert!(no_events(&steps) && tx_times(&steps).is_empty());
    assert!(l.is_empty());
    // Another CSeq is another transaction.
    let next = request_in("INVITE", via, "old-1", Some("s1"), "6 INVITE");
    l.handle_message(ms(t0, 40_000), next, udp());
    assert!(matches!(&drain(&mut l).1[..], [TxnEvent::RequestReceived { .. }]));
}

#[test]
fn requests_beyond_the_cap_get_503_without_state() {
    let t0 = Instant::now();
    let mut l = layer().with_max_transactions(1);
    accept_invite(&mut l, t0, "z9hG4bKaaa", udp());
    let options = request_in("OPTIONS", &via("z9hG4bKopt"), "in-2", None, "1 OPTIONS");
    l.handle_message(t0, options.clone(), udp());
    let (tx, ev) = drain(&mut l);
    assert_eq!(code(&tx[0]), 503);
    assert!(ev.is_empty());
    assert_eq!(l.len(), 1);
    // Retransmissions of an existing transaction are still served.
    l.handle_message(t0, invite_in("z9hG4bKaaa"), udp());
    assert_eq!(code(&drain(&mut l).0[0]), 100);
}

// ---- API misuse, transport errors, handles, leaks ----

#[test]
fn respond_that_does_not_fit_the_state_is_ignored() {
    let t0 = Instant::now();
    let mut l = layer();
    let id = accept_invite(&mut l, t0, "z9hG4bKaaa", udp());
    let invite = invite_in("z9hG4bKaaa");
    l.respond(t0, id, invite.response_to(486, "Busy", Some("s1")));
    drain(&mut l);
    l.respond(t0, id, invite.response_to(200, "OK", Some("s1")));
    l.respond(t0, id, invite.response_to(180, "Ringing", Some("s1")));
    l.respond(t0, id, outgoing("OPTIONS")); // not a response
    assert_eq!(drain(&mut l), (vec![], vec![]));
    assert_eq!(l.poll_timeout(), Some((ms(t0, 500), TimerName::G)));
    // A client transaction cannot be responded on.
    let (client, _) = start_invite(&mut l, t0, udp());
    l.respond(t0, client, invite.response_to(200, "OK", Some("s1")));
    assert_eq!(drain(&mut l), (vec![], vec![]));
    assert_eq!(l.len(), 2);
}

#[test]
fn transport_error_fails_clients_and_silently_ends_servers() {
    let t0 = Instant::now();
    let mut l = layer();
    let (client, _) = start_invite(&mut l, t0, udp());
    l.handle_transport_error(ms(t0, 10), client);
    assert_eq!(drain(&mut l), (vec![], vec![TxnEvent::TransportFailed { txn: client }]));
    assert!(l.is_empty());
    assert_eq!(l.poll_timeout(), None);

    let server = accept_invite(&mut l, t0, "z9hG4bKaaa", udp());
    l.handle_transport_error(ms(t0, 10), server);
    assert_eq!(drain(&mut l), (vec![], vec![]));
    assert!(l.is_empty());
}

#[test]
fn stale_handles_are_ignored() {
    let t0 = Instant::now();
    let mut l = layer();
    let options = request_in("OPTIONS", &via("z9hG4bKone"), "in-2", None, "1 OPTIONS");
    l.handle_message(t0, options.clone(), tcp());
    let old = received(&drain(&mut l).1);
    l.respond(t0, old, options.response_to(200, "OK", Some("s1")));
    drain(&mut l);
    assert!(l.is_empty());

    // The slot is reused with a new generation.
    let (new, _) = start_invite(&mut l, t0, udp());
    assert_eq!(new.index, old.index);
    assert_ne!(new.generation, old.generation);
    l.respond(t0, old, options.response_to(200, "OK", Some("s1")));
    l.handle_transport_error(t0, old);
    assert_eq!(l.cancel(t0, old), None);
    assert_eq!(drain(&mut l), (vec![], vec![]));
    assert_eq!(l.len(), 1);
    assert_eq!(l.poll_timeout(), Some((ms(t0, 500), TimerName::A)));
}

#[test]
fn many_transactions_end_and_leave_nothing_behind() {
    let t0 = Instant::now();
    let mut l = layer();
    for i in 0..200u64 {
        let t = ms(t0, i);
        let f = if i % 2 == 0 { udp() } else { tcp() };
        // Client INVITE: 180, 486 (Timer D); 200 (Timer M); no answer (Timer B); deferred CANCEL.
        let (_, inv) = start_invite(&mut l, t, f);
        l.handle_message(t, reply(&inv, 180, Some("b")), f);
        l.handle_message(t, reply(&inv, 486, Some("b")), f);
        drain(&mut l);
        let (_, inv) = start_invite(&mut l, t, f);
        l.handle_message(t, reply(&inv, 200, Some("b")), f);
        drain(&mut l);
        start_invite(&mut l, t, f);
        let (id, inv) = start_invite(&mut l, t, f);
        l.cancel(t, id);
        l.handle_message(t, reply(&inv, 183, Some("b")), f);
        let (tx, _) = drain(&mut l);
        l.handle_message(t, reply(&tx[0], 200, Some("b")), f);
        l.handle_message(t, reply(&inv, 487, Some("b")), f);
        drain(&mut l);
        // Client non-INVITE answered (Timer K) and unanswered (Timer F).
        l.send_request(t, outgoing("OPTIONS"), f, SENT_BY);
        let (tx, _) = drain(&mut l);
        l.handle_message(t, reply(&tx[0], 200, Some("b")), f);
        l.send_request(t, outgoing("MESSAGE"), f, SENT_BY);
        drain(&mut l);
        // Server INVITEs: 486 + ACK (Timer I), 200 + ACK (Timer L), CANCEL + 487, no ACK (H).
        for (k, code) in [(0, 486), (1, 200), (2, 487), (3, 603)] {
            let call = format!("leak-{i}-{k}");
            let branch = format!("z9hG4bKleak{i}x{k}");
            let invite = request_in("INVITE", &via(&branch), &call, None, "1 INVITE");
            l.handle_message(t, invite.clone(), f);
            let id = received(&drain(&mut l).1);
            if code == 487 {
                let cancel = request_in("CANCEL", &via(&branch), &call, None, "1 CANCEL");
                l.handle_message(t, cancel, f);
            }
            l.respond(t, id, invite.response_to(code, "X", Some("s")));
            if code != 603 {
                let ack_branch = if code == 200 { format!("{branch}a") } else { branch };
                let ack = request_in("ACK", &via(&ack_branch), &call, Some("s"), "1 ACK");
                l.handle_message(t, ack, f);
            }
            drain(&mut l);
        }
        // Server non-INVITE.
        let call = format!("leak-{i}-opt");
        let options =
            request_in("OPTIONS", &via(&format!("z9hG4bKo{i}")), &call, None, "1 OPTIONS");
        l.handle_message(t, options.clone(), f);
        let id = received(&drain(&mut l).1);
        l.respond(t, id, options.response_to(200, "OK", Some("s")));
        drain(&mut l);
    }
    assert!(!l.is_empty());
    run(&mut l, t0, 200_000);
    drain(&mut l);
    assert_eq!(l.len(), 0);
    assert_eq!(l.poll_timeout(), None);
    assert_eq!(l.timers.len(), 0);
    assert!(l.server.is_empty() && l.merged.is_empty());
    assert!(l.accepted.is_empty() && l.cancels.is_empty());
    assert_eq!(l.slab.free.len(), l.slab.slots.len());
}

#[test]
fn stale_timer_entries_do_not_pile_up() {
    let t0 = Instant::now();
    let mut l = layer();
    // A live Timer A on top keeps stale entries below from being popped at the top.
    start_invite(&mut l, t0, udp());
    // Each transaction ends at once (TCP, Timer K = 0) and leaves its Timer F entry behind.
    for _ in 0..10_000 {
        l.send_request(t0, outgoing("OPTIONS"), tcp(), SENT_BY);
        let (tx, _) = drain(&mut l);
        l.handle_message(t0, reply(&tx[0], 200, Some("b")), tcp());
        drain(&mut l);
    }
    assert_eq!(l.len(), 1);
    let n = l.timers.len();
    assert!(n <= 70, "heap holds {n} entries");
    assert_eq!(l.poll_timeout(), Some((ms(t0, 500), TimerName::A)));
}

#[test]
fn transmits_beyond_the_queue_cap_are_dropped_and_counted() {
    let mut l = layer();
    for _ in 0..=MAX_QUEUED_TRANSMITS {
        l.send_stateless(udp(), Bytes::from_static(b"x"));
    }
    assert_eq!(l.dropped_transmits(), 1);
    assert_eq!(drain(&mut l).0.len(), MAX_QUEUED_TRANSMITS);
}

#[test]
fn every_new_request_is_sent_exactly_once() {
    for method in ["INVITE", "BYE", "OPTIONS", "INFO", "ACK"] {
        for f in [udp(), tcp()] {
            let mut l = layer();
            let t0 = Instant::now();
            l.send_request(t0, outgoing(method), f, "sbc.example:5060");
            let (tx, _) = drain(&mut l);
            assert_eq!(tx.len(), 1, "{method} over {:?} sent {} times", f.transport, tx.len());
        }
    }
}
