//! Who a packet is from: the key sources are tracked by, and the CIDR lists they are matched
//! against.
//!
//! Rate limits, offences and bans are keyed by [`SourceKey`]: the IPv4 address, or the IPv6 /64
//! (one subscriber's LAN gets a /64, so per-address keys would let one host rotate through
//! 2^64 addresses). Allow and deny lists are matched on the full address in a prefix trie
//! (longest prefix wins), which stays fast with a million prefixes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use prefix_trie::PrefixMap;

use crate::config::AccessLists;

/// The unit a source is rate-limited, counted and banned by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceKey {
    /// One IPv4 address.
    V4(Ipv4Addr),
    /// The upper 64 bits of an IPv6 address.
    V6(u64),
}

impl SourceKey {
    /// The key of an address. IPv4-mapped IPv6 addresses (dual-stack sockets) count as IPv4.
    pub fn of(ip: IpAddr) -> SourceKey {
        match ip.to_canonical() {
            IpAddr::V4(v4) => SourceKey::V4(v4),
            IpAddr::V6(v6) => SourceKey::V6((v6.to_bits() >> 64) as u64),
        }
    }

    /// The network this key covers: a /32 or a /64.
    pub fn network(self) -> IpNetwork {
        match self {
            SourceKey::V4(v4) => IpNetwork::V4(Ipv4Network::from(v4)),
            SourceKey::V6(hi) => {
                let addr = Ipv6Addr::from_bits(u128::from(hi) << 64);
                // A /64 is always a valid IPv6 prefix length.
                match Ipv6Network::new(addr, 64) {
                    Ok(n) => IpNetwork::V6(n),
                    Err(_) => IpNetwork::V6(Ipv6Network::from(addr)),
                }
            }
        }
    }

    /// Parses the form [`SourceKey::network`] displays: `a.b.c.d/32` or `x:y:z:w::/64`.
    pub(crate) fn parse(s: &str) -> Option<SourceKey> {
        match s.parse::<IpNetwork>().ok()? {
            IpNetwork::V4(n) if n.prefix() == 32 => Some(SourceKey::V4(n.ip())),
            IpNetwork::V6(n) if n.prefix() == 64 => Some(SourceKey::of(IpAddr::V6(n.ip()))),
            _ => None,
        }
    }
}

/// What a list says about an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listed {
    Allow,
    Deny,
}

/// One pair of allow/deny lists, as two tries (one per address family).
#[derive(Debug, Default)]
pub(crate) struct Lists {
    v4: PrefixMap<Ipv4Network, Listed>,
    v6: PrefixMap<Ipv6Network, Listed>,
}

impl Lists {
    pub(crate) fn new(cfg: &AccessLists) -> Lists {
        let mut lists = Lists::default();
        // Deny goes in last so a prefix in both lists is denied.
        for (nets, what) in [(&cfg.allow, Listed::Allow), (&cfg.deny, Listed::Deny)] {
            for net in nets {
                lists.insert(*net, what);
            }
        }
        lists
    }

    fn insert(&mut self, net: IpNetwork, what: Listed) {
        match net {
            IpNetwork::V4(n) => {
                self.v4.insert(n, what);
            }
            IpNetwork::V6(n) => {
                self.v6.insert(n, what);
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// The longest matching entry for an address.
    pub(crate) fn lookup(&self, ip: IpAddr) -> Option<Listed> {
        match ip.to_canonical() {
            IpAddr::V4(v4) => self.v4.get_lpm(&Ipv4Network::from(v4)).map(|(_, l)| *l),
            IpAddr::V6(v6) => self.v6.get_lpm(&Ipv6Network::from(v6)).map(|(_, l)| *l),
        }
    }

    /// Whether an allow entry covers or lies inside the network of `key`: such a key must never
    /// be banned, or banning a /64 would shut out a trusted host inside it.
    pub(crate) fn allows_any_of(&self, key: SourceKey) -> bool {
        match key.network() {
            IpNetwork::V4(n) => {
                self.v4.cover_values(&n).any(|l| *l == Listed::Allow)
                    || self.v4.children(&n).any(|(_, l)| *l == Listed::Allow)
            }
            IpNetwork::V6(n) => {
                self.v6.cover_values(&n).any(|l| *l == Listed::Allow)
                    || self.v6.children(&n).any(|(_, l)| *l == Listed::Allow)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn lists(allow: &[&str], deny: &[&str]) -> Lists {
        Lists::new(&AccessLists {
            allow: allow.iter().map(|s| s.parse().unwrap()).collect(),
            deny: deny.iter().map(|s| s.parse().unwrap()).collect(),
        })
    }

    #[test]
    fn ipv6_is_keyed_by_64() {
        let a = SourceKey::of(ip("2001:db8:1:2::1"));
        let b = SourceKey::of(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"));
        let c = SourceKey::of(ip("2001:db8:1:3::1"));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.network().to_string(), "2001:db8:1:2::/64");
        assert_eq!(SourceKey::parse("2001:db8:1:2::/64"), Some(a));
    }

    #[test]
    fn ipv4_is_keyed_by_address_and_mapped_addresses_are_ipv4() {
        let a = SourceKey::of(ip("192.0.2.1"));
        assert_eq!(a, SourceKey::of(ip("::ffff:192.0.2.1")));
        assert_ne!(a, SourceKey::of(ip("192.0.2.2")));
        assert_eq!(a.network().to_string(), "192.0.2.1/32");
        assert_eq!(SourceKey::parse("192.0.2.1/32"), Some(a));
        assert_eq!(SourceKey::parse("192.0.2.0/24"), None);
        assert_eq!(SourceKey::parse("garbage"), None);
    }

    #[test]
    fn longest_prefix_decides() {
        let l = lists(&["192.0.2.0/24", "10.0.0.0/8"], &["0.0.0.0/0", "10.6.6.6/32", "::/0"]);
        assert_eq!(l.lookup(ip("192.0.2.7")), Some(Listed::Allow));
        assert_eq!(l.lookup(ip("198.51.100.1")), Some(Listed::Deny));
        assert_eq!(l.lookup(ip("10.1.1.1")), Some(Listed::Allow));
        assert_eq!(l.lookup(ip("10.6.6.6")), Some(Listed::Deny));
        assert_eq!(l.lookup(ip("2001:db8::1")), Some(Listed::Deny));
        assert_eq!(lists(&[], &[]).lookup(ip("10.1.1.1")), None);
    }

    #[test]
    fn a_prefix_in_both_lists_is_denied() {
        let l = lists(&["192.0.2.0/24"], &["192.0.2.0/24"]);
        assert_eq!(l.lookup(ip("192.0.2.1")), Some(Listed::Deny));
    }

    #[test]
    fn allow_inside_or_around_a_key_protects_it() {
        let l = lists(&["2001:db8:0:1::5/128", "192.0.2.0/24"], &[]);
        assert!(l.allows_any_of(SourceKey::of(ip("2001:db8:0:1::99"))));
        assert!(!l.allows_any_of(SourceKey::of(ip("2001:db8:0:2::99"))));
        assert!(l.allows_any_of(SourceKey::of(ip("192.0.2.9"))));
        assert!(!l.allows_any_of(SourceKey::of(ip("192.0.3.9"))));
    }
}
