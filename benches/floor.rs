//! The floor: what the kernel itself costs to deliver one pre-encoded WebSocket frame to N
//! connected loopback sockets, with raw io_uring and nothing else — no runtime, no
//! per-connection state, no encoding. Every fan-out figure of the server (CPU per delivered
//! frame) is stated as a ratio to this, measured on the same machine in the same run.
//!
//! Shape: N loopback TCP pairs in groups of at most ~19,000 (one fd table each: every thread
//! gives itself a private table with `unshare(CLONE_FILES)`, like the server's workers, so the
//! 20K-per-process open-files limit is per group). Per group, a *sender* thread (the server's
//! side: it accepted the connections) and a *receiver* thread (the watchers' side: it
//! connected them). Each round, the sender submits one `Send` SQE per socket with the same
//! frame, in batches of `--batch` (one `io_uring_enter` each), reaps the completions, and waits
//! until the receiver — which keeps one `Recv` SQE outstanding per socket — has drained the
//! whole round. The sender's thread CPU time (user + system, `CLOCK_THREAD_CPUTIME_ID`) over
//! the rounds, divided by the frames delivered, is the floor; on loopback it includes the
//! kernel's receive path into the peer socket, as the server's own CPU does.
//!
//! `--mode sendmsg` sends with one `sendmsg(MSG_DONTWAIT)` syscall per socket instead (what a
//! server that writes straight to the socket pays): the difference is the per-syscall cost.
//!
//! Run: `cargo bench --bench floor -- --pairs 10000 --rounds 30` (or `FLOOR_PAIRS`,
//! `FLOOR_ROUNDS`, `FLOOR_BATCH`). Prints one JSON object on stdout; `--out FILE` also writes
//! it there.

#![allow(missing_docs)]

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use io_uring::{opcode, types, IoUring};
use serde_json::json;
use socket2::{Domain, Protocol, Socket, Type};

use matchstream::domain::{event_message, Event, Match, MatchScript};
use matchstream::server::watch::text_frame;

/// Descriptors a group's tables keep free for rings, listeners and slack.
const RESERVED_FDS: u64 = 256;
/// Receive buffer per socket on the receiver side (a frame is ~200 B).
const RECV_BUF: usize = 1024;

struct Options {
    /// `uring` (one `Send` SQE per socket, batched) or `sendmsg` (one `sendmsg(MSG_DONTWAIT)`
    /// syscall per socket, what a server that writes directly does).
    mode: Mode,
    pairs: usize,
    rounds: usize,
    batch: usize,
    out: Option<String>,
}

fn options() -> Options {
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let mut o = Options {
        pairs: env("FLOOR_PAIRS", 10_000),
        rounds: env("FLOOR_ROUNDS", 30),
        batch: env("FLOOR_BATCH", 4096),
        out: None,
        mode: Mode::Uring,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let val = args.get(i + 1).cloned();
        let num = || val.as_deref().and_then(|v| v.parse().ok());
        match args[i].as_str() {
            "--pairs" => o.pairs = num().expect("--pairs N"),
            "--rounds" => o.rounds = num().expect("--rounds E"),
            "--batch" => o.batch = num().expect("--batch B"),
            "--out" => o.out = Some(val.expect("--out FILE")),
            "--mode" => {
                o.mode = match val.as_deref() {
                    Some("uring") => Mode::Uring,
                    Some("sendmsg") => Mode::Sendmsg,
                    _ => panic!("--mode uring|sendmsg"),
                }
            }
            // `cargo bench` adds `--bench`; anything else unknown is ignored too.
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o.pairs = o.pairs.max(1);
    o.rounds = o.rounds.max(1);
    o.batch = o.batch.clamp(1, 32_768);
    o
}

/// A real event frame of the sample match: the first goal, as the server encodes it.
fn sample_frame() -> Vec<u8> {
    let s = MatchScript::sample();
    let mut m = Match::new(&s.home, &s.visit, &s.start_date, &s.stadium).unwrap();
    let mut frame = None;
    for (i, (kind, data)) in s.events().enumerate() {
        let ts = 1_315_681_200_000 + i as i64 * 1000;
        let data = m.apply(kind, data, ts).unwrap();
        let event = Event {
            seq: i as u64 + 1,
            ts,
            kind,
            data,
            minute: None,
        };
        if kind.as_str() == "goal" {
            frame = Some(text_frame(&event_message("elp-tig-2011-09-10", &event)).to_vec());
            break;
        }
    }
    frame.expect("the sample match has a goal")
}

fn raise_nofile() -> u64 {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read the struct we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
        l.rlim_cur = l.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &l);
    }
    l.rlim_cur
}

fn thread_cpu_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

fn process_cpu_us() -> (u64, u64) {
    // SAFETY: getrusage writes the struct we own.
    let ru = unsafe {
        let mut ru = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    (us(ru.ru_utime), us(ru.ru_stime))
}

fn unshare_files() {
    // SAFETY: unshare only changes this thread's own fd table.
    if unsafe { libc::unshare(libc::CLONE_FILES) } != 0 {
        panic!("unshare(CLONE_FILES): {}", io::Error::last_os_error());
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Uring,
    Sendmsg,
}

/// What the receiver has drained, and a way to wait for it.
#[derive(Default)]
struct Drained {
    bytes: Mutex<u64>,
    cv: Condvar,
}

struct SenderResult {
    cpu_us: u64,
    round_us: Vec<u64>,
    sent: u64,
}

fn sender(
    mode: Mode,
    listener: RawFd,
    pairs: usize,
    rounds: usize,
    batch: usize,
    frame: Arc<Vec<u8>>,
    drained: Arc<Drained>,
) -> SenderResult {
    unshare_files();
    let mut fds = Vec::with_capacity(pairs);
    for _ in 0..pairs {
        // SAFETY: accept on our listener; null address out-parameters are allowed.
        let fd = unsafe { libc::accept(listener, std::ptr::null_mut(), std::ptr::null_mut()) };
        assert!(fd >= 0, "accept: {}", io::Error::last_os_error());
        let one: libc::c_int = 1;
        // SAFETY: a valid socket and a c_int option value.
        unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                &one as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        fds.push(fd);
    }
    let entries = batch.next_power_of_two() as u32;
    let mut ring: IoUring = IoUring::builder()
        .setup_cqsize(entries * 2)
        .build(entries)
        .expect("sender io_uring");
    // Let the receiver's first Recv SQEs settle before measuring.
    std::thread::sleep(Duration::from_millis(200));
    let frame_len = frame.len() as u64;
    let mut round_us = Vec::with_capacity(rounds);
    let mut sent = 0u64;
    let cpu0 = thread_cpu_us();
    for r in 0..rounds {
        let start = Instant::now();
        if mode == Mode::Sendmsg {
            for &fd in &fds {
                // SAFETY: a valid socket and a live buffer of frame.len() bytes.
                let n = unsafe {
                    libc::send(
                        fd,
                        frame.as_ptr().cast(),
                        frame.len(),
                        libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                    )
                };
                assert_eq!(n as u64, frame_len, "send: {}", io::Error::last_os_error());
            }
            sent += fds.len() as u64;
        }
        for chunk in fds.chunks(batch).filter(|_| mode == Mode::Uring) {
            {
                let mut sq = ring.submission();
                for (i, &fd) in chunk.iter().enumerate() {
                    let e = opcode::Send::new(types::Fd(fd), frame.as_ptr(), frame.len() as u32)
                        .build()
                        .user_data(i as u64);
                    // SAFETY: the frame outlives the ring's use of it (we reap below).
                    unsafe { sq.push(&e).expect("submission queue full") };
                }
            }
            ring.submit_and_wait(chunk.len()).expect("io_uring_enter");
            let mut done = 0;
            while done < chunk.len() {
                for cqe in ring.completion() {
                    assert_eq!(
                        cqe.result() as u64,
                        frame_len,
                        "send result {}",
                        cqe.result()
                    );
                    done += 1;
                }
                if done < chunk.len() {
                    ring.submit_and_wait(chunk.len() - done)
                        .expect("io_uring_enter");
                }
            }
            sent += chunk.len() as u64;
        }
        // Wait (blocked, no CPU) until the other side has drained the whole round.
        let target = (r as u64 + 1) * pairs as u64 * frame_len;
        let mut got = drained.bytes.lock().unwrap();
        while *got < target {
            got = drained.cv.wait(got).unwrap();
        }
        round_us.push(start.elapsed().as_micros() as u64);
    }
    let cpu_us = thread_cpu_us() - cpu0;
    for fd in fds {
        // SAFETY: we own these descriptors.
        unsafe { libc::close(fd) };
    }
    SenderResult {
        cpu_us,
        round_us,
        sent,
    }
}

fn receiver(
    addr: SocketAddr,
    source: Ipv4Addr,
    pairs: usize,
    expect_bytes: u64,
    frame_len: u64,
    drained: Arc<Drained>,
) -> u64 {
    unshare_files();
    let mut fds = Vec::with_capacity(pairs);
    for i in 0..pairs {
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
        // Two source addresses per group, the port picked at connect() (cheap while each
        // address's port range is at most a third full).
        let [a, b, c, d] = source.octets();
        let source = Ipv4Addr::new(a, b, c, d + (i % 2) as u8);
        let one: libc::c_int = 1;
        // SAFETY: a valid socket and a c_int option value.
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                &one as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        s.bind(&SocketAddr::V4(SocketAddrV4::new(source, 0)).into())
            .expect("bind source");
        s.connect(&addr.into()).expect("connect");
        fds.push(s.into_raw_fd());
    }
    let cq = (pairs as u32 * 2).next_power_of_two().clamp(4096, 65_536);
    let mut ring: IoUring = IoUring::builder()
        .setup_cqsize(cq)
        .build(4096)
        .expect("receiver io_uring");
    let mut bufs = vec![0u8; pairs * RECV_BUF];
    let base = bufs.as_mut_ptr();
    let recv = |i: usize| {
        // SAFETY: each socket has its own RECV_BUF slice of `bufs`, which outlives the ring.
        let ptr = unsafe { base.add(i * RECV_BUF) };
        opcode::Recv::new(types::Fd(fds[i]), ptr, RECV_BUF as u32)
            .build()
            .user_data(i as u64)
    };
    let push = |ring: &mut IoUring, e: io_uring::squeue::Entry| loop {
        // SAFETY: the buffer stays valid (see `recv`).
        if unsafe { ring.submission().push(&e) }.is_ok() {
            return;
        }
        ring.submit().expect("io_uring_enter");
    };
    for i in 0..pairs {
        push(&mut ring, recv(i));
    }
    ring.submit().expect("io_uring_enter");
    let cpu0 = thread_cpu_us();
    let mut total = 0u64;
    let per_round = pairs as u64 * frame_len;
    while total < expect_bytes {
        ring.submit_and_wait(1).expect("io_uring_enter");
        let mut again = Vec::new();
        let before = total;
        for cqe in ring.completion() {
            let n = cqe.result();
            assert!(n > 0, "recv result {n}");
            total += n as u64;
            again.push(cqe.user_data() as usize);
        }
        for i in again {
            push(&mut ring, recv(i));
        }
        if total / per_round != before / per_round || total >= expect_bytes {
            *drained.bytes.lock().unwrap() = total;
            drained.cv.notify_all();
        }
    }
    let cpu_us = thread_cpu_us() - cpu0;
    drop(ring);
    for fd in fds {
        // SAFETY: we own these descriptors.
        unsafe { libc::close(fd) };
    }
    cpu_us
}

fn pct(sorted: &[u64], q: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    let o = options();
    let nofile = raise_nofile();
    let per_group = (nofile.saturating_sub(RESERVED_FDS)).clamp(1, 19_000) as usize;
    let groups = o.pairs.div_ceil(per_group);
    let frame = Arc::new(sample_frame());
    let frame_len = frame.len() as u64;
    eprintln!(
        "floor: {} pairs in {groups} group(s), {} rounds of one {frame_len}-byte frame, batches of {}",
        o.pairs, o.rounds, o.batch
    );
    let wall0 = Instant::now();
    let (pu0, ps0) = process_cpu_us();
    let mut handles = Vec::new();
    for g in 0..groups {
        let n = per_group.min(o.pairs - g * per_group);
        let listener = {
            let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
            s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
                .unwrap();
            s.listen(4096).unwrap();
            TcpListener::from(s)
        };
        let addr = listener.local_addr().unwrap();
        let lfd = listener.as_raw_fd();
        let drained = Arc::new(Drained::default());
        let source = Ipv4Addr::new(127, 0, 0, 2 + (2 * g % 252) as u8);
        let (f, d) = (frame.clone(), drained.clone());
        let (rounds, batch) = (o.rounds, o.batch);
        let mode = o.mode;
        let s = std::thread::spawn(move || sender(mode, lfd, n, rounds, batch, f, d));
        let expect = n as u64 * rounds as u64 * frame_len;
        let r = std::thread::spawn(move || receiver(addr, source, n, expect, frame_len, drained));
        // The threads' private tables hold their own copies of the listener.
        handles.push((listener, s, r, n));
    }
    let mut send_cpu = 0u64;
    let mut recv_cpu = 0u64;
    let mut sent = 0u64;
    let mut rounds_us = Vec::new();
    for (listener, s, r, _) in handles {
        let sr = s.join().expect("sender");
        recv_cpu += r.join().expect("receiver");
        send_cpu += sr.cpu_us;
        sent += sr.sent;
        rounds_us.extend(sr.round_us);
        drop(listener);
    }
    let (pu1, ps1) = process_cpu_us();
    rounds_us.sort_unstable();
    let deliveries = sent as f64;
    let report = json!({
        "floor_cpu_us_per_delivery": send_cpu as f64 / deliveries,
        "floor_recv_cpu_us_per_delivery": recv_cpu as f64 / deliveries,
        "floor_total_cpu_us_per_delivery": (send_cpu + recv_cpu) as f64 / deliveries,
        "mode": format!("{:?}", o.mode).to_lowercase(),
        "pairs": o.pairs,
        "rounds": o.rounds,
        "deliveries": sent,
        "frame_bytes": frame_len,
        "batch": o.batch,
        "groups": groups,
        "send_cpu_s": send_cpu as f64 / 1e6,
        "recv_cpu_s": recv_cpu as f64 / 1e6,
        "round_fanout_us": {"p50": pct(&rounds_us, 0.5), "p99": pct(&rounds_us, 0.99), "max": rounds_us.last()},
        "frames_per_s_one_round_p50": o.pairs as f64 / (pct(&rounds_us, 0.5) as f64 / 1e6),
        "process_cpu_s_incl_setup": {"user": (pu1 - pu0) as f64 / 1e6, "sys": (ps1 - ps0) as f64 / 1e6},
        "wall_s_incl_setup": wall0.elapsed().as_secs_f64(),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
    });
    let text = serde_json::to_string_pretty(&report).unwrap();
    println!("{text}");
    if let Some(path) = o.out {
        std::fs::write(&path, format!("{text}\n")).expect("write --out");
    }
}
