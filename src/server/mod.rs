//! The runtime shell: monoio worker threads around the sans-I/O protocol core.

pub mod limits;

use crate::cli::ServeArgs;

/// Runs the server until SIGTERM/SIGINT.
pub fn serve(_args: ServeArgs) -> std::io::Result<()> {
    Err(std::io::Error::other("not built yet"))
}
