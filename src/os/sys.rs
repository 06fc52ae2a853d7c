//! Thin, audited wrappers over the few system calls the server and the load harness make
//! directly.
//!
//! Readiness comes from io_uring (`readable()` / `writable()` poll operations); the data
//! itself moves with non-blocking `recv` / `sendmsg` into the worker's scratch buffer and out
//! of shared, pre-encoded frames. That way an idle connection pins no buffer and one frame's
//! bytes serve every watcher on the worker.

use std::io;
use std::os::fd::RawFd;

/// Gives the calling thread a private file-descriptor table (`unshare(CLONE_FILES)`).
pub fn unshare_fd_table() -> io::Result<()> {
    // SAFETY: unshare only affects the calling thread's own kernel task state.
    let rc = unsafe { libc::unshare(libc::CLONE_FILES) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Accepts one queued connection from the listening socket `fd` without blocking (`None`:
/// none is queued), whether or not `fd` itself is non-blocking: it polls first, so it must
/// be the only one accepting from `fd` at that moment. The new descriptor is non-blocking
/// and close-on-exec.
pub fn accept_nonblocking(fd: RawFd) -> io::Result<Option<std::os::fd::OwnedFd>> {
    use std::os::fd::FromRawFd;
    loop {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, a zero timeout: poll only writes `revents`.
        let ready = unsafe { libc::poll(&mut pfd, 1, 0) };
        if ready < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if ready == 0 || pfd.revents & libc::POLLIN == 0 {
            return Ok(None);
        }
        // SAFETY: null address arguments are allowed (the peer's address is not wanted).
        let rc = unsafe {
            libc::accept4(
                fd,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            )
        };
        if rc >= 0 {
            // SAFETY: accept4 just returned this descriptor; nothing else owns it.
            return Ok(Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(rc) }));
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted => continue,
            io::ErrorKind::WouldBlock => return Ok(None),
            _ => return Err(err),
        }
    }
}

/// Outcome of one non-blocking transfer.
#[derive(Debug, PartialEq, Eq)]
pub enum Transfer {
    /// This many bytes moved (0 on `recv` means the peer closed).
    Done(usize),
    /// The socket is not ready; wait for readiness.
    WouldBlock,
}

/// Runs one non-blocking socket call, retrying on `EINTR` and mapping `EAGAIN` to
/// [`Transfer::WouldBlock`].
fn nonblocking(mut call: impl FnMut() -> isize) -> io::Result<Transfer> {
    loop {
        let n = call();
        if n >= 0 {
            return Ok(Transfer::Done(n as usize));
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Ok(Transfer::WouldBlock),
            _ => return Err(err),
        }
    }
}

/// Flags of every send: never block, never raise SIGPIPE.
const SEND_FLAGS: libc::c_int = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;

/// Reads what is available from `fd` into `buf` without blocking.
pub fn recv_nonblocking(fd: RawFd, buf: &mut [u8]) -> io::Result<Transfer> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole call.
    nonblocking(|| unsafe {
        libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT)
    })
}

/// Reads what is available from a non-socket descriptor (an eventfd) without blocking.
pub fn read_nonblocking(fd: RawFd, buf: &mut [u8]) -> io::Result<Transfer> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole call.
    nonblocking(|| unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) })
}

/// Writes as much of `bytes` as the socket takes, without blocking (one `send`).
pub fn send_one_nonblocking(fd: RawFd, bytes: &[u8]) -> io::Result<Transfer> {
    // SAFETY: `bytes` is valid for reads of `bytes.len()` bytes for the whole call.
    nonblocking(|| unsafe { libc::send(fd, bytes.as_ptr().cast(), bytes.len(), SEND_FLAGS) })
}

/// Ends our sending side (`shutdown(SHUT_WR)`): the peer reads a FIN after what is queued.
pub fn shutdown_write(fd: RawFd) -> io::Result<()> {
    // SAFETY: shutdown only changes the state of the socket `fd` names; no memory is passed.
    let rc = unsafe { libc::shutdown(fd, libc::SHUT_WR) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Most slices handed to one `sendmsg` call.
pub const MAX_IOVECS: usize = 64;

/// Writes as much of `slices` (in order) as the socket takes, without blocking.
pub fn send_nonblocking(fd: RawFd, slices: &[&[u8]]) -> io::Result<Transfer> {
    if let [one] = slices {
        return send_one_nonblocking(fd, one);
    }
    let count = slices.len().min(MAX_IOVECS);
    let mut iov = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; MAX_IOVECS];
    for (v, s) in iov.iter_mut().zip(slices) {
        v.iov_base = s.as_ptr() as *mut _;
        v.iov_len = s.len();
    }
    // SAFETY: msghdr is plain old data; an all-zero value is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = count as _;
    // SAFETY: every iovec points into a live slice of `slices` for the whole call and the
    // kernel only reads from them.
    nonblocking(|| unsafe { libc::sendmsg(fd, &msg, SEND_FLAGS) })
}

/// Blocks SIGINT, SIGTERM and SIGHUP in the calling thread (and threads it spawns later), so
/// the main thread can take them with [`wait_for_signal`].
pub fn block_shutdown_signals() -> io::Result<()> {
    let set = shutdown_sigset();
    // SAFETY: `set` is an initialised signal set; a null old-set pointer is allowed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Waits until SIGINT, SIGTERM or SIGHUP arrives; returns the signal number.
pub fn wait_for_signal() -> i32 {
    let set = shutdown_sigset();
    let mut sig: libc::c_int = 0;
    loop {
        // SAFETY: both pointers are to live, initialised locals.
        let rc = unsafe { libc::sigwait(&set, &mut sig) };
        if rc == 0 {
            return sig;
        }
    }
}

fn shutdown_sigset() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set before sigaddset reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        set
    }
}

/// `setsockopt(fd, level, name, value)` for a value passed by reference (an `int`, a
/// `sock_fprog`, …); the error is the OS's.
pub fn set_socket_option<T>(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` is a live `T` for the whole call and its exact size is passed; the
    // kernel only reads (or copies) it. A bad fd or option yields an error, not UB.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn recv_reports_would_block_then_data_then_eof() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(
            recv_nonblocking(b.as_raw_fd(), &mut buf).unwrap(),
            Transfer::WouldBlock
        );
        a.write_all(b"hi").unwrap();
        assert_eq!(
            recv_nonblocking(b.as_raw_fd(), &mut buf).unwrap(),
            Transfer::Done(2)
        );
        drop(a);
        assert_eq!(
            recv_nonblocking(b.as_raw_fd(), &mut buf).unwrap(),
            Transfer::Done(0)
        );
    }

    #[test]
    fn send_gathers_slices_in_order() {
        let (a, b) = UnixStream::pair().unwrap();
        let n = send_nonblocking(a.as_raw_fd(), &[b"ab", b"", b"cde"]).unwrap();
        assert_eq!(n, Transfer::Done(5));
        let mut buf = [0u8; 8];
        assert_eq!(
            recv_nonblocking(b.as_raw_fd(), &mut buf).unwrap(),
            Transfer::Done(5)
        );
        assert_eq!(&buf[..5], b"abcde");
    }
}
