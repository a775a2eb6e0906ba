//! Signalling core of the SBC: the SIP codec, RFC 3261 transactions, the B2BUA and the tokio shells
//! that run them. Everything outside `shell` is sans-IO: no sockets, no clock, no runtime.
pub mod b2bua;
pub mod config;
pub mod shell;
pub mod sip;
pub mod transaction;
pub mod transport;
