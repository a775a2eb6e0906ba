//! Batched UDP I/O for the media workers: `recvmmsg(2)` in, `sendmmsg(2)` out.
//!
//! This is the only module of the relay with `unsafe` code, as `quinn-udp` is for quinn. A
//! [`Batch`] owns the buffers of up to [`BATCH`] datagrams and the kernel message headers that
//! point into them, all in one heap block allocated once per worker, so the packet path never
//! allocates. One `recvmmsg` fills it from a socket; the caller inspects and rewrites the
//! datagrams in place and queues the ones to send; one `sendmmsg` sends them from the same
//! buffers without a copy.
//!
//! Invariants the `unsafe` blocks rely on:
//! * the header arrays are rebuilt from `&mut self` right before each call, so every pointer
//!   the kernel sees points into `self` and is valid (and unaliased) for the whole call;
//! * each `iov_len` is at most the size of the buffer it describes, each `msg_namelen` at most
//!   the size of its address buffer;
//! * the kernel writes only within those bounds and reports lengths (`msg_len`, `msg_namelen`)
//!   that are bounds-checked again before use.
//!
//! Addresses are kept in `sockaddr_in6`-sized buffers. A `sockaddr_in` fits in one with its
//! port and address at the offsets of `sin6_port` and `sin6_flowinfo` (checked at compile time
//! below), so both families are read and written with safe field accesses.

#![allow(unsafe_code)]

use std::io;
use std::mem::{offset_of, size_of};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::RawFd;

/// Datagrams per system call. 32 amortises the syscall (the gain flattens out beyond that on
/// loopback) while keeping one worker's buffers at 64 KiB, warm in L2.
pub(crate) const BATCH: usize = 32;

/// Largest datagram relayed. RTP is sized to the path MTU (RFC 3550 §11); anything that does not
/// fit in 2 KiB is reported as truncated and dropped.
pub(crate) const BUF_LEN: usize = 2048;

// A sockaddr_in laid over a sockaddr_in6: same family field, port at the same offset, the IPv4
// address where sin6_flowinfo is. The conversions below depend on it.
const _: () = {
    assert!(
        offset_of!(libc::sockaddr_in, sin_family) == offset_of!(libc::sockaddr_in6, sin6_family)
    );
    assert!(offset_of!(libc::sockaddr_in, sin_port) == offset_of!(libc::sockaddr_in6, sin6_port));
    assert!(
        offset_of!(libc::sockaddr_in, sin_addr) == offset_of!(libc::sockaddr_in6, sin6_flowinfo)
    );
    assert!(size_of::<libc::sockaddr_in>() <= size_of::<libc::sockaddr_in6>());
};

const SIN_LEN: libc::socklen_t = size_of::<libc::sockaddr_in>() as libc::socklen_t;
const SIN6_LEN: libc::socklen_t = size_of::<libc::sockaddr_in6>() as libc::socklen_t;

/// Result of [`Batch::flush`]: datagrams sent and not sent, by the tag given to
/// [`Batch::queue`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SendCounts {
    /// Sent, indexed by tag.
    pub(crate) sent: [u32; 2],
    /// Not sent (socket buffer full, or refused), indexed by tag.
    pub(crate) failed: [u32; 2],
}

/// Buffers and headers for one batch of datagrams. Not `Send`: it holds raw pointers, and each
/// worker makes its own.
pub(crate) struct Batch {
    inner: Box<Inner>,
}

struct Inner {
    bufs: [[u8; BUF_LEN]; BATCH],
    /// Source of each received datagram.
    sources: [libc::sockaddr_in6; BATCH],
    recv_iov: [libc::iovec; BATCH],
    recv_hdr: [libc::mmsghdr; BATCH],
    /// Datagrams in the buffers after the last `recv`.
    received: usize,
    /// Queued sends: buffer index, length, tag; destinations alongside.
    queued: [(u8, u16, u8); BATCH],
    dests: [libc::sockaddr_in6; BATCH],
    send_iov: [libc::iovec; BATCH],
    send_hdr: [libc::mmsghdr; BATCH],
    n_queued: usize,
}

fn empty_sockaddr() -> libc::sockaddr_in6 {
    libc::sockaddr_in6 {
        sin6_family: 0,
        sin6_port: 0,
        sin6_flowinfo: 0,
        sin6_addr: libc::in6_addr { s6_addr: [0; 16] },
        sin6_scope_id: 0,
    }
}

fn empty_iovec() -> libc::iovec {
    libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }
}

fn empty_mmsghdr() -> libc::mmsghdr {
    // SAFETY: mmsghdr is a plain C struct of integers and raw pointers (msghdr may carry private
    // padding fields on some libcs, hence no struct literal); all-zero is a valid value: null
    // pointers with zero lengths.
    unsafe { std::mem::zeroed() }
}

impl Batch {
    /// Allocates the buffers (about 70 KiB), once per worker.
    pub(crate) fn new() -> Batch {
        Batch {
            inner: Box::new(Inner {
                bufs: [[0; BUF_LEN]; BATCH],
                sources: [empty_sockaddr(); BATCH],
                recv_iov: [empty_iovec(); BATCH],
                recv_hdr: [empty_mmsghdr(); BATCH],
                received: 0,
                queued: [(0, 0, 0); BATCH],
                dests: [empty_sockaddr(); BATCH],
                send_iov: [empty_iovec(); BATCH],
                send_hdr: [empty_mmsghdr(); BATCH],
                n_queued: 0,
            }),
        }
    }

    /// Receives up to [`BATCH`] datagrams from the non-blocking socket `fd`; returns how many.
    /// `WouldBlock` when none is waiting. Clears the send queue.
    pub(crate) fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let b = &mut *self.inner;
        b.received = 0;
        b.n_queued = 0;
        for i in 0..BATCH {
            b.recv_iov[i] =
                libc::iovec { iov_base: b.bufs[i].as_mut_ptr().cast(), iov_len: BUF_LEN };
            let hdr = &mut b.recv_hdr[i].msg_hdr;
            hdr.msg_name = (&raw mut b.sources[i]).cast();
            hdr.msg_namelen = SIN6_LEN;
            hdr.msg_iov = &raw mut b.recv_iov[i];
            hdr.msg_iovlen = 1;
            hdr.msg_control = std::ptr::null_mut();
            hdr.msg_controllen = 0;
            hdr.msg_flags = 0;
            b.recv_hdr[i].msg_len = 0;
        }
        // SAFETY: recv_hdr holds BATCH headers, each pointing at its own iovec, buffer and
        // address buffer inside `b`, with the sizes of those buffers (module invariants); `b` is
        // exclusively borrowed for the call. A null timeout is allowed.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                b.recv_hdr.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        b.received = (n as usize).min(BATCH);
        Ok(b.received)
    }

    /// Datagram `i` of the last `recv` and its source; `None` (drop it) when it was truncated,
    /// its source is not IPv4/IPv6, or `i` is out of range.
    pub(crate) fn datagram(&mut self, i: usize) -> Option<(&mut [u8], SocketAddr)> {
        let b = &mut *self.inner;
        if i >= b.received {
            return None;
        }
        let hdr = &b.recv_hdr[i];
        if hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            return None;
        }
        let len = (hdr.msg_len as usize).min(BUF_LEN);
        let source = decode_addr(&b.sources[i], hdr.msg_hdr.msg_namelen)?;
        Some((&mut b.bufs[i][..len], source))
    }

    /// The whole buffer of datagram `i` of the last `recv` ([`BUF_LEN`] bytes), for a rewrite
    /// that changes its length (SRTP adds a tag); `None` if `i` is out of range.
    pub(crate) fn buffer(&mut self, i: usize) -> Option<&mut [u8]> {
        let b = &mut *self.inner;
        if i >= b.received {
            return None;
        }
        Some(&mut b.bufs[i][..])
    }

    /// Puts `data` into buffer `i` as if received, for tests and benchmarks that send
    /// generated packets through [`Batch::queue`] and [`Batch::flush`].
    #[cfg(test)]
    pub(crate) fn stage(&mut self, i: usize, data: &[u8]) {
        let b = &mut *self.inner;
        let len = data.len().min(BUF_LEN);
        b.bufs[i][..len].copy_from_slice(&data[..len]);
        b.recv_hdr[i].msg_len = len as libc::c_uint;
        b.recv_hdr[i].msg_hdr.msg_flags = 0;
        b.received = b.received.max(i + 1);
    }

    /// Queues datagram `i` (its first `len` bytes, as possibly rewritten) to be sent to `dest`
    /// by the next [`Batch::flush`]. `tag` (0 or 1) only sorts the counts. Returns `false` if
    /// `i` or `len` is out of range.
    pub(crate) fn queue(&mut self, i: usize, len: usize, dest: SocketAddr, tag: usize) -> bool {
        let b = &mut *self.inner;
        if i >= b.received || len > BUF_LEN || b.n_queued >= BATCH || tag > 1 {
            return false;
        }
        let k = b.n_queued;
        b.queued[k] = (i as u8, len as u16, tag as u8);
        encode_addr(dest, &mut b.dests[k]);
        b.n_queued += 1;
        true
    }

    /// Sends the queued datagrams through the non-blocking socket `fd`, all of them in one
    /// `sendmmsg` when the socket takes them. A datagram the kernel refuses is skipped; when the
    /// socket buffer is full the rest are dropped (a relay does not queue: late media is
    /// useless, and a queue would need memory per packet).
    pub(crate) fn flush(&mut self, fd: RawFd) -> SendCounts {
        let b = &mut *self.inner;
        let n = b.n_queued;
        b.n_queued = 0;
        let mut counts = SendCounts::default();
        for k in 0..n {
            let (i, len, _) = b.queued[k];
            b.send_iov[k] = libc::iovec {
                iov_base: b.bufs[usize::from(i)].as_mut_ptr().cast(),
                iov_len: usize::from(len),
            };
            let hdr = &mut b.send_hdr[k].msg_hdr;
            hdr.msg_name = (&raw mut b.dests[k]).cast();
            hdr.msg_namelen =
                if i32::from(b.dests[k].sin6_family) == libc::AF_INET { SIN_LEN } else { SIN6_LEN };
            hdr.msg_iov = &raw mut b.send_iov[k];
            hdr.msg_iovlen = 1;
            hdr.msg_control = std::ptr::null_mut();
            hdr.msg_controllen = 0;
            hdr.msg_flags = 0;
        }
        let mut start = 0;
        while start < n {
            // SAFETY: send_hdr[start..n] are headers built above from `b`, each pointing at its
            // own iovec (into a buffer of `b`, length <= BUF_LEN) and destination address
            // buffer; `b` is exclusively borrowed for the call; `n - start <= BATCH`.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    b.send_hdr.as_mut_ptr().add(start),
                    (n - start) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if r > 0 {
                let sent = (r as usize).min(n - start);
                for k in start..start + sent {
                    counts.sent[usize::from(b.queued[k].2)] += 1;
                }
                start += sent;
                continue;
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock => {
                    for k in start..n {
                        counts.failed[usize::from(b.queued[k].2)] += 1;
                    }
                    break;
                }
                // sendmmsg reports an error only for the first datagram it tried: skip it.
                _ => {
                    counts.failed[usize::from(b.queued[start].2)] += 1;
                    start += 1;
                }
            }
        }
        counts
    }
}

/// Reads an address the kernel wrote into a `sockaddr_in6`-sized buffer.
fn decode_addr(sa: &libc::sockaddr_in6, len: libc::socklen_t) -> Option<SocketAddr> {
    let port = u16::from_be(sa.sin6_port);
    match i32::from(sa.sin6_family) {
        libc::AF_INET if len >= SIN_LEN => {
            // sin_addr.s_addr (network byte order) overlays sin6_flowinfo: its bytes in memory
            // order are the address octets.
            let ip = Ipv4Addr::from(sa.sin6_flowinfo.to_ne_bytes());
            Some(SocketAddr::new(IpAddr::V4(ip), port))
        }
        libc::AF_INET6 if len >= SIN6_LEN => {
            let ip = Ipv6Addr::from(sa.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(ip, port, 0, sa.sin6_scope_id)))
        }
        _ => None,
    }
}

/// Writes `addr` into a `sockaddr_in6`-sized buffer, as a `sockaddr_in` for IPv4.
fn encode_addr(addr: SocketAddr, out: &mut libc::sockaddr_in6) {
    *out = empty_sockaddr();
    out.sin6_port = addr.port().to_be();
    match addr {
        SocketAddr::V4(a) => {
            out.sin6_family = libc::AF_INET as libc::sa_family_t;
            out.sin6_flowinfo = u32::from_ne_bytes(a.ip().octets());
        }
        SocketAddr::V6(a) => {
            out.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            out.sin6_flowinfo = a.flowinfo().to_be();
            out.sin6_addr.s6_addr = a.ip().octets();
            out.sin6_scope_id = a.scope_id();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    use super::*;

    #[test]
    fn addresses_round_trip() {
        for addr in ["127.0.0.2:5004", "[::1]:65535", "[fe80::1%3]:1", "0.0.0.0:0"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let mut sa = empty_sockaddr();
            encode_addr(addr, &mut sa);
            let len = if addr.is_ipv4() { SIN_LEN } else { SIN6_LEN };
            assert_eq!(decode_addr(&sa, len), Some(addr));
            assert_eq!(decode_addr(&sa, len - 1), None);
        }
    }

    #[test]
    fn receives_and_sends_a_batch() {
        let relay = UdpSocket::bind("127.0.0.1:0").unwrap();
        relay.set_nonblocking(true).unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut batch = Batch::new();
        assert_eq!(batch.recv(relay.as_raw_fd()).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        for i in 0..40u8 {
            peer.send_to(&[i; 100], relay.local_addr().unwrap()).unwrap();
        }
        let mut got = 0;
        while got < 40 {
            let n = batch.recv(relay.as_raw_fd()).unwrap();
            assert!(n <= BATCH);
            for i in 0..n {
                let (data, src) = batch.datagram(i).unwrap();
                assert_eq!(src, peer.local_addr().unwrap());
                assert_eq!(data.len(), 100);
                assert_eq!(data[0] as usize, got + i);
                data[1] = 0xee;
                assert!(batch.queue(i, 50, src, i % 2));
            }
            assert!(batch.datagram(n).is_none());
            let counts = batch.flush(relay.as_raw_fd());
            assert_eq!(counts.sent[0] + counts.sent[1], n as u32);
            got += n;
        }
        let mut buf = [0u8; 200];
        for i in 0..40u8 {
            let (len, _) = peer.recv_from(&mut buf).unwrap();
            assert_eq!(len, 50);
            assert_eq!(buf[..2], [i, 0xee]);
        }
    }

    #[test]
    fn truncated_datagrams_are_refused() {
        let relay = UdpSocket::bind("127.0.0.1:0").unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.send_to(&vec![0u8; BUF_LEN + 1], relay.local_addr().unwrap()).unwrap();
        relay.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        // Wait for it without consuming it.
        relay.peek(&mut [0u8; 1]).unwrap();
        relay.set_nonblocking(true).unwrap();
        let mut batch = Batch::new();
        assert_eq!(batch.recv(relay.as_raw_fd()).unwrap(), 1);
        assert!(batch.datagram(0).is_none());
    }

    #[test]
    fn a_refused_datagram_does_not_stop_the_others() {
        // An IPv6 destination through an IPv4 socket fails; the IPv4 ones still go.
        let relay = UdpSocket::bind("127.0.0.1:0").unwrap();
        relay.set_nonblocking(true).unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        for _ in 0..3 {
            peer.send_to(&[1; 20], relay.local_addr().unwrap()).unwrap();
        }
        // Loopback queues each datagram during send_to: all three are waiting.
        let mut batch = Batch::new();
        assert_eq!(batch.recv(relay.as_raw_fd()).unwrap(), 3);
        let v6: SocketAddr = "[::1]:9".parse().unwrap();
        assert!(batch.queue(0, 20, peer.local_addr().unwrap(), 0));
        assert!(batch.queue(1, 20, v6, 1));
        assert!(batch.queue(2, 20, peer.local_addr().unwrap(), 0));
        let counts = batch.flush(relay.as_raw_fd());
        assert_eq!(counts, SendCounts { sent: [2, 0], failed: [0, 1] });
        let mut buf = [0u8; 64];
        peer.recv_from(&mut buf).unwrap();
        peer.recv_from(&mut buf).unwrap();
    }
}
