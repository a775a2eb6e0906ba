//! SIP message codec (RFC 3261 section 7, 20 and 25), zero-copy over [`bytes::Bytes`].
//!
//! A message is split once into its start line, header fields and body; header values stay slices of
//! the received buffer and are interpreted only when asked for (`Message::via()`, `cseq()`...). What
//! the B2BUA does not understand is carried byte-exact. Parsing is strict where a wrong guess would be
//! a security or interop problem (framing, Content-Length, CSeq, the Request-Line) and lenient where
//! the RFC asks for it (folding, compact forms, case, bare LF line ends).
//!
//! Messages the SBC originates are built as [`Message`] values and serialized with
//! [`Message::write_to`].

mod headers;
mod message;
mod method;
mod parse;
pub mod stream;
mod uri;

pub use headers::{CSeq, Header, HeaderName, NameAddr, Via, split_list};
pub use message::{Message, RequestLine, StartLine, StatusLine};
pub use method::Method;
pub use parse::{Limits, ParseError, error_response, parse, parse_with};
pub use uri::{Host, Scheme, Uri};
