//! Steering new connections within a `SO_REUSEPORT` group: a classic BPF program attached to
//! the group (`SO_ATTACH_REUSEPORT_CBPF`) picks which member socket a new connection's SYN
//! goes to, so a worker whose fd table is full stops getting connections without closing its
//! listener (closing it would reset the connections queued on it).
//!
//! The program returns an index into the group's sockets, which the kernel numbers in the
//! order they started listening; the workers listen one after the other (worker 0 first), so
//! index `i` is worker `i`. An index past the group's end makes the kernel fall back to its
//! usual hash over every member, which is what [`program`] returns when every worker is open
//! (nothing to steer) or none is (each refuses what it gets, at once).

use std::io;
use std::os::fd::RawFd;

/// `SO_ATTACH_REUSEPORT_CBPF` (asm-generic/socket.h; the `libc` crate names it on Android
/// only).
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;

/// A return value past any group's end: "let the kernel hash over every member".
const FALL_BACK_TO_HASH: u32 = u32::MAX;

/// Most members a program routes to by itself (two instructions each, within the 4,096 a
/// classic BPF program may have); past it the program falls back to the kernel's hash.
pub const MAX_STEERED: usize = 2_000;

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump_eq(k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    }
}

/// The steering program for a group of `members` sockets of which those at `open` (indices,
/// ascending, each below `members`) take new connections: each new connection goes to one of
/// them at random (evenly). Every member open, or none, gives a program that falls back to
/// the kernel's own hash.
pub fn program(members: usize, open: &[u32]) -> Vec<libc::sock_filter> {
    let ret = libc::BPF_RET | libc::BPF_K;
    if open.is_empty() || open.len() >= members || open.len() > MAX_STEERED {
        return vec![stmt(ret, FALL_BACK_TO_HASH)];
    }
    let random = (libc::SKF_AD_OFF + libc::SKF_AD_RANDOM) as u32;
    let mut prog = vec![
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, random),
        stmt(
            libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K,
            open.len() as u32,
        ),
    ];
    let (last, rest) = open.split_last().expect("not empty");
    for (i, &member) in rest.iter().enumerate() {
        // A = i: return this member; else skip its `ret` to the next comparison.
        prog.push(jump_eq(i as u32, 0, 1));
        prog.push(stmt(ret, member));
    }
    prog.push(stmt(ret, *last));
    prog
}

/// Attaches `prog` to the `SO_REUSEPORT` group of the listening socket `fd` (it replaces the
/// group's previous program, for every member).
pub fn attach(fd: RawFd, prog: &[libc::sock_filter]) -> io::Result<()> {
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr().cast_mut(),
    };
    // `fprog` points at `prog`, alive and unmodified for the call; the kernel copies it.
    super::sys::set_socket_option(fd, libc::SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &fprog)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the subset of classic BPF [`program`] emits, with `random` as the random word.
    fn run(prog: &[libc::sock_filter], random: u32) -> u32 {
        let mut a = 0u32;
        let mut pc = 0usize;
        loop {
            let ins = prog[pc];
            let code = ins.code as u32;
            match code {
                c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS => a = random,
                c if c == libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K => a %= ins.k,
                c if c == libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K => {
                    pc += if a == ins.k { ins.jt } else { ins.jf } as usize;
                }
                c if c == libc::BPF_RET | libc::BPF_K => return ins.k,
                other => panic!("unexpected instruction {other:#x}"),
            }
            pc += 1;
        }
    }

    #[test]
    fn every_open_member_gets_an_even_share_and_no_full_one_gets_any() {
        let open = [0u32, 2, 5];
        let prog = program(6, &open);
        let mut got = [0u32; 6];
        for random in 0..600 {
            got[run(&prog, random) as usize] += 1;
        }
        assert_eq!(got, [200, 0, 200, 0, 0, 200]);
    }

    #[test]
    fn one_open_member_gets_everything() {
        let prog = program(4, &[3]);
        assert!((0..50).all(|r| run(&prog, r) == 3));
    }

    #[test]
    fn all_open_or_none_falls_back_to_the_kernel_hash() {
        for prog in [program(3, &[0, 1, 2]), program(3, &[])] {
            assert_eq!(prog.len(), 1);
            assert_eq!(run(&prog, 7), FALL_BACK_TO_HASH);
        }
    }

    #[test]
    fn a_program_attaches_to_a_listening_reuseport_socket() {
        // SAFETY: plain socket calls on a descriptor this test owns and closes.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            assert!(fd >= 0);
            let one: libc::c_int = 1;
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_REUSEPORT,
                (&one as *const libc::c_int).cast(),
                4,
            );
            let addr = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
                },
                sin_zero: [0; 8],
            };
            let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            assert_eq!(
                libc::bind(fd, (&addr as *const libc::sockaddr_in).cast(), len),
                0
            );
            assert_eq!(libc::listen(fd, 16), 0);
            attach(fd, &program(2, &[1])).expect("attach");
            attach(fd, &program(2, &[])).expect("attach the fallback");
            libc::close(fd);
        }
    }
}
