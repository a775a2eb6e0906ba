//! Transport-level addressing shared by the engine and the shells.

use std::net::SocketAddr;

use bytes::Bytes;

use crate::config::{ListenerId, Transport};

/// A path to or from a peer: the local listener, the transport and the remote address. For
/// connection-oriented transports the shell maps a flow to its connection (opening one if needed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    /// Local listener the message came in on or leaves through.
    pub listener: ListenerId,
    /// Transport.
    pub transport: Transport,
    /// Remote address.
    pub remote: SocketAddr,
}

impl Flow {
    /// Whether the transport delivers reliably (no SIP-level retransmissions, RFC 3261 17.1.1.2).
    pub fn is_reliable(&self) -> bool {
        !matches!(self.transport, Transport::Udp)
    }
}

/// Bytes to send on a flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub flow: Flow,
    /// One whole SIP message.
    pub data: Bytes,
}
