//! One leg's dialog state (RFC 3261 section 12) and the requests built from it.

use bytes::Bytes;

use crate::sip::{Header, HeaderName, Message, Method, NameAddr, Uri};
use crate::transport::Flow;

/// The dialog of one leg, seen from the SBC. Header values are stored exactly as the SBC must write
/// them in requests it sends on this leg.
#[derive(Debug, Clone)]
pub struct Dialog {
    /// Call-ID of this leg.
    pub call_id: Bytes,
    /// Our tag on this leg.
    pub local_tag: Bytes,
    /// The peer's tag, once known.
    pub remote_tag: Option<Bytes>,
    /// From header value for requests we send (our URI with our tag).
    pub from_hdr: Bytes,
    /// To header value for requests we send (the peer's URI, with its tag once known).
    pub to_hdr: Bytes,
    /// Next CSeq number we use.
    pub local_cseq: u32,
    /// Highest CSeq number received from the peer.
    pub remote_cseq: Option<u32>,
    /// Request-URI for in-dialog requests (the peer's Contact).
    pub remote_target: Uri,
    /// Route set for in-dialog requests, in the order to write them.
    pub route_set: Vec<Bytes>,
    /// Where requests on this leg go.
    pub flow: Flow,
    /// Our Contact header value on this leg.
    pub contact: Bytes,
    /// Our Via sent-by on this leg.
    pub sent_by: String,
}

impl Dialog {
    /// Builds a request on this dialog with a new CSeq number (or `cseq` for ACK/CANCEL).
    pub fn request(&mut self, method: Method, cseq: Option<u32>) -> Message {
        let seq = match cseq {
            Some(s) => s,
            None => {
                self.local_cseq = self.local_cseq.wrapping_add(1);
                self.local_cseq
            }
        };
        let mut m = Message::request(method.clone(), self.remote_target.clone());
        m.headers.reserve(10);
        m.push(HeaderName::MaxForwards, Bytes::from_static(b"70"));
        m.push(HeaderName::From, self.from_hdr.clone());
        m.push(HeaderName::To, self.to_hdr.clone());
        m.push(HeaderName::CallId, self.call_id.clone());
        m.push_fmt(HeaderName::CSeq, format_args!("{seq} {method}"));
        for r in &self.route_set {
            m.push(HeaderName::Route, r.clone());
        }
        if !matches!(method, Method::Ack | Method::Cancel | Method::Bye) {
            m.push(HeaderName::Contact, self.contact.clone());
        }
        m
    }

    /// Top Via for an ACK to a 2xx: its own branch (RFC 3261 section 13.2.2.4), unpredictable
    /// thanks to `salt` from the engine's RNG.
    pub fn ack_via(&self, salt: u64) -> Header {
        let transport = self.flow.transport.via_name();
        Header::new(
            HeaderName::Via,
            format!(
                "SIP/2.0/{transport} {};branch=z9hG4bK{salt:016x}{:08x}",
                self.sent_by, self.local_cseq
            ),
        )
    }

    /// Learns the peer's tag, target and route set from a response to our dialog-forming request
    /// (UAC side, RFC 3261 section 12.1.2): the route set is the Record-Route reversed.
    pub fn learn_from_response(&mut self, response: &Message) {
        if let Ok(to) = response.to()
            && let Some(tag) = to.tag()
        {
            if self.remote_tag.as_ref() != Some(&tag) {
                self.to_hdr = response.header(&HeaderName::To).cloned().unwrap_or_default();
            }
            self.remote_tag = Some(tag);
        }
        if let Some(Ok(contact)) = response.contact() {
            self.remote_target = contact.uri;
        }
        if let Ok(rr) = response.record_route()
            && !rr.is_empty()
        {
            self.route_set = rr.iter().rev().map(name_addr_value).collect();
        }
    }

    /// Learns the peer's target and route set from its dialog-forming request (UAS side, RFC 3261
    /// section 12.1.1): the route set is the Record-Route in order.
    pub fn learn_from_request(&mut self, request: &Message) {
        if let Some(Ok(contact)) = request.contact() {
            self.remote_target = contact.uri;
        }
        if let Ok(rr) = request.record_route() {
            self.route_set = rr.iter().map(name_addr_value).collect();
        }
    }

    /// Updates the remote target from a target-refresh request or response (re-INVITE, UPDATE).
    pub fn refresh_target(&mut self, message: &Message) {
        if let Some(Ok(contact)) = message.contact() {
            self.remote_target = contact.uri;
        }
    }
}

fn name_addr_value(n: &NameAddr) -> Bytes {
    let mut v = Vec::with_capacity(n.uri.raw.len() + n.params.len() + 3);
    v.push(b'<');
    v.extend_from_slice(&n.uri.raw);
    v.push(b'>');
    if !n.params.is_empty() {
        v.push(b';');
        v.extend_from_slice(&n.params);
    }
    Bytes::from(v)
}
