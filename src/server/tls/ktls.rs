//! Kernel TLS (kTLS) for what a TLS watcher sends: once its TLS 1.3 handshake is over, the
//! sending key, IV and sequence number go to the kernel (`TCP_ULP` "tls", then `TLS_TX`), and
//! the socket takes plaintext from then on. The watcher plane then queues the broadcast's
//! shared plaintext frame on it like on any plain record, and the kernel seals it on the way
//! out: no per-record ciphertext buffer, no user-space AEAD. Receiving stays in user space
//! ([`super::records::Records`] opens what the client sends: pongs, commands, alerts).
//!
//! `--ktls auto` (the default) turns it on where the kernel offers the `tls` ULP and logs the
//! choice at start; `--ktls off` keeps every TLS record sealed in user space. What a kTLS
//! record must still send itself — `close_notify` or a fatal alert — goes out as a record of
//! its own type (`sendmsg` with `TLS_SET_RECORD_TYPE`) once everything queued before it is
//! written. A client's `KeyUpdate` that asks for ours ends such a record cleanly (flushed,
//! `close_notify`, FIN) instead: handing a new key to the kernel needs Linux ≥ 6.14's TLS 1.3
//! rekey, which this layer does not assume.

use std::io;
use std::mem::size_of;
use std::os::fd::RawFd;

use super::key_schedule::{wipe, Suite};

/// Whether TLS watchers' sends go through the kernel's TLS (`--ktls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum KtlsMode {
    /// Where the kernel offers the `tls` ULP.
    #[default]
    Auto,
    /// Never: every TLS record is sealed in user space.
    Off,
}

/// What the start-up probe found: the kernel's `tls` ULP is there, or why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    /// `setsockopt(TCP_ULP, "tls")` is known to this kernel.
    Available,
    /// It is not (the reason, for the log).
    Unavailable(String),
}

/// Asks the kernel whether it has the `tls` ULP: on a fresh, unconnected TCP socket
/// `setsockopt(TCP_ULP, "tls")` fails with `ENOTCONN` when the ULP exists (it is set only on a
/// connected socket) and `ENOENT` when it does not (the kernel may load the module to answer).
pub fn probe() -> Availability {
    // SAFETY: a plain socket(2) call; the descriptor is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Availability::Unavailable(format!(
            "no socket to probe with: {}",
            io::Error::last_os_error()
        ));
    }
    let result = set_ulp(fd);
    // SAFETY: `fd` is the socket made above, owned here.
    unsafe { libc::close(fd) };
    match result {
        Ok(()) => Availability::Available,
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Availability::Available,
        Err(e) => {
            let listed = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "unreadable".into());
            Availability::Unavailable(format!(
                "this kernel has no tls ULP (TCP_ULP: {e}; tcp_available_ulp: {listed:?})"
            ))
        }
    }
}

/// Decides whether this server uses kTLS, from `mode` and what the kernel offers, and says
/// so once in the log.
pub fn decide(mode: KtlsMode) -> bool {
    match (mode, probe()) {
        (KtlsMode::Off, _) => {
            tracing::info!("kTLS off (--ktls off): TLS watchers' records are sealed in user space");
            false
        }
        (KtlsMode::Auto, Availability::Available) => {
            tracing::info!(
                "kTLS on: the kernel seals what TLS 1.3 watchers are sent (the shared plaintext frame goes to every record)"
            );
            true
        }
        (KtlsMode::Auto, Availability::Unavailable(why)) => {
            tracing::info!("kTLS off: {why}; TLS watchers' records are sealed in user space");
            false
        }
    }
}

/// The sending state a kernel's `TLS_TX` takes: one of the kernel's `tls12_crypto_info_*`
/// structures (TLS 1.3 uses the same ones), wiped when dropped.
pub enum TxInfo {
    /// `TLS_AES_128_GCM_SHA256`.
    Aes128Gcm(libc::tls12_crypto_info_aes_gcm_128),
    /// `TLS_AES_256_GCM_SHA384`.
    Aes256Gcm(libc::tls12_crypto_info_aes_gcm_256),
    /// `TLS_CHACHA20_POLY1305_SHA256`.
    Chacha20Poly1305(libc::tls12_crypto_info_chacha20_poly1305),
}

impl TxInfo {
    /// The structure for sending under `key` and `iv` (RFC 8446 §5.3: the write IV, which the
    /// kernel takes as a 4-byte salt and an 8-byte IV for AES-GCM) from record `seq` on.
    pub fn new(suite: Suite, key: &[u8], iv: &[u8; 12], seq: u64) -> TxInfo {
        let info = |cipher_type: u16| libc::tls_crypto_info {
            version: libc::TLS_1_3_VERSION,
            cipher_type,
        };
        let rec_seq = seq.to_be_bytes();
        match suite {
            Suite::Aes128Gcm => {
                let mut s = libc::tls12_crypto_info_aes_gcm_128 {
                    info: info(libc::TLS_CIPHER_AES_GCM_128),
                    iv: [0; 8],
                    key: [0; 16],
                    salt: [0; 4],
                    rec_seq,
                };
                s.key.copy_from_slice(&key[..16]);
                s.salt.copy_from_slice(&iv[..4]);
                s.iv.copy_from_slice(&iv[4..]);
                TxInfo::Aes128Gcm(s)
            }
            Suite::Aes256Gcm => {
                let mut s = libc::tls12_crypto_info_aes_gcm_256 {
                    info: info(libc::TLS_CIPHER_AES_GCM_256),
                    iv: [0; 8],
                    key: [0; 32],
                    salt: [0; 4],
                    rec_seq,
                };
                s.key.copy_from_slice(&key[..32]);
                s.salt.copy_from_slice(&iv[..4]);
                s.iv.copy_from_slice(&iv[4..]);
                TxInfo::Aes256Gcm(s)
            }
            Suite::Chacha20Poly1305 => {
                let mut s = libc::tls12_crypto_info_chacha20_poly1305 {
                    info: info(libc::TLS_CIPHER_CHACHA20_POLY1305),
                    iv: [0; 12],
                    key: [0; 32],
                    salt: [],
                    rec_seq,
                };
                s.key.copy_from_slice(&key[..32]);
                s.iv.copy_from_slice(iv);
                TxInfo::Chacha20Poly1305(s)
            }
        }
    }

    /// The structure as the bytes `setsockopt` passes.
    pub fn as_bytes(&self) -> &[u8] {
        let (ptr, len): (*const u8, usize) = match self {
            TxInfo::Aes128Gcm(s) => ((s as *const _ as *const u8), size_of_val(s)),
            TxInfo::Aes256Gcm(s) => ((s as *const _ as *const u8), size_of_val(s)),
            TxInfo::Chacha20Poly1305(s) => ((s as *const _ as *const u8), size_of_val(s)),
        };
        // SAFETY: every variant is a `repr(C)` structure of byte arrays and two u16s with no
        // padding (checked by a test against the kernel's sizes); `ptr` and `len` describe it
        // and the slice borrows `self`.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }

    fn wipe(&mut self) {
        match self {
            TxInfo::Aes128Gcm(s) => {
                wipe(&mut s.key);
                wipe(&mut s.iv);
                wipe(&mut s.salt);
            }
            TxInfo::Aes256Gcm(s) => {
                wipe(&mut s.key);
                wipe(&mut s.iv);
                wipe(&mut s.salt);
            }
            TxInfo::Chacha20Poly1305(s) => {
                wipe(&mut s.key);
                wipe(&mut s.iv);
            }
        }
    }
}

impl Drop for TxInfo {
    fn drop(&mut self) {
        self.wipe();
    }
}

fn set_ulp(fd: RawFd) -> io::Result<()> {
    let name = b"tls";
    // SAFETY: setsockopt reads `name.len()` bytes from a live array.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_ULP,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Hands socket `fd`'s sending side to the kernel's TLS: from here on the kernel seals what
/// is written to it as application data under `tx`. On error nothing was handed over and the
/// socket sends what it is given as before (the ULP may be attached, but with no `TLS_TX`
/// it passes bytes through unchanged).
pub fn enable_tx(fd: RawFd, tx: &TxInfo) -> io::Result<()> {
    set_ulp(fd)?;
    let bytes = tx.as_bytes();
    // SAFETY: setsockopt reads `bytes.len()` bytes of the live structure.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_TLS,
            libc::TLS_TX,
            bytes.as_ptr().cast(),
            bytes.len() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The TLS content type of an alert record.
pub const ALERT: u8 = 21;

/// Sends `body` on kTLS socket `fd` as one record of content type `content_type` (an alert:
/// `close_notify` or a fatal one), without waiting: a socket whose buffer is full drops it
/// (the FIN that follows still ends the stream). Returns the bytes taken.
pub fn send_record(fd: RawFd, content_type: u8, body: &[u8]) -> io::Result<usize> {
    // One cmsghdr carrying one byte, aligned as the kernel reads it.
    const SPACE: usize = 32;
    #[repr(C, align(8))]
    struct Control([u8; SPACE]);
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(1) } as usize;
    debug_assert!(space <= SPACE);
    let mut control = Control([0; SPACE]);
    let mut iov = libc::iovec {
        iov_base: body.as_ptr() as *mut libc::c_void,
        iov_len: body.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty one; its fields are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: `msg` points at `control`, which has room for one cmsghdr with one byte of data
    // (`space`); CMSG_FIRSTHDR/CMSG_DATA stay inside it, and sendmsg reads only `iov` (the
    // caller's live `body`) and `control`.
    let rc = unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_TLS;
        (*cmsg).cmsg_type = libc::TLS_SET_RECORD_TYPE;
        (*cmsg).cmsg_len = libc::CMSG_LEN(1) as _;
        *libc::CMSG_DATA(cmsg) = content_type;
        libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

const _: () = assert!(size_of::<libc::tls12_crypto_info_aes_gcm_128>() == 40);
const _: () = assert!(size_of::<libc::tls12_crypto_info_aes_gcm_256>() == 56);
const _: () = assert!(size_of::<libc::tls12_crypto_info_chacha20_poly1305>() == 56);

#[cfg(test)]
mod tests {
    use super::*;

    fn listed() -> bool {
        std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp")
            .is_ok_and(|s| s.split_whitespace().any(|u| u == "tls"))
    }

    #[test]
    fn the_aes_128_structure_is_the_kernels_layout() {
        let key: Vec<u8> = (1..=16).collect();
        let iv: [u8; 12] = std::array::from_fn(|i| 0xa0 + i as u8);
        let info = TxInfo::new(Suite::Aes128Gcm, &key, &iv, 0x0102_0304_0506_0708);
        let b = info.as_bytes();
        // struct tls_crypto_info { __u16 version; __u16 cipher_type; } then iv[8], key[16],
        // salt[4], rec_seq[8] (linux/tls.h).
        assert_eq!(b.len(), 40);
        assert_eq!(&b[0..2], &0x0304u16.to_ne_bytes());
        assert_eq!(&b[2..4], &51u16.to_ne_bytes());
        assert_eq!(&b[4..12], &iv[4..]);
        assert_eq!(&b[12..28], &key[..]);
        assert_eq!(&b[28..32], &iv[..4]);
        assert_eq!(&b[32..40], &[1, 2, 3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn the_aes_256_and_chacha_structures_are_the_kernels_layouts() {
        let key: Vec<u8> = (1..=32).collect();
        let iv: [u8; 12] = std::array::from_fn(|i| 0xa0 + i as u8);
        let aes = TxInfo::new(Suite::Aes256Gcm, &key, &iv, 7);
        let b = aes.as_bytes();
        assert_eq!(b.len(), 56);
        assert_eq!(&b[2..4], &52u16.to_ne_bytes());
        assert_eq!(&b[4..12], &iv[4..]);
        assert_eq!(&b[12..44], &key[..]);
        assert_eq!(&b[44..48], &iv[..4]);
        assert_eq!(&b[48..56], &7u64.to_be_bytes());
        let chacha = TxInfo::new(Suite::Chacha20Poly1305, &key, &iv, 7);
        let b = chacha.as_bytes();
        // iv[12], key[32], salt[0], rec_seq[8].
        assert_eq!(b.len(), 56);
        assert_eq!(&b[2..4], &54u16.to_ne_bytes());
        assert_eq!(&b[4..16], &iv[..]);
        assert_eq!(&b[16..48], &key[..]);
        assert_eq!(&b[48..56], &7u64.to_be_bytes());
    }

    #[test]
    fn wiping_clears_the_key_and_iv() {
        let key = [0x55; 16];
        let mut info = TxInfo::new(Suite::Aes128Gcm, &key, &[0x66; 12], 1);
        info.wipe();
        let b = info.as_bytes();
        assert!(b[4..32].iter().all(|&x| x == 0), "{b:?}");
    }

    #[test]
    fn the_probe_agrees_with_the_kernels_list_of_ulps() {
        // The kernel may load the module on demand, so a listed ULP is always available, and
        // an unavailable one is never listed.
        match probe() {
            Availability::Available => {}
            Availability::Unavailable(why) => {
                assert!(!listed(), "tls is listed, yet: {why}");
                assert!(why.contains("tls ULP"), "{why}");
            }
        }
        if listed() {
            assert_eq!(probe(), Availability::Available);
        }
    }

    #[test]
    fn off_is_off_whatever_the_kernel_offers() {
        assert!(!decide(KtlsMode::Off));
    }

    #[test]
    fn enabling_on_a_connected_socket_works_exactly_where_the_probe_says_so() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server, _) = listener.accept().unwrap();
        use std::os::fd::AsRawFd;
        let info = TxInfo::new(Suite::Aes128Gcm, &[7; 16], &[9; 12], 0);
        let result = enable_tx(client.as_raw_fd(), &info);
        match probe() {
            Availability::Available => result.expect("the kernel offers the tls ULP"),
            Availability::Unavailable(_) => {
                assert!(result.is_err());
                eprintln!("skipped the kTLS half: this kernel has no tls ULP");
            }
        }
    }
}
