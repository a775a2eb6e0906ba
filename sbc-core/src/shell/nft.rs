//! Kernel enforcement of bans: an nftables table whose sets hold the banned sources, with a
//! drop rule in front of the SBC's SIP ports (`policy.nftables`).
//!
//! Runs on a thread of its own, fed by a bounded channel: applying a batch forks the `nft`
//! binary (milliseconds), which must never happen on a signalling or receive task. Changes that
//! arrive together are applied as one batch (nft applies a batch atomically). A ban is an element
//! with a timeout, so the kernel forgets it when the userspace ban ends without being told.
//!
//! At start the table is created afresh (`table inet T { set S; set S6; chain input }`), so a
//! previous run's leftovers go; the bans restored from the state file arrive right after as
//! changes. Without `nft` or CAP_NET_ADMIN the first batch fails: that is logged once and the
//! thread ends; bans keep working in userspace (the pre-parse check drops their packets).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::time::Instant;

use ipnetwork::IpNetwork;
use metrics::Counter;
use nftables::batch::Batch;
use nftables::expr::{Elem, Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField};
use nftables::expr::{Prefix, SetItem};
use nftables::helper::{NftablesError, apply_ruleset};
use nftables::schema::{Chain, Element, NfCmd, NfListObject, Nftables, Rule, Set, SetFlag};
use nftables::schema::{SetType, SetTypeValue, Table};
use nftables::stmt::{Counter as NftCounter, Drop, Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};
use sbc_policy::BanChange;

use crate::config::NftablesConfig;

/// Changes waiting for the thread; beyond it they are dropped (and counted): the userspace ban
/// still holds, only the kernel copy misses it.
const QUEUE: usize = 8192;
/// Most changes applied in one `nft` run.
const BATCH: usize = 2048;
/// Priority of the chain on the prerouting hook: before conntrack (-200), so a banned flood
/// costs no connection tracking state.
const PRIORITY: i32 = -300;

/// The handle the policy task feeds.
pub(crate) struct Kernel {
    tx: SyncSender<BanChange>,
    dropped: Counter,
}

impl Kernel {
    /// Creates the table and starts the thread; `ports` are the SBC's SIP ports.
    pub(crate) fn start(cfg: &NftablesConfig, ports: Vec<u16>) -> Kernel {
        let (tx, rx) = sync_channel(QUEUE);
        let cfg = cfg.clone();
        let spawned = std::thread::Builder::new()
            .name("sbc-nftables".into())
            .spawn(move || run(&cfg, &ports, rx));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the nftables thread; bans stay in userspace");
        }
        Kernel { tx, dropped: metrics::counter!("sbc_nftables_changes_dropped_total") }
    }

    /// Queues a change; `false` once the thread has ended (nft unusable): stop sending.
    pub(crate) fn push(&self, change: BanChange) -> bool {
        match self.tx.try_send(change) {
            Ok(()) => true,
            Err(std::sync::mpsc::TrySendError::Full(_)) => {
                self.dropped.increment(1);
                true
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => false,
        }
    }
}

fn run(cfg: &NftablesConfig, ports: &[u16], rx: Receiver<BanChange>) {
    if let Err(e) = apply_ruleset(&setup(cfg, ports)) {
        tracing::warn!(
            error = %short(&e),
            "nftables unavailable (needs the nft binary and CAP_NET_ADMIN): bans are enforced in \
             userspace only"
        );
        return;
    }
    tracing::info!(table = %cfg.table, set = %cfg.set, ?ports, "nftables: banned sources dropped in the kernel");
    let ok = metrics::counter!("sbc_nftables_batches_total", "result" => "ok");
    let failed = metrics::counter!("sbc_nftables_batches_total", "result" => "error");
    let elements = metrics::counter!("sbc_nftables_elements_added_total");
    // What we believe the kernel holds, to replace an element on re-ban (nft `add` keeps an
    // existing element's timeout) and delete only what is there.
    let mut present: HashMap<IpNetwork, Instant> = HashMap::new();
    while let Ok(first) = rx.recv() {
        let mut changes = vec![first];
        while changes.len() < BATCH {
            match rx.try_recv() {
                Ok(c) => changes.push(c),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        let now = Instant::now();
        present.retain(|_, until| *until > now);
        let cmds: Vec<Vec<NfCmd<'static>>> =
            changes.iter().map(|c| commands(cfg, c, &present)).collect();
        let mut batch = Batch::new();
        for cmd in cmds.iter().flatten() {
            batch.add_cmd(cmd.clone());
        }
        let applied = match apply_ruleset(&batch.to_nftables()) {
            Ok(()) => vec![true; changes.len()],
            Err(e) => {
                // One stale delete fails the whole batch: retry change by change.
                tracing::debug!(error = %short(&e), "nftables batch failed; applying one by one");
                cmds.iter()
                    .map(|c| {
                        let mut one = Batch::new();
                        c.iter().for_each(|cmd| one.add_cmd(cmd.clone()));
                        apply_ruleset(&one.to_nftables()).is_ok()
                    })
                    .collect()
            }
        };
        for (change, done) in changes.iter().zip(applied) {
            if !done {
                failed.increment(1);
                continue;
            }
            ok.increment(1);
            match change {
                BanChange::Added { network, timeout } => {
                    elements.increment(1);
                    present.insert(*network, now + *timeout);
                }
                BanChange::Removed { network } => {
                    present.remove(network);
                }
            }
        }
    }
}

/// `table inet T` recreated empty, with the two sets and the drop rules.
fn setup(cfg: &NftablesConfig, ports: &[u16]) -> Nftables<'static> {
    let table = || Table { family: NfFamily::INet, name: cfg.table.clone().into(), handle: None };
    let mut b = Batch::new();
    // add + delete + add: the table exists (empty) whether or not it did before.
    b.add(NfListObject::Table(table()));
    b.delete(NfListObject::Table(table()));
    b.add(NfListObject::Table(table()));
    for (name, set_type, interval) in [
        (cfg.set.clone(), SetType::Ipv4Addr, false),
        (format!("{}6", cfg.set), SetType::Ipv6Addr, true),
    ] {
        let mut flags = std::collections::HashSet::from([SetFlag::Timeout]);
        if interval {
            // IPv6 bans are /64 prefixes.
            flags.insert(SetFlag::Interval);
        }
        b.add(NfListObject::Set(Box::new(Set {
            family: NfFamily::INet,
            table: cfg.table.clone().into(),
            name: name.into(),
            set_type: SetTypeValue::Single(set_type),
            flags: Some(flags),
            ..Set::default()
        })));
    }
    b.add(NfListObject::Chain(Chain {
        family: NfFamily::INet,
        table: cfg.table.clone().into(),
        name: "input".into(),
        _type: Some(NfChainType::Filter),
        hook: Some(NfHook::Prerouting),
        prio: Some(PRIORITY),
        policy: Some(NfChainPolicy::Accept),
        ..Chain::default()
    }));
    for (proto, set) in [("ip", cfg.set.clone()), ("ip6", format!("{}6", cfg.set))] {
        let is = |left, right| Statement::Match(Match { left, right, op: Operator::EQ });
        let field = |protocol: &str, field: &str| {
            Expression::Named(NamedExpression::Payload(Payload::PayloadField(PayloadField {
                protocol: protocol.to_owned().into(),
                field: field.to_owned().into(),
            })))
        };
        let set_of = |items: Vec<Expression<'static>>| {
            Expression::Named(NamedExpression::Set(
                items.into_iter().map(SetItem::Element).collect(),
            ))
        };
        let l4 = Expression::Named(NamedExpression::Meta(Meta { key: MetaKey::L4proto }));
        let protos =
            set_of(vec![Expression::String("udp".into()), Expression::String("tcp".into())]);
        let dports = set_of(ports.iter().map(|p| Expression::Number(u32::from(*p))).collect());
        let expr = vec![
            is(l4, protos),
            is(field("th", "dport"), dports),
            is(field(proto, "saddr"), Expression::String(format!("@{set}").into())),
            Statement::Counter(NftCounter::Anonymous(None)),
            Statement::Drop(Some(Drop {})),
        ];
        b.add(NfListObject::Rule(Rule {
            family: NfFamily::INet,
            table: cfg.table.clone().into(),
            chain: "input".into(),
            expr: expr.into(),
            ..Rule::default()
        }));
    }
    b.to_nftables()
}

/// The commands of one change.
fn commands(
    cfg: &NftablesConfig,
    change: &BanChange,
    present: &HashMap<IpNetwork, Instant>,
) -> Vec<NfCmd<'static>> {
    let (network, timeout) = match change {
        BanChange::Added { network, timeout } => (*network, Some(*timeout)),
        BanChange::Removed { network } => (*network, None),
    };
    let set = match network {
        IpNetwork::V4(_) => cfg.set.clone(),
        IpNetwork::V6(_) => format!("{}6", cfg.set),
    };
    let value = match network {
        IpNetwork::V4(n) => Expression::String(n.ip().to_string().into()),
        IpNetwork::V6(n) => Expression::Named(NamedExpression::Prefix(Prefix {
            addr: Box::new(Expression::String(IpAddr::V6(n.network()).to_string().into())),
            len: u32::from(n.prefix()),
        })),
    };
    let element = |elem: Expression<'static>| {
        NfListObject::Element(Element {
            family: NfFamily::INet,
            table: cfg.table.clone().into(),
            name: set.clone().into(),
            elem: vec![elem].into(),
        })
    };
    let mut cmds = Vec::with_capacity(2);
    if present.contains_key(&network) {
        cmds.push(NfCmd::Delete(element(value.clone())));
    }
    if let Some(timeout) = timeout {
        // Whole seconds, rounded up: the kernel must not let a source in before we do.
        let secs = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
        let elem = Elem {
            val: Box::new(value),
            timeout: Some(u32::try_from(secs.max(1)).unwrap_or(u32::MAX)),
            expires: None,
            comment: None,
            counter: None,
        };
        cmds.push(NfCmd::Add(element(Expression::Named(NamedExpression::Elem(elem)))));
    }
    cmds
}

/// The first line of an nft failure (its stderr names the problem).
fn short(e: &NftablesError) -> String {
    match e {
        NftablesError::NftFailed { stderr, .. } => {
            stderr.lines().next().unwrap_or("nft failed").to_owned()
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn cfg() -> NftablesConfig {
        NftablesConfig { table: "sbc".into(), set: "banned".into() }
    }

    #[test]
    fn setup_batch_names_the_table_sets_chain_and_ports() {
        let json = serde_json::to_string(&setup(&cfg(), &[5060, 5070])).unwrap();
        for needle in [
            r#"{"delete":{"table":{"family":"inet","name":"sbc"}}}"#,
            r#""name":"banned","type":"ipv4_addr""#,
            r#""name":"banned6","type":"ipv6_addr""#,
            r#""hook":"prerouting","prio":-300"#,
            r#""right":"@banned6""#,
            r#"{"set":[5060,5070]}"#,
            r#"{"counter":null},{"drop":{}}"#,
        ] {
            assert!(json.contains(needle), "{needle} not in {json}");
        }
    }

    #[test]
    fn a_ban_is_an_element_with_a_timeout_and_a_re_ban_replaces_it() {
        let v4: IpNetwork = "192.0.2.7/32".parse().unwrap();
        let added = BanChange::Added { network: v4, timeout: Duration::from_millis(600_500) };
        let json = |cmds: Vec<NfCmd<'static>>| serde_json::to_string(&cmds).unwrap();
        let first = json(commands(&cfg(), &added, &HashMap::new()));
        assert_eq!(
            first,
            r#"[{"add":{"element":{"family":"inet","table":"sbc","name":"banned","elem":[{"elem":{"val":"192.0.2.7","timeout":601,"expires":null,"comment":null,"counter":null}}]}}}]"#
        );
        let present = HashMap::from([(v4, Instant::now() + Duration::from_secs(10))]);
        let again = json(commands(&cfg(), &added, &present));
        assert!(again.starts_with(r#"[{"delete":{"element""#), "{again}");
        let v6: IpNetwork = "2001:db8:0:7::/64".parse().unwrap();
        let six = json(commands(&cfg(), &BanChange::Removed { network: v6 }, &HashMap::new()));
        assert_eq!(six, "[]", "nothing to delete that is not there");
        let six = json(commands(
            &cfg(),
            &BanChange::Added { network: v6, timeout: Duration::from_secs(60) },
            &HashMap::new(),
        ));
        assert!(
            six.contains(r#""val":{"prefix":{"addr":"2001:db8:0:7::","len":64}},"timeout":60"#),
            "{six}"
        );
    }
}
