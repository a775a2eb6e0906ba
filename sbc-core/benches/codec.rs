//! SIP codec hot path: a typical INVITE with SDP (about 900 octets, 12 header fields) parsed, and
//! parsed and serialized again, as the B2BUA does for each request it relays. The target is under
//! 5 us for parse + serialize.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sbc_core::sip::{Message, parse};

const INVITE: &[u8] = b"INVITE sip:+15551234567@sbc.example.com:5060;user=phone SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.51.100.10:5060;branch=z9hG4bK776asdhds-8274;rport\r\n\
Max-Forwards: 70\r\n\
To: <sip:+15551234567@sbc.example.com;user=phone>\r\n\
From: \"Alice Smith\" <sip:+15557654321@carrier.example.net;user=phone>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710-1f2e3d4c@pc33.carrier.example.net\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:+15557654321@198.51.100.10:5060;transport=udp>\r\n\
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, PRACK, UPDATE, INFO, REFER, NOTIFY\r\n\
Supported: 100rel, timer, replaces, norefersub\r\n\
Session-Expires: 1800;refresher=uac\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 337\r\n\
\r\n\
v=0\r\n\
o=- 2890844526 2890844526 IN IP4 198.51.100.10\r\n\
s=-\r\n\
c=IN IP4 198.51.100.10\r\n\
t=0 0\r\n\
m=audio 49170 RTP/AVP 0 8 18 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:18 G729/8000\r\n\
a=fmtp:18 annexb=no\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=maxptime:40\r\n\
a=sendrecv\r\n\
a=rtcp:49171 IN IP4 198.51.100.10\r\n";

/// A received datagram: a buffer of its own, as the transport hands it over (not a static, whose
/// slices would cost no reference counting).
fn datagram() -> Bytes {
    Bytes::copy_from_slice(INVITE)
}

fn parse_invite() -> Message {
    parse(datagram()).expect("the benchmark INVITE parses")
}

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("sip_invite_sdp");
    g.throughput(Throughput::Bytes(INVITE.len() as u64));
    g.bench_function("copy_datagram", |b| b.iter(datagram));
    g.bench_function("parse", |b| b.iter(|| parse(black_box(datagram()))));
    g.bench_function("parse_serialize", |b| {
        let mut out = Vec::with_capacity(2048);
        b.iter(|| {
            let m = parse(black_box(datagram())).expect("parses");
            out.clear();
            m.write_to(&mut out);
            black_box(out.len())
        })
    });
    g.bench_function("parse_to_bytes", |b| {
        b.iter(|| {
            let m = parse(black_box(datagram())).expect("parses");
            black_box(m.to_bytes())
        })
    });
    g.bench_function("parse_typed_views", |b| {
        // What the B2BUA reads from each request it receives.
        b.iter(|| {
            let m = parse(black_box(datagram())).expect("parses");
            let via = m.top_via().expect("Via");
            let from = m.from().expect("From");
            let to = m.to().expect("To");
            let cseq = m.cseq().expect("CSeq");
            black_box((
                via.branch(),
                from.tag(),
                to.tag(),
                cseq.seq,
                m.contact(),
                m.call_id().cloned(),
            ))
        })
    });
    let m = parse_invite();
    g.bench_function("serialize", |b| {
        let mut out = Vec::with_capacity(2048);
        b.iter(|| {
            out.clear();
            black_box(&m).write_to(&mut out);
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
