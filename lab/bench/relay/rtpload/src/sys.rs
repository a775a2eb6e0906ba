//! Thin wrappers over the Linux calls the generator needs and std lacks: `sendmmsg`/`recvmmsg`
//! (one system call per batch instead of per packet, so that the generator's own cost stays well
//! below the relay's), kernel receive timestamps (`SO_TIMESTAMPNS`), forced socket buffer sizes,
//! epoll, timerfd and clocks.
//!
//! All `unsafe` of the generator is in this module. The invariant every call relies on: the
//! pointers placed in `mmsghdr`/`iovec` point into buffers owned by the same struct, which are
//! allocated once and never resized while a call that uses them runs.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Largest batch for one `sendmmsg`/`recvmmsg`.
pub const BATCH_MAX: usize = 64;
/// Receive buffer per datagram: larger than any RTP packet the benchmark sends (172 bytes).
const RECV_BUF: usize = 2048;
/// Control buffer per datagram: room for one `SCM_TIMESTAMPNS` (a `timespec`).
const CMSG_BUF: usize = 64;

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) }
}

/// `CLOCK_MONOTONIC` in nanoseconds: pacing and durations.
pub fn mono_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// `CLOCK_REALTIME` in nanoseconds: the send stamp in each packet, because the kernel's receive
/// timestamp (`SO_TIMESTAMPNS`) is on this clock.
pub fn real_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    // SAFETY: clock_gettime writes one timespec into `ts`, which lives on this stack frame.
    let mut ts: libc::timespec = unsafe { zeroed() };
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Timer slack of this thread to 1 ns: the default 50 us would make every tick late by up to
/// that much, and the tick is 100 us.
pub fn set_min_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes an integer argument and touches no memory of ours.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) };
}

/// Raises the open-file limit to its hard maximum (one socket per leg needs thousands of fds).
pub fn raise_nofile_limit() {
    // SAFETY: getrlimit/setrlimit read and write one rlimit struct on this stack frame.
    unsafe {
        let mut r: libc::rlimit = zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the option value is one c_int on this stack frame, and its size is passed.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &v as *const libc::c_int as *const libc::c_void,
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

/// A nonblocking UDP socket bound on `addr`, with large buffers and kernel receive timestamps.
///
/// The buffers are forced (`SO_*BUFFORCE`, root only; falls back to the capped call) so that
/// the generator's own sockets never drop: any drop must be the relay's.
pub fn bind_udp(addr: SocketAddrV4, buf_bytes: usize) -> io::Result<UdpSocket> {
    let s = UdpSocket::bind(addr)?;
    s.set_nonblocking(true)?;
    let fd = s.as_raw_fd();
    let b = buf_bytes.min(i32::MAX as usize) as libc::c_int;
    if setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, b).is_err() {
        setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, b)?;
    }
    if setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, b).is_err() {
        setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, b)?;
    }
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)?;
    Ok(s)
}

fn to_sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain old data; all-zero is a valid value.
    let mut sa: libc::sockaddr_in = unsafe { zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = a.port().to_be();
    sa.sin_addr = libc::in_addr { s_addr: u32::from(*a.ip()).to_be() };
    sa
}

fn from_sockaddr(sa: &libc::sockaddr_in) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)), u16::from_be(sa.sin_port))
}

/// Packets queued for one `sendmmsg` on one socket, each with its own destination.
pub struct SendBatch {
    bufs: Vec<[u8; RECV_BUF]>,
    lens: Vec<usize>,
    addrs: Vec<libc::sockaddr_in>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    n: usize,
}

impl SendBatch {
    /// An empty batch of capacity [`BATCH_MAX`].
    pub fn new() -> SendBatch {
        SendBatch {
            bufs: vec![[0u8; RECV_BUF]; BATCH_MAX],
            lens: vec![0; BATCH_MAX],
            // SAFETY: plain old data; zero is valid for all three.
            addrs: vec![unsafe { zeroed() }; BATCH_MAX],
            iovs: vec![unsafe { zeroed() }; BATCH_MAX],
            hdrs: vec![unsafe { zeroed() }; BATCH_MAX],
            n: 0,
        }
    }

    /// Packets queued.
    pub fn len(&self) -> usize {
        self.n
    }

    /// True when no more packets fit.
    pub fn is_full(&self) -> bool {
        self.n == BATCH_MAX
    }

    /// Queues a packet to `dest`: `fill` writes it into the returned slot and returns its length.
    pub fn push(&mut self, dest: SocketAddrV4, fill: impl FnOnce(&mut [u8]) -> usize) {
        let i = self.n;
        self.lens[i] = fill(&mut self.bufs[i]);
        self.addrs[i] = to_sockaddr(dest);
        self.n += 1;
    }

    /// Sends the queued packets on `fd` and empties the batch. Returns how many the kernel took;
    /// the rest (only on a full send buffer, which the forced size makes unlikely) are dropped
    /// and reported by the caller as send errors.
    pub fn flush(&mut self, fd: RawFd) -> usize {
        let n = self.n;
        self.n = 0;
        if n == 0 {
            return 0;
        }
        for i in 0..n {
            self.iovs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr() as *mut libc::c_void,
                iov_len: self.lens[i],
            };
            // SAFETY: plain old data.
            let mut h: libc::mmsghdr = unsafe { zeroed() };
            h.msg_hdr.msg_name = &mut self.addrs[i] as *mut libc::sockaddr_in as *mut libc::c_void;
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_hdr.msg_iov = &mut self.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            self.hdrs[i] = h;
        }
        let mut done = 0;
        while done < n {
            // SAFETY: hdrs[done..n] point into self.bufs/addrs/iovs, alive and unmoved for the
            // whole call (module invariant).
            let r = unsafe {
                libc::sendmmsg(fd, self.hdrs[done..].as_mut_ptr(), (n - done) as libc::c_uint, 0)
            };
            if r <= 0 {
                let e = io::Error::last_os_error();
                if r < 0 && e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                break;
            }
            done += r as usize;
        }
        done
    }
}

/// One received datagram, as returned by [`RecvBatch::get`].
pub struct Received<'a> {
    /// The datagram.
    pub data: &'a [u8],
    /// Its source.
    pub from: SocketAddrV4,
    /// Kernel receive time (`CLOCK_REALTIME` ns), if the kernel attached one.
    pub kernel_ts: Option<u64>,
}

/// Buffers for one `recvmmsg` of up to [`BATCH_MAX`] datagrams with their timestamps.
pub struct RecvBatch {
    bufs: Vec<[u8; RECV_BUF]>,
    addrs: Vec<libc::sockaddr_in>,
    iovs: Vec<libc::iovec>,
    cmsgs: Vec<[u64; CMSG_BUF / 8]>,
    hdrs: Vec<libc::mmsghdr>,
}

impl RecvBatch {
    /// Empty buffers.
    pub fn new() -> RecvBatch {
        RecvBatch {
            bufs: vec![[0u8; RECV_BUF]; BATCH_MAX],
            // SAFETY: plain old data; zero is valid for all of them.
            addrs: vec![unsafe { zeroed() }; BATCH_MAX],
            iovs: vec![unsafe { zeroed() }; BATCH_MAX],
            cmsgs: vec![[0u64; CMSG_BUF / 8]; BATCH_MAX],
            hdrs: vec![unsafe { zeroed() }; BATCH_MAX],
        }
    }

    /// Receives up to [`BATCH_MAX`] datagrams without blocking; 0 when none is queued.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        for i in 0..BATCH_MAX {
            self.iovs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr() as *mut libc::c_void,
                iov_len: RECV_BUF,
            };
            // SAFETY: plain old data.
            let mut h: libc::mmsghdr = unsafe { zeroed() };
            h.msg_hdr.msg_name = &mut self.addrs[i] as *mut libc::sockaddr_in as *mut libc::c_void;
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_hdr.msg_iov = &mut self.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = self.cmsgs[i].as_mut_ptr() as *mut libc::c_void;
            h.msg_hdr.msg_controllen = CMSG_BUF;
            self.hdrs[i] = h;
        }
        loop {
            // SAFETY: hdrs point into self's buffers (module invariant); a null timeout is allowed.
            let r = unsafe {
                libc::recvmmsg(
                    fd,
                    self.hdrs.as_mut_ptr(),
                    BATCH_MAX as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if r >= 0 {
                return Ok(r as usize);
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock => return Ok(0),
                io::ErrorKind::Interrupted => continue,
                _ => return Err(e),
            }
        }
    }

    /// The `i`-th datagram of the last [`RecvBatch::recv`].
    pub fn get(&self, i: usize) -> Received<'_> {
        let h = &self.hdrs[i];
        let len = (h.msg_len as usize).min(RECV_BUF);
        let mut kernel_ts = None;
        // SAFETY: the kernel filled msg_control/msg_controllen of this header in the last
        // recvmmsg; the CMSG_* macros walk only inside that buffer.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&h.msg_hdr);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                    let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::timespec);
                    kernel_ts = Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
                }
                c = libc::CMSG_NXTHDR(&h.msg_hdr, c);
            }
        }
        Received { data: &self.bufs[i][..len], from: from_sockaddr(&self.addrs[i]), kernel_ts }
    }
}

/// A level-triggered epoll set whose events carry a `u64` token.
pub struct Epoll {
    fd: OwnedFd,
    events: Vec<libc::epoll_event>,
}

impl Epoll {
    /// A new set able to return `cap` events per wait.
    pub fn new(cap: usize) -> io::Result<Epoll> {
        // SAFETY: epoll_create1 returns a new fd that we own from here on.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Epoll { fd, events: vec![libc::epoll_event { events: 0, u64: 0 }; cap.max(1)] })
    }

    /// Watches `fd` for input, reporting `token`.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: token };
        // SAFETY: `ev` is read by the kernel during the call only.
        cvt(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) })
            .map(|_| ())
    }

    /// Waits up to `timeout_ms` (-1: forever) and returns the tokens of the ready fds.
    pub fn wait(&mut self, timeout_ms: i32, out: &mut Vec<u64>) -> io::Result<()> {
        out.clear();
        // SAFETY: the kernel writes at most events.len() entries into `events`.
        let r = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as libc::c_int,
                timeout_ms,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted { Ok(()) } else { Err(e) };
        }
        out.extend(self.events[..r as usize].iter().map(|e| e.u64));
        Ok(())
    }
}

/// A periodic `CLOCK_MONOTONIC` timerfd: the generator's tick.
pub struct TickTimer {
    fd: OwnedFd,
}

impl TickTimer {
    /// Fires every `period_ns`, first at `period_ns` from now.
    pub fn new(period_ns: u64) -> io::Result<TickTimer> {
        // SAFETY: timerfd_create returns a new fd that we own from here on. Blocking: `wait`
        // sleeps in read().
        let fd = cvt(unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_CLOEXEC) })?;
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let ts = libc::timespec {
            tv_sec: (period_ns / 1_000_000_000) as libc::time_t,
            tv_nsec: (period_ns % 1_000_000_000) as libc::c_long,
        };
        let spec = libc::itimerspec { it_interval: ts, it_value: ts };
        // SAFETY: `spec` is read during the call only; no old value requested.
        cvt(unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) })?;
        Ok(TickTimer { fd })
    }

    /// Sleeps until the next expiration (returns at once if one is pending).
    pub fn wait(&self) {
        let mut v = 0u64;
        // SAFETY: reads 8 bytes into `v`; EINTR just returns early, which is harmless.
        unsafe { libc::read(self.fd.as_raw_fd(), &mut v as *mut u64 as *mut libc::c_void, 8) };
    }
}

/// CPU time (user + system) this process has used, in nanoseconds.
pub fn self_cpu_ns() -> u64 {
    // SAFETY: getrusage writes one rusage struct on this stack frame.
    let mut ru: libc::rusage = unsafe { zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Clock ticks per second of `/proc/*/stat` CPU fields.
pub fn clk_tck() -> u64 {
    // SAFETY: sysconf only reads a constant.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v > 0 { v as u64 } else { 100 }
}
