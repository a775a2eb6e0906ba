//! Signalling core of the SBC.
pub mod config;
pub mod sip;
pub mod transaction;
pub mod transport;
