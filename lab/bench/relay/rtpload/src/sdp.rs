//! The SDP the generator offers and answers, and the one thing it reads back: where to send RTP
//! (the `c=` address, media-level before session-level, and the port of the first `m=audio`).

use std::net::{Ipv4Addr, SocketAddrV4};

/// An SDP body for one G.711 audio stream at `addr` (PCMU, 20 ms packets, no RTCP-mux).
pub fn build(addr: SocketAddrV4, session_id: u64) -> String {
    format!(
        "v=0\r\n\
         o=rtpload {session_id} 1 IN IP4 {ip}\r\n\
         s=-\r\n\
         c=IN IP4 {ip}\r\n\
         t=0 0\r\n\
         m=audio {port} RTP/AVP 0\r\n\
         a=rtpmap:0 PCMU/8000\r\n\
         a=ptime:20\r\n\
         a=sendrecv\r\n",
        ip = addr.ip(),
        port = addr.port(),
    )
}

/// Where RTP for the first audio stream of `sdp` must be sent; `None` if the SDP has no IPv4
/// connection address or no audio stream with a non-zero port.
pub fn media_addr(sdp: &str) -> Option<SocketAddrV4> {
    let mut session_c: Option<Ipv4Addr> = None;
    let mut in_audio = false;
    let mut port: Option<u16> = None;
    let mut media_c: Option<Ipv4Addr> = None;
    let mut seen_m = false;
    for line in sdp.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(m) = line.strip_prefix("m=") {
            if port.is_some() {
                break; // the first audio stream is complete
            }
            seen_m = true;
            let mut f = m.split_ascii_whitespace();
            in_audio = f.next() == Some("audio");
            if in_audio {
                port = f.next().and_then(|p| p.parse().ok()).filter(|&p| p != 0);
                in_audio = port.is_some();
            }
        } else if let Some(c) = line.strip_prefix("c=") {
            let mut f = c.split_ascii_whitespace();
            let (_, ty, addr) = (f.next(), f.next(), f.next());
            let ip = if ty == Some("IP4") { addr.and_then(|a| a.parse().ok()) } else { None };
            if !seen_m {
                session_c = ip;
            } else if in_audio {
                media_c = ip;
            }
        }
    }
    Some(SocketAddrV4::new(media_c.or(session_c)?, port?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_sdp_round_trips() {
        let a = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 20002);
        assert_eq!(media_addr(&build(a, 7)), Some(a));
    }

    #[test]
    fn media_level_c_wins_and_video_first_is_skipped() {
        let sdp = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=video 0 RTP/AVP 96\r\nm=audio 4000 RTP/AVP 0\r\n\
                   c=IN IP4 10.0.0.2\r\n";
        assert_eq!(media_addr(sdp), Some("10.0.0.2:4000".parse().unwrap()));
        assert_eq!(media_addr("v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 0 RTP/AVP 0\r\n"), None);
    }
}
