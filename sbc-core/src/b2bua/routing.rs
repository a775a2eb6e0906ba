//! Route selection and number rewriting, from the validated config.

use std::net::IpAddr;

use crate::config::{Config, ListenerId, RewriteConfig, RouteConfig, Side, TrunkId};

/// Where a new dialog came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// An access-side listener; any source.
    Access(ListenerId),
    /// A recognised trunk on a trunk-side listener.
    Trunk(ListenerId, TrunkId),
}

impl Origin {
    /// The listener the request came in on.
    pub fn listener(&self) -> ListenerId {
        match *self {
            Origin::Access(l) | Origin::Trunk(l, _) => l,
        }
    }

    /// The inbound trunk, if any.
    pub fn trunk(&self) -> Option<TrunkId> {
        match *self {
            Origin::Access(_) => None,
            Origin::Trunk(_, t) => Some(t),
        }
    }
}

/// Classifies a source: on trunk-side listeners only configured trunk sources are accepted.
pub fn classify(config: &Config, listener: ListenerId, source: IpAddr) -> Option<Origin> {
    let l = config.listeners.get(listener.0)?;
    match l.side {
        Side::Access => Some(Origin::Access(listener)),
        Side::Trunk => config
            .trunks
            .iter()
            .enumerate()
            .find(|(_, t)| t.listener == listener && t.sources.iter().any(|n| n.contains(source)))
            .map(|(i, _)| Origin::Trunk(listener, TrunkId(i))),
    }
}

/// The first route whose conditions all hold.
pub fn select<'c>(
    config: &'c Config,
    origin: Origin,
    user: Option<&str>,
    domain: Option<&str>,
) -> Option<(usize, &'c RouteConfig)> {
    config.routes.iter().enumerate().find(|(_, r)| {
        let m = &r.matcher;
        m.listener.is_none_or(|l| l == origin.listener())
            && m.trunk.is_none_or(|t| Some(t) == origin.trunk())
            && m.prefix.as_deref().is_none_or(|p| user.is_some_and(|u| u.starts_with(p)))
            && m.user_regex.as_ref().is_none_or(|re| user.is_some_and(|u| re.is_match(u)))
            && m.domain.as_deref().is_none_or(|d| domain.is_some_and(|h| h.eq_ignore_ascii_case(d)))
    })
}

/// Applies strip, prepend and regex, in that order.
pub fn rewrite(rule: &RewriteConfig, user: &str) -> String {
    let stripped: String = user.chars().skip(rule.strip).collect();
    let prefixed = format!("{}{}", rule.prepend, stripped);
    match &rule.regex {
        Some((re, replacement)) => re.replace(&prefixed, replacement.as_str()).into_owned(),
        None => prefixed,
    }
}

#[cfg(test)]
mod tests {
    use regex::Regex;

    use super::*;

    #[test]
    fn rewrite_order_is_strip_prepend_regex() {
        let rule = RewriteConfig {
            strip: 1,
            prepend: "+44".into(),
            regex: Some((Regex::new(r"^\+44(\d+)$").unwrap(), "0044$1".into())),
        };
        assert_eq!(rewrite(&rule, "0123"), "0044123");
        assert_eq!(rewrite(&RewriteConfig::default(), "123"), "123");
    }
}
