//! Command-line interface: `matchstream serve | replay | load`.
//!
//! Each command's flags live next to it: [`crate::server::ServeArgs`],
//! [`crate::feed::replay::ReplayArgs`], [`crate::load::LoadArgs`]. Every flag of `serve` can also
//! be set through a `MATCHSTREAM_*` environment variable.
//! Errors are printed as one line and turn into a non-zero exit status.

use std::ffi::OsString;

use clap::{Parser, Subcommand};

/// Live football-match events pushed to every watcher over WebSocket or TCP.
#[derive(Debug, Parser)]
#[command(
    name = "matchstream",
    version,
    about,
    propagate_version = true,
    after_help = "Examples:
  matchstream serve --demo                  a live sample match at http://localhost:8080/
  matchstream replay sample --speed 20 --admin-token TOKEN
                                            play the sample match into a running server
  matchstream load --replay sample --speed 50 --clients 1000 --admin-token TOKEN
                                            1,000 watchers, every event verified

Each command has its own --help."
)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands of `matchstream`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: HTTP API and WebSocket on --listen, the line protocol on --tcp-listen.
    Serve(Box<crate::server::ServeArgs>),
    /// Play a match script through the admin API.
    Replay(crate::feed::replay::ReplayArgs),
    /// Load generator and blackbox tester: connect watchers, drive a match, verify, report.
    Load(Box<crate::load::LoadArgs>),
}

/// Parses `args` and runs the chosen command; returns the process exit status.
pub fn run<I>(args: I) -> i32
where
    I: IntoIterator<Item = OsString>,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    let result = match cli.command {
        Command::Serve(args) => crate::server::serve(*args).map(|()| 0),
        Command::Replay(args) => crate::feed::replay::run(args),
        Command::Load(args) => crate::load::run(*args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("matchstream: error: {e:#}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_flag_says_what_it_does() {
        let cli = Cli::command();
        for sub in cli.get_subcommands() {
            for arg in sub.get_arguments() {
                let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                assert!(
                    !help.trim().is_empty(),
                    "{} --{} has no help text",
                    sub.get_name(),
                    arg.get_id()
                );
            }
        }
    }
}
