//! A minimal SIP UAC and UAS over UDP, just enough to set up and tear down the benchmark's calls
//! through an SBC: INVITE (with our SDP) -> [1xx] -> 200 (with SDP) -> ACK, and later BYE -> 200.
//!
//! The UAC calls `sip:rlb<N>@<sbc>`; the SBC routes the call to its trunk, which is our UAS. The
//! SBC builds a new leg (new Call-ID, tags), so the UAS finds the call index again in the
//! Request-URI user (kept by the SBC), or failing that in the To user.
//!
//! Simplifications, fine on loopback against one B2BUA: ACK and BYE are sent to the SBC's
//! address (its Contact is that address anyway; a Record-Route set is still copied into Route
//! headers); requests are retransmitted every second until answered instead of with the RFC 3261
//! timers; the UAS answers any request other than INVITE and ACK (BYE, OPTIONS keep-alives) with
//! a 200.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::sdp;
use crate::sys::Epoll;

/// One call of the benchmark, as both sides of the SBC see it.
#[derive(Default)]
struct Call {
    /// Our caller RTP address (in the INVITE's SDP).
    a_rtp: Option<SocketAddrV4>,
    /// Our callee RTP address (in the 200's SDP).
    b_rtp: Option<SocketAddrV4>,
    call_id: String,
    invite: Vec<u8>,
    invite_sent: Option<Instant>,
    /// The To header of the 200 (with the SBC's tag), for ACK and BYE.
    to_hdr: Option<String>,
    routes: Vec<String>,
    remote_target: Option<String>,
    /// Where the caller must send RTP: the SDP of the 200.
    a_dest: Option<SocketAddrV4>,
    /// Where the callee must send RTP: the SDP of the INVITE that reached the UAS.
    b_dest: Option<SocketAddrV4>,
    /// The UAS's 200, kept for retransmitted INVITEs.
    uas_200: Option<Vec<u8>>,
    uas_acked: bool,
    failed: Option<String>,
    bye: Option<Vec<u8>>,
    bye_sent: Option<Instant>,
    bye_done: bool,
}

/// UAC and UAS sockets and the calls.
pub struct SipPeer {
    uac: UdpSocket,
    uas: UdpSocket,
    uac_addr: SocketAddrV4,
    uas_addr: SocketAddrV4,
    sbc: SocketAddrV4,
    run_id: u32,
    calls: Vec<Call>,
    /// Leg-B Call-ID (chosen by the SBC) -> call index.
    b_calls: HashMap<String, usize>,
    epoll: Epoll,
    buf: Vec<u8>,
    /// Requests received by the UAS other than INVITE/ACK/BYE (keep-alives): informational.
    pub uas_other_requests: u64,
    /// Retransmissions we made.
    pub retransmissions: u64,
}

const UAC_TOKEN: u64 = 0;
const UAS_TOKEN: u64 = 1;
const RETRANSMIT: Duration = Duration::from_secs(1);

impl SipPeer {
    /// Binds the UAC and UAS sockets.
    pub fn new(
        uac_addr: SocketAddrV4,
        uas_addr: SocketAddrV4,
        sbc: SocketAddrV4,
    ) -> io::Result<SipPeer> {
        let uac = UdpSocket::bind(uac_addr)?;
        let uas = UdpSocket::bind(uas_addr)?;
        uac.set_nonblocking(true)?;
        uas.set_nonblocking(true)?;
        let epoll = Epoll::new(4)?;
        epoll.add(uac.as_raw_fd(), UAC_TOKEN)?;
        epoll.add(uas.as_raw_fd(), UAS_TOKEN)?;
        Ok(SipPeer {
            uac,
            uas,
            uac_addr,
            uas_addr,
            sbc,
            run_id: std::process::id(),
            calls: Vec::new(),
            b_calls: HashMap::new(),
            epoll,
            buf: vec![0u8; 65536],
            uas_other_requests: 0,
            retransmissions: 0,
        })
    }

    /// Sets up one call per `(caller RTP, callee RTP)` pair, at most `rate` new INVITEs per
    /// second and `window` unanswered at once. Returns, per call, where the caller and the callee
    /// must send RTP (from the SDP each side received). Fails if a call is not up (200 received,
    /// ACK seen by the UAS) before `deadline`.
    pub fn setup(
        &mut self,
        legs: &[(SocketAddrV4, SocketAddrV4)],
        rate: u32,
        window: usize,
        deadline: Duration,
    ) -> io::Result<Vec<(SocketAddrV4, SocketAddrV4)>> {
        self.calls = legs
            .iter()
            .enumerate()
            .map(|(i, &(a, b))| Call {
                a_rtp: Some(a),
                b_rtp: Some(b),
                call_id: format!("rlb-{}-{i}@{}", self.run_id, self.uac_addr.ip()),
                ..Call::default()
            })
            .collect();
        let start = Instant::now();
        let mut next = 0usize;
        loop {
            let now = Instant::now();
            let allowed = ((now - start).as_secs_f64() * rate as f64) as usize + 1;
            let outstanding = self.calls[..next].iter().filter(|c| c.a_dest.is_none()).count();
            let mut room = window.saturating_sub(outstanding);
            while next < self.calls.len() && next < allowed && room > 0 {
                let msg = self.invite(next);
                self.uac.send_to(&msg, self.sbc)?;
                self.calls[next].invite = msg;
                self.calls[next].invite_sent = Some(now);
                next += 1;
                room -= 1;
            }
            self.poll(Duration::from_millis(2))?;
            if let Some((i, why)) =
                self.calls.iter().enumerate().find_map(|(i, c)| c.failed.clone().map(|w| (i, w)))
            {
                return Err(io::Error::other(format!("call {i} failed: {why}")));
            }
            let now = Instant::now();
            for i in 0..next {
                let c = &mut self.calls[i];
                if c.a_dest.is_none() && c.invite_sent.is_some_and(|t| now - t >= RETRANSMIT) {
                    self.uac.send_to(&c.invite, self.sbc)?;
                    c.invite_sent = Some(now);
                    self.retransmissions += 1;
                }
            }
            let up = self.calls.iter().filter(|c| c.a_dest.is_some() && c.uas_acked).count();
            if up == self.calls.len() {
                break;
            }
            if now - start > deadline {
                let answered = self.calls.iter().filter(|c| c.a_dest.is_some()).count();
                let reached = self.calls.iter().filter(|c| c.b_dest.is_some()).count();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "setup: after {deadline:?}, {next} INVITEs sent, {reached} reached the UAS, \
                         {answered} answered, {up} up (ACK seen) of {}",
                        self.calls.len()
                    ),
                ));
            }
        }
        Ok(self
            .calls
            .iter()
            .map(|c| (c.a_dest.expect("call is up"), c.b_dest.expect("call is up")))
            .collect())
    }

    /// Sends BYE on every call (at most `rate` per second) and waits for the 200s until
    /// `deadline`. Returns the number of calls whose BYE was answered.
    pub fn teardown(&mut self, rate: u32, deadline: Duration) -> io::Result<usize> {
        let start = Instant::now();
        let mut next = 0usize;
        loop {
            let now = Instant::now();
            let allowed = ((now - start).as_secs_f64() * rate as f64) as usize + 1;
            while next < self.calls.len() && next < allowed {
                let msg = self.in_dialog(next, "BYE", 2);
                self.uac.send_to(&msg, self.sbc)?;
                self.calls[next].bye = Some(msg);
                self.calls[next].bye_sent = Some(now);
                next += 1;
            }
            self.poll(Duration::from_millis(2))?;
            let now = Instant::now();
            for c in &mut self.calls[..next] {
                if !c.bye_done && c.bye_sent.is_some_and(|t| now - t >= RETRANSMIT) {
                    if let Some(b) = &c.bye {
                        self.uac.send_to(b, self.sbc)?;
                    }
                    c.bye_sent = Some(now);
                    self.retransmissions += 1;
                }
            }
            let done = self.calls.iter().filter(|c| c.bye_done).count();
            if done == self.calls.len() || now - start > deadline {
                return Ok(done);
            }
        }
    }

    fn invite(&self, i: usize) -> Vec<u8> {
        let c = &self.calls[i];
        let body = sdp::build(c.a_rtp.expect("set in setup"), i as u64 + 1);
        let (ip, sbc) = (self.uac_addr.ip(), self.sbc);
        format!(
            "INVITE sip:rlb{i}@{sbc} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {uac};branch=z9hG4bK-rlb{run}-{i}-inv;rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:rlbA{i}@{ip}>;tag=a{run}x{i}\r\n\
             To: <sip:rlb{i}@{sbc}>\r\n\
             Call-ID: {cid}\r\n\
             CSeq: 1 INVITE\r\n\
             Contact: <sip:rlbA{i}@{uac}>\r\n\
             Content-Type: application/sdp\r\n\
             Content-Length: {len}\r\n\r\n{body}",
            uac = self.uac_addr,
            run = self.run_id,
            cid = c.call_id,
            len = body.len(),
        )
        .into_bytes()
    }

    /// ACK or BYE within call `i`'s dialog (after its 200).
    fn in_dialog(&self, i: usize, method: &str, cseq: u32) -> Vec<u8> {
        let c = &self.calls[i];
        let target = c.remote_target.clone().unwrap_or_else(|| format!("sip:{}", self.sbc));
        let to = c.to_hdr.clone().unwrap_or_default();
        let mut routes = String::new();
        for r in &c.routes {
            routes.push_str("Route: ");
            routes.push_str(r);
            routes.push_str("\r\n");
        }
        let ip = self.uac_addr.ip();
        let lower = method.to_ascii_lowercase();
        format!(
            "{method} {target} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {uac};branch=z9hG4bK-rlb{run}-{i}-{lower}{cseq};rport\r\n\
             {routes}Max-Forwards: 70\r\n\
             From: <sip:rlbA{i}@{ip}>;tag=a{run}x{i}\r\n\
             To: {to}\r\n\
             Call-ID: {cid}\r\n\
             CSeq: {cseq} {method}\r\n\
             Content-Length: 0\r\n\r\n",
            uac = self.uac_addr,
            run = self.run_id,
            cid = c.call_id,
        )
        .into_bytes()
    }

    /// Handles whatever arrives within `wait`.
    fn poll(&mut self, wait: Duration) -> io::Result<()> {
        let mut ready = Vec::new();
        self.epoll.wait(wait.as_millis() as i32, &mut ready)?;
        for tok in ready {
            loop {
                let sock = if tok == UAC_TOKEN { &self.uac } else { &self.uas };
                let (n, from) = match sock.recv_from(&mut self.buf) {
                    Ok(r) => r,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                };
                let data = self.buf[..n].to_vec();
                let Some(msg) = Msg::parse(&data) else { continue };
                if tok == UAC_TOKEN {
                    self.on_uac(&msg, from)?;
                } else {
                    self.on_uas(&msg, from)?;
                }
            }
        }
        Ok(())
    }

    fn call_of_uac(&self, msg: &Msg<'_>) -> Option<usize> {
        let cid = msg.header("call-id")?;
        let i: usize = cid.split('@').next()?.rsplit('-').next()?.parse().ok()?;
        (self.calls.get(i)?.call_id == cid).then_some(i)
    }

    fn on_uac(&mut self, msg: &Msg<'_>, from: SocketAddr) -> io::Result<()> {
        let Some(status) = msg.status() else {
            // A request from the SBC toward the caller (e.g. OPTIONS): just accept it.
            let r = msg.response(200, "OK", None, None);
            self.uac.send_to(&r, from)?;
            return Ok(());
        };
        let Some(i) = self.call_of_uac(msg) else { return Ok(()) };
        let method = msg.header("cseq").and_then(|c| c.split_ascii_whitespace().nth(1));
        match (method, status) {
            (Some("INVITE"), 100..=199) => {}
            (Some("INVITE"), 200..=299) => {
                let c = &mut self.calls[i];
                if c.a_dest.is_none() {
                    c.to_hdr = msg.header("to").map(str::to_owned);
                    c.remote_target = msg.header("contact").map(uri_of);
                    c.routes = msg.headers_all("record-route").into_iter().rev().collect();
                    match sdp::media_addr(msg.body) {
                        Some(a) => c.a_dest = Some(a),
                        None => c.failed = Some("200 without a usable SDP".into()),
                    }
                }
                // Every 200 (also a retransmitted one) gets an ACK.
                let ack = self.in_dialog(i, "ACK", 1);
                self.uac.send_to(&ack, self.sbc)?;
            }
            (Some("INVITE"), _) => {
                self.calls[i].failed = Some(format!("INVITE answered {status}"));
            }
            (Some("BYE"), 200..=699) => self.calls[i].bye_done = true,
            _ => {}
        }
        Ok(())
    }

    fn on_uas(&mut self, msg: &Msg<'_>, from: SocketAddr) -> io::Result<()> {
        let Some(method) = msg.method() else { return Ok(()) };
        let cid = msg.header("call-id").unwrap_or("").to_owned();
        match method {
            "INVITE" => {
                let i = match self.b_calls.get(&cid) {
                    Some(&i) => i,
                    None => {
                        let Some(i) = msg.call_index().filter(|&i| i < self.calls.len()) else {
                            let r = msg.response(404, "Not Found", None, None);
                            self.uas.send_to(&r, from)?;
                            return Ok(());
                        };
                        self.b_calls.insert(cid, i);
                        i
                    }
                };
                let c = &mut self.calls[i];
                if c.uas_200.is_none() {
                    let Some(dest) = sdp::media_addr(msg.body) else {
                        c.failed = Some("INVITE at the UAS without a usable SDP".into());
                        let r = msg.response(488, "Not Acceptable Here", None, None);
                        self.uas.send_to(&r, from)?;
                        return Ok(());
                    };
                    c.b_dest = Some(dest);
                    let body = sdp::build(c.b_rtp.expect("set in setup"), i as u64 + 1_000_000);
                    let contact = format!("<sip:rlbB{i}@{}>", self.uas_addr);
                    c.uas_200 = Some(msg.response(200, "OK", Some(&contact), Some(&body)));
                }
                let r = self.calls[i].uas_200.as_deref().expect("set just above");
                self.uas.send_to(r, from)?;
            }
            "ACK" => {
                if let Some(&i) = self.b_calls.get(&cid) {
                    self.calls[i].uas_acked = true;
                }
            }
            other => {
                if other != "BYE" {
                    self.uas_other_requests += 1;
                }
                let r = msg.response(200, "OK", None, None);
                self.uas.send_to(&r, from)?;
            }
        }
        Ok(())
    }
}

/// The URI inside a name-addr (`<...>`) or a bare addr-spec.
fn uri_of(v: &str) -> String {
    match (v.find('<'), v.find('>')) {
        (Some(a), Some(b)) if a < b => v[a + 1..b].to_owned(),
        _ => v.split(';').next().unwrap_or(v).trim().to_owned(),
    }
}

/// A parsed SIP message: start line, headers (long names, lower case), body.
struct Msg<'a> {
    start: &'a str,
    headers: Vec<(String, &'a str)>,
    body: &'a str,
}

impl<'a> Msg<'a> {
    fn parse(data: &'a [u8]) -> Option<Msg<'a>> {
        let text = std::str::from_utf8(data).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        let mut lines = head.split("\r\n");
        let start = lines.next()?;
        let mut headers = Vec::new();
        for l in lines {
            let (name, value) = l.split_once(':')?;
            let name = name.trim().to_ascii_lowercase();
            // RFC 3261 section 7.3.3 compact forms.
            let name = match name.as_str() {
                "v" => "via",
                "f" => "from",
                "t" => "to",
                "i" => "call-id",
                "m" => "contact",
                "l" => "content-length",
                "c" => "content-type",
                n => n,
            }
            .to_owned();
            headers.push((name, value.trim()));
        }
        let len = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(body.len())
            .min(body.len());
        Some(Msg { start, headers, body: &body[..len] })
    }

    fn header(&self, name: &str) -> Option<&'a str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    /// Every value of a header, in order, with comma-separated values split (Via, Record-Route).
    fn headers_all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, v)| v.split(',').map(|s| s.trim().to_owned()))
            .collect()
    }

    fn status(&self) -> Option<u16> {
        self.start.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
    }

    fn method(&self) -> Option<&'a str> {
        if self.start.starts_with("SIP/2.0 ") { None } else { self.start.split(' ').next() }
    }

    /// The benchmark's call index, from the Request-URI user `rlb<N>` or else the To user.
    fn call_index(&self) -> Option<usize> {
        let from_user = |s: &str| -> Option<usize> {
            let at = s.find("sip:rlb")? + 7;
            let digits: String = s[at..].chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        };
        from_user(self.start.split(' ').nth(1)?).or_else(|| from_user(self.header("to")?))
    }

    /// A response to this request, copying Via, Record-Route, From, To (with our tag if it had
    /// none), Call-ID and CSeq (RFC 3261 section 8.2.6.2).
    fn response(
        &self,
        code: u16,
        reason: &str,
        contact: Option<&str>,
        sdp: Option<&str>,
    ) -> Vec<u8> {
        let mut r = format!("SIP/2.0 {code} {reason}\r\n");
        for v in self.headers_all("via") {
            r.push_str(&format!("Via: {v}\r\n"));
        }
        for v in self.headers_all("record-route") {
            r.push_str(&format!("Record-Route: {v}\r\n"));
        }
        for name in ["from", "to", "call-id", "cseq"] {
            let v = self.header(name).unwrap_or("");
            let (label, tag) = match name {
                "from" => ("From", ""),
                "to" if !v.contains(";tag=") => ("To", ";tag=rlbuas"),
                "to" => ("To", ""),
                "call-id" => ("Call-ID", ""),
                _ => ("CSeq", ""),
            };
            r.push_str(&format!("{label}: {v}{tag}\r\n"));
        }
        if let Some(c) = contact {
            r.push_str(&format!("Contact: {c}\r\n"));
        }
        match sdp {
            Some(b) => r.push_str(&format!(
                "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            )),
            None => r.push_str("Content-Length: 0\r\n\r\n"),
        }
        r.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_respond() {
        let m = "INVITE sip:rlb42@127.0.0.1:5080 SIP/2.0\r\nv: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx\r\n\
                 Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKy, SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKz\r\n\
                 f: <sip:a@x>;tag=1\r\nt: <sip:rlb42@y>\r\ni: abc\r\nCSeq: 1 INVITE\r\nl: 4\r\n\r\nv=0\r\n";
        let msg = Msg::parse(m.as_bytes()).unwrap();
        assert_eq!(msg.method(), Some("INVITE"));
        assert_eq!(msg.call_index(), Some(42));
        assert_eq!(msg.body, "v=0\r");
        let r = String::from_utf8(msg.response(200, "OK", None, None)).unwrap();
        assert_eq!(r.matches("Via: ").count(), 3);
        assert!(r.contains("To: <sip:rlb42@y>;tag=rlbuas\r\n"));
        assert!(r.contains("Call-ID: abc\r\n"));
    }

    #[test]
    fn uri() {
        assert_eq!(
            uri_of("<sip:x@1.2.3.4:5060;transport=udp>;expires=3"),
            "sip:x@1.2.3.4:5060;transport=udp"
        );
        assert_eq!(uri_of("sip:x@h;lr"), "sip:x@h");
    }
}
