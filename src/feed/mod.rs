//! The publishing side: what posts match events to a server.
//!
//! * [`replay`] — the `matchstream replay` command: plays a match script through the admin
//!   API.
//! * [`demo`] — `serve --demo`: plays the bundled sample match in a loop, straight into the
//!   node's sequencer.
//! * [`http_client`] — the small blocking HTTP/1.1 client for the admin API that `replay`,
//!   the load harness's publisher and the tests use (over TLS too).
//! * [`tls`] — the client side of TLS for those tools: trust a given CA.

pub mod demo;
pub mod http_client;
pub mod replay;
pub mod tls;
