//! The publishing side: what posts match events to a server. [`replay`] is the
//! `matchstream replay` command, which plays a match script through the admin API.

pub mod replay;
