//! The sans-I/O protocol core (work in progress).

pub mod close;
pub mod error;
pub mod frame;
pub mod mask;
pub mod session;
pub mod utf8;
