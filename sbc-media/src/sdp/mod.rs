//! SDP session descriptions (RFC 8866, which replaced RFC 4566): an owned model, a parser and a
//! writer.
//!
//! Contract:
//! - [`Sdp::parse`] never panics, on any bytes. It accepts CRLF or bare LF line ends (and CR CR
//!   LF), skips blank lines, and is lenient where real user agents differ from the grammar
//!   (session-level lines in any order, a missing `s=` or `t=`, an `m=` line without formats).
//!   It refuses what the negotiation cannot work with and returns a [`ParseError`] whose [`ParseError::reason`] is a
//!   short static text, fit for a `Warning` header of the 488 the core sends.
//! - Unknown attributes are kept verbatim and in order, so what the SBC does not understand
//!   crosses unchanged.
//! - [`Sdp`]'s `Display` (and [`Sdp::to_bytes`]) writes the lines in RFC 8866 §5 order with CRLF
//!   ends and no blank line after the last one (Chrome rejects a trailing empty line).
//! - Round trip: for any input that parses, writing and parsing again gives an equal [`Sdp`]
//!   (checked by a proptest and by the `sdp` fuzz target).
//!
//! The model is owned (`String`s): it is built once per offer or answer, never per packet.

mod parse;
mod write;

use std::fmt;
use std::net::IpAddr;

use bytes::Bytes;

/// A session description: the session-level lines, then the media descriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sdp {
    /// `o=`: who made the description, and its version.
    pub origin: Origin,
    /// `s=`: the session name (`-` when the input had none).
    pub session_name: String,
    /// `i=`: session information.
    pub information: Option<String>,
    /// `u=`: URI of a description of the session.
    pub uri: Option<String>,
    /// `e=` lines.
    pub emails: Vec<String>,
    /// `p=` lines.
    pub phones: Vec<String>,
    /// Session-level `c=`: the default for media without their own.
    pub connection: Option<Connection>,
    /// Session-level `b=` lines.
    pub bandwidths: Vec<Bandwidth>,
    /// `t=` lines, each with its `r=` lines (`t=0 0` when the input had none).
    pub timings: Vec<Timing>,
    /// `z=`: time zone adjustments for `r=`, verbatim.
    pub time_zones: Option<String>,
    /// Session-level `k=` (obsolete), verbatim.
    pub key: Option<String>,
    /// Session-level `a=` lines, in input order.
    pub attributes: Vec<Attribute>,
    /// `m=` sections, in input order.
    pub media: Vec<Media>,
}

/// The `o=` line: `<username> <sess-id> <sess-version> <nettype> <addrtype> <address>`.
///
/// Session id and version stay text: peers send values beyond 64 bits, and the SBC only ever
/// writes its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// User name, `-` when none.
    pub username: String,
    /// Session id.
    pub session_id: String,
    /// Session version (RFC 3264 §8: incremented when the description changes).
    pub session_version: String,
    /// Network type, `IN`.
    pub net_type: String,
    /// Address type, `IP4` or `IP6`.
    pub addr_type: String,
    /// Address or host name of the originator.
    pub address: String,
}

/// A `c=` line: `<nettype> <addrtype> <connection-address>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// Network type, `IN`.
    pub net_type: String,
    /// Address type, `IP4` or `IP6`.
    pub addr_type: String,
    /// Address (possibly with a multicast `/ttl` suffix) or host name.
    pub address: String,
}

/// A `b=<bwtype>:<bandwidth>` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bandwidth {
    /// `AS`, `CT`, `TIAS`, ...
    pub kind: String,
    /// Kilobits per second (bits per second for `TIAS`).
    pub value: u64,
}

/// A `t=` line and the `r=` lines that follow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    /// Start time (NTP seconds, `0` for unbounded).
    pub start: String,
    /// Stop time.
    pub stop: String,
    /// `r=` lines, verbatim.
    pub repeats: Vec<String>,
}

/// An `a=` line: `a=<name>` (a flag) or `a=<name>:<value>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// Name, before the first `:`.
    pub name: String,
    /// Value after the first `:`, verbatim; `None` for a flag.
    pub value: Option<String>,
}

/// An `m=` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    /// `audio`, `video`, `image`, `application`, ...
    pub kind: String,
    /// Transport port; 0 marks a disabled or rejected stream (RFC 3264 §5.1, §6).
    pub port: u16,
    /// The `/<number of ports>` suffix, if any.
    pub port_count: Option<u16>,
    /// Transport protocol: `RTP/AVP`, `RTP/SAVP`, `UDP/TLS/RTP/SAVPF`, `udptl`, ...
    pub proto: String,
    /// Formats: RTP payload type numbers for the RTP protocols, opaque otherwise.
    pub formats: Vec<String>,
    /// Media-level `i=`.
    pub information: Option<String>,
    /// Media-level `c=` lines (more than one only for layered multicast).
    pub connections: Vec<Connection>,
    /// Media-level `b=` lines.
    pub bandwidths: Vec<Bandwidth>,
    /// Media-level `k=`, verbatim.
    pub key: Option<String>,
    /// Media-level `a=` lines, in input order.
    pub attributes: Vec<Attribute>,
}

/// Why a body is not a usable SDP. [`ParseError::reason`] is the text for a 488's `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// The body does not start with a `v=` line.
    NotSdp,
    /// `v=` is not `0`.
    BadVersion,
    /// A line is not `<letter>=<value>`.
    NotTypeValue,
    /// A line contains a NUL or a bare CR, which a peer could read as a line end (SDP injection).
    BadCharacter,
    /// A line type RFC 8866 does not define (its §5 says to refuse such descriptions).
    UnknownLine,
    /// A line where the grammar does not allow it (such as `o=` inside a media section).
    OutOfPlace,
    /// A line that may appear once appears again.
    Duplicate,
    /// No `o=` line.
    MissingOrigin,
    /// `o=` does not have its six fields.
    BadOrigin,
    /// `c=` does not have its three fields.
    BadConnection,
    /// `b=` is not `<type>:<number>`.
    BadBandwidth,
    /// `t=` does not have its two fields.
    BadTiming,
    /// `r=` before any `t=`.
    RepeatWithoutTiming,
    /// `m=` is not `<media> <port>[/<count>] <proto> <fmt>...`.
    BadMedia,
    /// `a=` with an empty name.
    BadAttribute,
    /// More `m=` lines than [`MAX_MEDIA`].
    TooManyMedia,
}

/// The most `m=` lines a description may have. Each active one costs four ports, so a peer must
/// not be able to ask for hundreds; 32 leaves room for video conferences with many streams.
pub const MAX_MEDIA: usize = 32;

impl ParseError {
    /// A short static reason, for logs and the `Warning` of a 488.
    pub fn reason(&self) -> &'static str {
        match self {
            ParseError::NotSdp => "not an SDP body",
            ParseError::BadVersion => "bad v= line",
            ParseError::NotTypeValue => "line is not type=value",
            ParseError::BadCharacter => "control character in SDP",
            ParseError::UnknownLine => "unknown SDP line type",
            ParseError::OutOfPlace => "SDP line out of place",
            ParseError::Duplicate => "duplicate SDP line",
            ParseError::MissingOrigin => "missing o= line",
            ParseError::BadOrigin => "bad o= line",
            ParseError::BadConnection => "bad c= line",
            ParseError::BadBandwidth => "bad b= line",
            ParseError::BadTiming => "bad t= line",
            ParseError::RepeatWithoutTiming => "r= line without t=",
            ParseError::BadMedia => "bad m= line",
            ParseError::BadAttribute => "bad a= line",
            ParseError::TooManyMedia => "too many m= lines",
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for ParseError {}

/// The media direction attributes (RFC 3264 §5.1, §6.1), from the point of view of the side that
/// wrote the description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `a=sendrecv` (the default).
    SendRecv,
    /// `a=sendonly`.
    SendOnly,
    /// `a=recvonly`.
    RecvOnly,
    /// `a=inactive`.
    Inactive,
}

impl Direction {
    /// The direction named by an attribute, if it is one.
    pub fn from_attribute(name: &str) -> Option<Direction> {
        [Direction::SendRecv, Direction::SendOnly, Direction::RecvOnly, Direction::Inactive]
            .into_iter()
            .find(|d| d.as_str().eq_ignore_ascii_case(name))
    }

    /// From what the writer does.
    pub fn from_flags(sends: bool, receives: bool) -> Direction {
        match (sends, receives) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }

    /// The attribute name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// Whether the writer of the description sends media.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether the writer of the description receives media.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }
}

/// What an `a=rtpmap:<pt> <encoding>/<clock rate>[/<channels>]` says, or what RFC 3551 assigns to
/// a static payload type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Codec {
    /// Encoding name as written (compare case-insensitively).
    pub name: String,
    /// RTP clock rate in Hz.
    pub clock_rate: u32,
    /// Audio channels; `None` when not given (1).
    pub channels: Option<u16>,
}

impl Codec {
    /// Same encoding, clock rate and channel count (RFC 3264 §6.1 matching; names are
    /// case-insensitive per RFC 4855 §3).
    pub fn matches(&self, other: &Codec) -> bool {
        self.name.eq_ignore_ascii_case(&other.name)
            && self.clock_rate == other.clock_rate
            && self.channels.unwrap_or(1) == other.channels.unwrap_or(1)
    }

    /// Formats that carry no speech of their own: a media line with only these has no codec.
    pub fn is_auxiliary(&self) -> bool {
        ["telephone-event", "CN", "red", "ulpfec", "flexfec", "rtx"]
            .iter()
            .any(|n| self.name.eq_ignore_ascii_case(n))
    }
}

/// RFC 3551 §6 static audio payload types, used when an `m=` line names one without `a=rtpmap`.
/// Video static types are not listed: video is never filtered by codec.
const STATIC_AUDIO: &[(u8, &str, u32, Option<u16>)] = &[
    (0, "PCMU", 8000, None),
    (3, "GSM", 8000, None),
    (4, "G723", 8000, None),
    (5, "DVI4", 8000, None),
    (6, "DVI4", 16000, None),
    (7, "LPC", 8000, None),
    (8, "PCMA", 8000, None),
    // RFC 3551 §4.5.2: G.722's RTP clock is 8000 although it samples at 16 kHz.
    (9, "G722", 8000, None),
    (10, "L16", 44100, Some(2)),
    (11, "L16", 44100, None),
    (12, "QCELP", 8000, None),
    (13, "CN", 8000, None),
    (14, "MPA", 90000, None),
    (15, "G728", 8000, None),
    (16, "DVI4", 11025, None),
    (17, "DVI4", 22050, None),
    (18, "G729", 8000, None),
];

impl Sdp {
    /// Parses a body (see the module docs for what is accepted).
    pub fn parse(input: &[u8]) -> Result<Sdp, ParseError> {
        parse::parse(input)
    }

    /// The description as CRLF-terminated lines.
    pub fn to_bytes(&self) -> Bytes {
        Bytes::from(self.to_string())
    }

    /// A session-level attribute by name (case-insensitive).
    pub fn attribute(&self, name: &str) -> Option<&Attribute> {
        find(&self.attributes, name)
    }

    /// The connection that applies to media `index`: its own first `c=`, else the session's.
    pub fn connection_for(&self, index: usize) -> Option<&Connection> {
        self.media.get(index).and_then(|m| m.connections.first()).or(self.connection.as_ref())
    }

    /// The direction media `index` declares: its own attribute, else the session's, else
    /// `sendrecv` (RFC 3264 §5.1).
    pub fn direction(&self, index: usize) -> Direction {
        let own = self.media.get(index).and_then(|m| direction_in(&m.attributes));
        own.or_else(|| direction_in(&self.attributes)).unwrap_or(Direction::SendRecv)
    }

    /// Whether media `index` uses ICE (an `ice-ufrag` at media or session level).
    pub fn uses_ice(&self, index: usize) -> bool {
        self.attribute("ice-ufrag").is_some()
            || self.media.get(index).is_some_and(|m| m.attribute("ice-ufrag").is_some())
    }
}

impl Connection {
    /// A `c=` line for an address: `IN IP4` or `IN IP6` after its family.
    pub fn for_ip(ip: IpAddr) -> Connection {
        Connection {
            net_type: "IN".to_owned(),
            addr_type: addr_type(ip).to_owned(),
            address: ip.to_string(),
        }
    }

    /// The address as an IP, without a multicast `/ttl` suffix; `None` for a host name.
    pub fn ip(&self) -> Option<IpAddr> {
        let addr = self.address.split('/').next().unwrap_or_default();
        addr.parse().ok()
    }
}

impl Media {
    /// A media-level attribute by name (case-insensitive).
    pub fn attribute(&self, name: &str) -> Option<&Attribute> {
        find(&self.attributes, name)
    }

    /// Whether the protocol is RTP based, so that formats are payload types.
    pub fn is_rtp(&self) -> bool {
        self.proto.split('/').any(|p| p.eq_ignore_ascii_case("RTP"))
    }

    /// Whether this is an audio stream.
    pub fn is_audio(&self) -> bool {
        self.kind.eq_ignore_ascii_case("audio")
    }

    /// The codec a format stands for: its `a=rtpmap`, else the RFC 3551 static assignment.
    pub fn codec(&self, format: &str) -> Option<Codec> {
        let pt: u8 = format.parse().ok().filter(|pt| *pt < 128)?;
        let mapped = self.attributes.iter().find_map(|a| {
            let (num, rest) = a.payload_value("rtpmap")?;
            if num != pt {
                return None;
            }
            let mut parts = rest.trim().split('/');
            let name = parts.next().filter(|n| !n.is_empty())?;
            let clock_rate = parts.next()?.trim().parse().ok()?;
            let channels = parts.next().and_then(|c| c.trim().parse().ok());
            Some(Codec { name: name.to_owned(), clock_rate, channels })
        });
        mapped.or_else(|| {
            STATIC_AUDIO.iter().find(|s| s.0 == pt).map(|&(_, name, clock_rate, channels)| Codec {
                name: name.to_owned(),
                clock_rate,
                channels,
            })
        })
    }
}

impl Attribute {
    /// A flag attribute (`a=<name>`).
    pub fn flag(name: &str) -> Attribute {
        Attribute { name: name.to_owned(), value: None }
    }

    /// A valued attribute (`a=<name>:<value>`).
    pub fn new(name: &str, value: String) -> Attribute {
        Attribute { name: name.to_owned(), value: Some(value) }
    }

    /// Whether the name is `name` (case-insensitive).
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    /// For per-format attributes (`rtpmap`, `fmtp`, `rtcp-fb`) named `name`: the payload type
    /// and the rest of the value. `rtcp-fb:*` and malformed values give `None`.
    pub fn payload_value(&self, name: &str) -> Option<(u8, &str)> {
        if !self.is(name) {
            return None;
        }
        let value = self.value.as_deref()?;
        let (num, rest) = value.split_once(' ').unwrap_or((value, ""));
        let pt = num.parse().ok().filter(|pt: &u8| *pt < 128)?;
        Some((pt, rest))
    }
}

/// `IP4` or `IP6` for an address (what `o=`, `c=` and `a=rtcp` write).
pub fn addr_type(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => "IP4",
        IpAddr::V6(_) => "IP6",
    }
}

fn find<'a>(attributes: &'a [Attribute], name: &str) -> Option<&'a Attribute> {
    attributes.iter().find(|a| a.is(name))
}

fn direction_in(attributes: &[Attribute]) -> Option<Direction> {
    attributes.iter().filter(|a| a.value.is_none()).find_map(|a| Direction::from_attribute(&a.name))
}

#[cfg(test)]
pub(crate) mod tests;
