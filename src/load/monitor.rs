//! The live view of a run: a sample every 250 ms for the report's timeline and chart, and a
//! progress line on stderr.

use std::io::{self, IsTerminal, Write};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::procfs;
use super::report::Sample;
use super::watch::Progress;

/// Samples the run every 250 ms for the timeline and shows a progress line.
pub(super) struct Monitor<'a> {
    progress: &'a Progress,
    clients: usize,
    pids: &'a [u32],
    origin: Instant,
    /// The samples so far.
    pub(super) timeline: Vec<Sample>,
    last_sample: Option<Instant>,
    tty: bool,
    quiet: bool,
    last_line: Instant,
}

impl<'a> Monitor<'a> {
    /// A monitor of `progress` (of `clients` watchers) and the server processes `pids`, with
    /// times counted from `origin`; `quiet` shows no progress line.
    pub(super) fn new(
        progress: &'a Progress,
        clients: usize,
        pids: &'a [u32],
        origin: Instant,
        quiet: bool,
    ) -> Self {
        Monitor {
            progress,
            clients,
            pids,
            origin,
            timeline: Vec::new(),
            last_sample: None,
            tty: io::stderr().is_terminal(),
            quiet,
            last_line: Instant::now(),
        }
    }

    /// Takes a sample now, whenever the last one was, and hands back the timeline.
    pub(super) fn finish(&mut self, phase: &str) -> Vec<Sample> {
        self.last_sample = None;
        self.tick(phase);
        std::mem::take(&mut self.timeline)
    }

    /// Takes a sample (at most every 250 ms) and shows the progress line: rewritten in place
    /// on a terminal, a new line every 5 s otherwise.
    pub(super) fn tick(&mut self, phase: &str) {
        let now = Instant::now();
        if self
            .last_sample
            .is_some_and(|t| now - t < Duration::from_millis(250))
        {
            return;
        }
        self.last_sample = Some(now);
        let p = self.progress;
        let s = Sample {
            t_s: self.origin.elapsed().as_secs_f64(),
            connected: p.connected.load(Ordering::Relaxed),
            open: p.open.load(Ordering::Relaxed),
            deliveries: p.deliveries.load(Ordering::Relaxed),
            rss: procfs::rss_bytes_sum(self.pids),
        };
        self.timeline.push(s);
        if self.quiet || (!self.tty && now - self.last_line < Duration::from_secs(5)) {
            return;
        }
        self.last_line = now;
        let rss = s
            .rss
            .map_or(String::new(), |r| format!("  server RSS {} MiB", r >> 20));
        let line = format!(
            "[{:6.1}s] {phase:<10} connected {}/{}  ready {}  failed {}  open {}  delivered {}  reconnects {}{rss}",
            s.t_s,
            s.connected,
            self.clients,
            p.ready.load(Ordering::Relaxed),
            p.connect_failed.load(Ordering::Relaxed) + p.handshake_failed.load(Ordering::Relaxed),
            s.open,
            s.deliveries,
            p.reconnects.load(Ordering::Relaxed),
        );
        if self.tty {
            eprint!("\r{line}\x1b[K");
        } else {
            eprintln!("{line}");
        }
        let _ = io::stderr().flush();
    }
}
