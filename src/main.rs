//! The `matchstream` binary: parses the command line and hands over to the library.

use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() {
    let code = matchstream::cli::run(std::env::args_os());
    std::process::exit(code);
}
