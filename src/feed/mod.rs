//! The publishing side: what posts match events to a server.
//!
//! * [`replay`] — the `matchstream replay` command: plays a match script through the admin
//!   API.
//! * [`demo`] — `serve --demo`: plays the bundled sample match in a loop, straight into the
//!   node's sequencer.

pub mod demo;
pub mod replay;
