//! The back-to-back user agent, sans-IO.
//!
//! Every call is two independent dialogs: leg A, where the SBC is the UAS, and leg B, where it is the
//! UAC. Nothing of one leg's Call-ID, tags, branches, Via, Contact or route set is written on the
//! other; headers cross only through a trunk's allow-list. Bodies cross only through the media
//! plane ([`sbc_media::MediaPlane`]), admission is asked of [`sbc_policy::Policy`], and call progress
//! is reported as [`Event::Call`] for the records crate.
//!
//! # Edge policy in the engine
//!
//! The policy ([`Engine::set_policy`], one per process) is asked at each decision point: a new
//! out-of-dialog request with a scanner User-Agent is an offence, and a request from a banned
//! source is dropped before a transaction exists; INVITE and REGISTER from an access listener
//! with a realm are challenged (407/401) until their digest credentials check; a new INVITE is
//! admitted per listener and source (rates, CAC; 403 or 503 + Retry-After) before routing, and
//! a 404 for an unknown user counts as an offence; each attempt toward a trunk takes that
//! trunk's outbound slots, and a refusal fails over like a 503. The call holds its permits, so
//! every slot comes back when the call ends, however it ends.
//!
//! # Registrations
//!
//! REGISTER from an access listener goes to its registrar (`registrars:`): relayed upstream with
//! the SBC's own contact, or kept by a local registrar of the listener's digest users. The
//! [`bindings`] are shared by every shard ([`Engine::set_bindings`]); an INVITE to a binding's
//! token (or, locally, to its address of record) reaches the client over its own flow. See
//! [`registrar`] and [`bindings`].
//!
//! # Driving the engine
//!
//! An [`Engine`] is one shard: it owns its calls and its [`crate::transaction::TransactionLayer`].
//! Like every core in this crate it never reads a clock and never touches a socket:
//!
//! 1. feed one input: [`Engine::handle_message`] (a parsed message with its flow),
//!    [`Engine::handle_datagram`] (raw bytes, parsed here), [`Engine::handle_timeout`], or a control
//!    call ([`Engine::start_drain`], [`Engine::terminate_all`]);
//! 2. drain [`Engine::poll_transmit`] and [`Engine::poll_event`] until both return `None`;
//! 3. sleep until [`Engine::poll_timeout`] or the next input, whichever comes first.
//!
//! Calling `handle_timeout` early is harmless.

pub mod bindings;
pub mod dialog;
mod dtmf;
mod engine;
pub mod health;
pub mod ids;
pub mod registrar;
pub mod routing;
pub mod session_timer;

pub use engine::{Engine, EngineStats, Event, LegCallId};
