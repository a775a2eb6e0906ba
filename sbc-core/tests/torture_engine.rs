//! Every RFC 4475 / RFC 5118 message fed as a datagram to a running engine shard, which must answer
//! (or stay silent) as the table in `torture_table.rs` says. The codec side of the same table is
//! checked in `torture.rs`.

#[path = "torture_table.rs"]
mod torture_table;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sbc_core::b2bua::Engine;
use sbc_core::config::{
    Config, HeaderPolicy, ListenerConfig, ListenerId, MediaConfig, MediaOptions, RewriteConfig,
    RouteConfig, RouteMatch, Side, Target, TcpConfig, TimerConfig, Transport, TrunkConfig, TrunkId,
};
use sbc_core::transport::Flow;
use torture_table::{Rfc, cases, file_bytes, wire};

fn config() -> Config {
    Config {
        timers: TimerConfig::default(),
        shards: 1,
        max_message_size: 65_535,
        max_headers: 128,
        drain_grace: Duration::from_secs(1),
        metrics: None,
        records: None,
        media: MediaConfig::default(),
        capture: Default::default(),
        policy: Default::default(),
        registrars: Vec::new(),
        tcp: TcpConfig { idle_timeout: Duration::from_secs(60), max_connections: 16 },
        listeners: vec![ListenerConfig {
            name: "access".into(),
            side: Side::Access,
            addr: "127.0.0.1:5060".parse().unwrap(),
            advertise: "127.0.0.1".parse().unwrap(),
            media_bind: "127.0.0.1".parse().unwrap(),
            media_advertise: "127.0.0.1".parse().unwrap(),
            media: MediaOptions::default(),
            transports: vec![Transport::Udp],
            tls: None,
            limits: None,
        }],
        trunks: vec![TrunkConfig {
            name: "t".into(),
            listener: ListenerId(0),
            targets: vec![Target {
                addr: "127.0.0.20:5080".parse().unwrap(),
                transport: Transport::Udp,
            }],
            sources: vec![],
            options: None,
            rewrite: RewriteConfig::default(),
            headers: HeaderPolicy::default(),
            media: MediaOptions::default(),
            tls: None,
            dtmf: Default::default(),
        }],
        routes: vec![RouteConfig {
            name: "all".into(),
            matcher: RouteMatch::default(),
            trunks: vec![TrunkId(0)],
            ring_timeout: Duration::from_secs(30),
        }],
    }
}

/// Statuses that mean "refused": a message the table says is processed normally must get none.
/// (481 is not one: it is the normal answer to a request for a dialog this SBC does not hold.)
const REFUSALS: &[u16] = &[400, 406, 415, 416, 420, 482, 483, 488, 500, 505, 513];

fn status_of(data: &[u8]) -> Option<u16> {
    let rest = data.strip_prefix(b"SIP/2.0 ")?;
    std::str::from_utf8(rest.get(..3)?).ok()?.parse().ok()
}

#[test]
fn engine_answers_every_torture_message_as_the_rfc_says() {
    let source = "192.0.2.1:5060".parse().unwrap();
    let mut failures = Vec::new();
    for case in cases() {
        let bytes = match case.rfc {
            Rfc::Rfc4475 => file_bytes(&case),
            Rfc::Rfc5118 => wire(&file_bytes(&case)),
        };
        // A fresh shard per message: one case must not influence the next.
        let mut engine = Engine::new(Arc::new(config()), 0, 7);
        let flow = Flow { listener: ListenerId(0), transport: Transport::Udp, remote: source };
        engine.handle_datagram(Instant::now(), flow, Bytes::from(bytes));
        let mut to_source = Vec::new();
        let mut forwarded = 0;
        while let Some(t) = engine.poll_transmit() {
            if t.flow.remote == source {
                // An error response echoes the request's own (possibly broken) headers, as RFC
                // 3261 section 8.2.6.2 asks, so only the status line is read here.
                match status_of(&t.data) {
                    Some(code) => to_source.push(code),
                    None => failures.push(format!("{}: the SBC sent a request back", case.name)),
                }
            } else {
                forwarded += 1;
            }
        }
        let finals: Vec<u16> = to_source.iter().copied().filter(|c| *c >= 200).collect();
        match case.engine_status {
            Some(code) if !finals.contains(&code) => failures.push(format!(
                "{} ({}): expected {code}, sent {to_source:?}",
                case.name, case.section
            )),
            Some(_) => {
                if forwarded > 0 {
                    failures.push(format!("{}: refused but also forwarded", case.name));
                }
            }
            None => {
                if let Some(c) = finals.iter().find(|c| REFUSALS.contains(c)) {
                    failures.push(format!(
                        "{} ({}): must be processed, got {c}",
                        case.name, case.section
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} case(s) wrong:\n{}", failures.len(), failures.join("\n"));
}
