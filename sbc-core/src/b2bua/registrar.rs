//! REGISTER, as the SBC answers and relays it (RFC 3261 section 10): what a REGISTER asks for,
//! the local `200 OK` (the bindings of the address of record with their expiry, and a `Date`,
//! section 10.3 steps 8 and 10), the REGISTER the SBC sends upstream in a client's place, and the
//! upstream answer relayed back. Pure functions over messages; the bindings themselves are in
//! [`super::bindings`], the decisions in the engine (`engine/registrations.rs`).
//!
//! Two modes per access listener (`registrars:` in the config): `relay` registers each client
//! binding at a registrar trunk with the SBC's own Contact (a token, see
//! [`super::bindings::make_token`]) and answers the client's refreshes locally while the upstream
//! registration lasts; `local` keeps the bindings of the listener's digest users itself.

use std::time::Duration;

use bytes::Bytes;

use super::bindings::Upstream;
use crate::sip::{Header, HeaderName, Host, Message, Method, NameAddr, StartLine, Uri};

/// Longest registration granted, in seconds (a phone asking for more gets this and
/// re-registers sooner); also the expiry of contacts that name none.
pub const MAX_EXPIRES: u32 = 3600;

/// The `200 OK` to `req`, with `to_tag` and `date` (an RFC 1123 date, see [`http_date`]). A
/// contact with `expires=0` (or `Contact: *`) is a removal and is not listed.
pub fn accept(req: &Message, to_tag: &str, date: &str) -> Message {
    let mut r = req.response_to(200, "OK", Some(to_tag));
    let default = req.expires().unwrap_or(MAX_EXPIRES).min(MAX_EXPIRES);
    for value in req.values(&HeaderName::Contact) {
        let Ok(contact) = NameAddr::parse(&value) else {
            continue; // `*` or a contact we cannot read: nothing to list
        };
        let expires = contact
            .param("expires")
            .and_then(|v| std::str::from_utf8(&v).ok()?.trim().parse::<u32>().ok())
            .unwrap_or(default)
            .min(MAX_EXPIRES);
        if expires == 0 {
            continue;
        }
        r.push_fmt(
            HeaderName::Contact,
            format_args!("<{}>;expires={expires}", String::from_utf8_lossy(&contact.uri.raw)),
        );
    }
    r.push(HeaderName::from_bytes(&Bytes::from_static(b"Date")), date.to_owned());
    r
}

/// What a REGISTER asks for (RFC 3261 section 10.3, steps 6 and 7). Only the first contact of a
/// REGISTER is bound: one client registers one contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContactRequest {
    /// No Contact: list the current bindings.
    Query,
    /// `Contact: *` with `Expires: 0`: remove every binding of the address of record.
    RemoveAll,
    /// Bind (or, with a zero expiry, unbind) this contact URI.
    Bind {
        /// The contact URI as the client wrote it.
        contact: Bytes,
        /// The expiry asked for (`expires` parameter, else `Expires`, else `default`).
        expires: Duration,
    },
}

/// Reads what `req` asks for; `default` is the expiry of a contact that names none. `Err` is a
/// malformed request (a 400 with this reason).
pub fn contact_request(req: &Message, default: Duration) -> Result<ContactRequest, &'static str> {
    let Some(value) = req.values(&HeaderName::Contact).next() else {
        return Ok(ContactRequest::Query);
    };
    if value.trim_ascii() == b"*" {
        // Section 10.3 step 6: `*` only with Expires: 0.
        return match req.expires() == Some(0) {
            true => Ok(ContactRequest::RemoveAll),
            false => Err("Contact * Needs Expires: 0"),
        };
    }
    let contact = NameAddr::parse(&value).map_err(|_| "Invalid Contact")?;
    let expires = contact
        .param("expires")
        .and_then(|v| std::str::from_utf8(&v).ok()?.trim().parse::<u32>().ok())
        .or(req.expires())
        .map_or(default, |s| Duration::from_secs(u64::from(s)));
    Ok(ContactRequest::Bind { contact: contact.uri.raw, expires })
}

/// The address of record a URI names: `user@host`, the host in lower case; `None` without a
/// user part.
pub fn aor_of(uri: &Uri) -> Option<String> {
    let user = uri.user_str().filter(|u| !u.is_empty())?;
    let host = uri.host.as_ref()?;
    Some(format!("{user}@{}", host.to_string().to_ascii_lowercase()))
}

/// Whether `host` names `domain` (compared without case; an IP literal as written).
pub fn host_is(host: &Host, domain: &str) -> bool {
    host.to_string().eq_ignore_ascii_case(domain)
}

/// The `200 OK` to `req` listing `contacts` (URI, seconds left), with `to_tag` and `date`.
pub fn bindings_ok(req: &Message, to_tag: &str, date: &str, contacts: &[(Bytes, u64)]) -> Message {
    let mut r = req.response_to(200, "OK", Some(to_tag));
    for (uri, secs) in contacts {
        r.push_fmt(
            HeaderName::Contact,
            format_args!("<{}>;expires={secs}", String::from_utf8_lossy(uri)),
        );
    }
    r.push(HeaderName::from_bytes(&Bytes::from_static(b"Date")), date.to_owned());
    r
}

/// The REGISTER sent upstream for a binding: the client's Request-URI (its digest `uri` must
/// keep matching), From (our tag) and To, the upstream dialog's Call-ID and CSeq, the SBC's
/// `contact` (a header value) and the client's credentials. `None` if the stored Request-URI no
/// longer parses.
pub fn upstream_register(up: &Upstream, contact: &str, expires: Duration) -> Option<Message> {
    let uri = Uri::parse(up.request_uri.clone()).ok()?;
    let mut m = Message::request(Method::Register, uri);
    m.push(HeaderName::MaxForwards, Bytes::from_static(b"70"));
    m.push_fmt(
        HeaderName::From,
        format_args!("{};tag={}", String::from_utf8_lossy(&up.from), up.from_tag),
    );
    m.push(HeaderName::To, up.to.clone());
    m.push(HeaderName::CallId, up.call_id.clone());
    m.push_fmt(HeaderName::CSeq, format_args!("{} REGISTER", up.cseq));
    m.push(HeaderName::Contact, contact.to_owned());
    m.push_fmt(HeaderName::Expires, format_args!("{}", expires.as_secs()));
    m.headers.extend(up.credentials.iter().cloned());
    Some(m)
}

/// The client's From without its tag (the upstream registration has its own).
pub fn from_without_tag(req: &Message) -> Option<Bytes> {
    let from = req.from().ok()?;
    let mut v = Vec::with_capacity(from.uri.raw.len() + 32);
    if let Some(d) = &from.display {
        v.extend_from_slice(d);
        v.push(b' ');
    }
    v.push(b'<');
    v.extend_from_slice(&from.uri.raw);
    v.push(b'>');
    Some(Bytes::from(v))
}

/// The client's credentials: every Authorization and Proxy-Authorization line, unchanged.
pub fn credentials_of(req: &Message) -> Vec<Header> {
    let is_credentials =
        |h: &&Header| matches!(h.name, HeaderName::Authorization | HeaderName::ProxyAuthorization);
    req.headers.iter().filter(is_credentials).cloned().collect()
}

/// An upstream refusal relayed to the client, with the headers it needs to act on it:
/// challenges (unchanged, so the client answers the upstream registrar's realm), Min-Expires,
/// Retry-After.
pub fn relay_refusal(req: &Message, resp: &Message, to_tag: &str) -> Message {
    let code = resp.code().unwrap_or(500);
    let reason = match &resp.start {
        StartLine::Response(s) => String::from_utf8_lossy(&s.reason).into_owned(),
        StartLine::Request(_) => String::new(),
    };
    let mut r = req.response_to(code, &reason, Some(to_tag));
    for h in &resp.headers {
        let keep = matches!(
            h.name,
            HeaderName::WwwAuthenticate | HeaderName::ProxyAuthenticate | HeaderName::RetryAfter
        ) || h.name.matches("Min-Expires");
        if keep {
            r.headers.push(h.clone());
        }
    }
    r
}

/// The expiry the upstream registrar granted our `token`'s contact in its 2xx: the contact's
/// `expires` parameter, else the Expires header (RFC 3261 section 10.2.4).
pub fn granted_expiry(resp: &Message, token: &str) -> Option<Duration> {
    let ours = resp
        .values(&HeaderName::Contact)
        .filter_map(|v| NameAddr::parse(&v).ok())
        .find(|c| c.uri.user_str() == Some(token));
    let secs = ours
        .and_then(|c| c.param("expires"))
        .and_then(|v| std::str::from_utf8(&v).ok()?.trim().parse::<u32>().ok())
        .or(resp.expires())?;
    Some(Duration::from_secs(u64::from(secs)))
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` for Unix seconds (RFC 3261 section 20.17, RFC 1123).
pub fn http_date(unix: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let days = unix / 86_400;
    let secs = unix % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{}, {d:02} {} {y:04} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[(m - 1) as usize],
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Year, month (1-12) and day of the days since 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip;

    #[test]
    fn dates() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(http_date(1_800_000_000), "Fri, 15 Jan 2027 08:00:00 GMT");
    }

    fn req(extra: &str) -> Message {
        let text = format!(
            "REGISTER sip:lab SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKr1\r\n\
            From: \"Al\" <sip:1001@lab>;tag=a\r\nTo: <sip:1001@Lab>\r\nCall-ID: r1\r\n\
            CSeq: 2 REGISTER\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        sip::parse(Bytes::from(text)).unwrap()
    }

    #[test]
    fn what_a_register_asks_for() {
        let d = Duration::from_secs(60);
        let secs = Duration::from_secs;
        let bind =
            |c: &'static str, e| ContactRequest::Bind { contact: Bytes::from(c), expires: e };
        assert_eq!(contact_request(&req(""), d), Ok(ContactRequest::Query));
        assert_eq!(
            contact_request(
                &req("Contact: <sip:a@h;transport=tcp>;expires=30\r\nExpires: 9\r\n"),
                d
            ),
            Ok(bind("sip:a@h;transport=tcp", secs(30)))
        );
        assert_eq!(
            contact_request(&req("Contact: <sip:a@h>\r\nExpires: 0\r\n"), d),
            Ok(bind("sip:a@h", secs(0)))
        );
        assert_eq!(contact_request(&req("Contact: sip:a@h\r\n"), d), Ok(bind("sip:a@h", d)));
        assert_eq!(
            contact_request(&req("Contact: *\r\nExpires: 0\r\n"), d),
            Ok(ContactRequest::RemoveAll)
        );
        assert!(contact_request(&req("Contact: *\r\n"), d).is_err());
        // A WebSocket client (JsSIP): outbound parameters, an `.invalid` host.
        let jssip = "Contact: <sip:k9q2@df7jal23ls0d.invalid;transport=ws>;+sip.ice;reg-id=1;\
            +sip.instance=\"<urn:uuid:5b4d-11e0>\";expires=600\r\n";
        assert_eq!(
            contact_request(&req(jssip), d),
            Ok(bind("sip:k9q2@df7jal23ls0d.invalid;transport=ws", secs(600)))
        );
        let r = req("");
        assert_eq!(aor_of(&r.to().unwrap().uri).as_deref(), Some("1001@lab"));
        assert_eq!(from_without_tag(&r).as_deref(), Some(&b"\"Al\" <sip:1001@lab>"[..]));
    }

    const DIALOG: &str = "From: <sip:1001@lab>;tag=ft\r\nTo: <sip:1001@Lab>;tag=k\r\n\
        Call-ID: cid\r\nCSeq: 7 REGISTER\r\n";

    #[test]
    fn upstream_register_and_its_answers() {
        let up = Upstream {
            trunk: crate::config::TrunkId(0),
            call_id: "cid".into(),
            from_tag: "ft".into(),
            cseq: 7,
            request_uri: Bytes::from_static(b"sip:lab"),
            from: Bytes::from_static(b"<sip:1001@lab>"),
            to: Bytes::from_static(b"<sip:1001@Lab>"),
            credentials: credentials_of(&req(
                "Authorization: Digest username=\"1001\", x=\"a, b\"\r\n",
            )),
            granted: None,
        };
        let m =
            upstream_register(&up, "<sip:rgtok@192.0.2.9:5070>", Duration::from_secs(600)).unwrap();
        let text = String::from_utf8(m.to_bytes().to_vec()).unwrap();
        assert_eq!(
            text,
            "REGISTER sip:lab SIP/2.0\r\nMax-Forwards: 70\r\nFrom: <sip:1001@lab>;tag=ft\r\n\
             To: <sip:1001@Lab>\r\nCall-ID: cid\r\nCSeq: 7 REGISTER\r\n\
             Contact: <sip:rgtok@192.0.2.9:5070>\r\nExpires: 600\r\n\
             Authorization: Digest username=\"1001\", x=\"a, b\"\r\nContent-Length: 0\r\n\r\n"
        );
        let ok = |extra: &str| {
            let t = format!(
                "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\n{DIALOG}{extra}Content-Length: 0\r\n\r\n"
            );
            sip::parse(Bytes::from(t)).unwrap()
        };
        let theirs =
            "Contact: <sip:other@h>;expires=99, <sip:rgtok@192.0.2.9:5070>;expires=300\r\n";
        assert_eq!(granted_expiry(&ok(theirs), "rgtok"), Some(Duration::from_secs(300)));
        assert_eq!(
            granted_expiry(&ok("Expires: 120\r\n"), "rgtok"),
            Some(Duration::from_secs(120))
        );
        assert_eq!(granted_expiry(&ok(""), "rgtok"), None);
        let ch = sip::parse(Bytes::from_static(
            b"SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\n\
              From: <sip:1001@lab>;tag=ft\r\nTo: <sip:1001@Lab>;tag=k\r\nCall-ID: cid\r\n\
              CSeq: 7 REGISTER\r\n\
              WWW-Authenticate: Digest realm=\"up\", nonce=\"n\"\r\nServer: kamailio\r\n\
              Content-Length: 0\r\n\r\n",
        ))
        .unwrap();
        let r = relay_refusal(&req(""), &ch, "t");
        assert_eq!(r.code(), Some(401));
        assert_eq!(
            &r.header(&HeaderName::WwwAuthenticate).unwrap()[..],
            b"Digest realm=\"up\", nonce=\"n\""
        );
        assert!(r.header(&HeaderName::Server).is_none(), "nothing else of the registrar crosses");
        assert_eq!(&r.header(&HeaderName::CallId).unwrap()[..], b"r1", "the client's transaction");
    }

    #[test]
    fn contacts_are_echoed_with_their_expiry() {
        let text = "REGISTER sip:lab SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKr1\r\n\
            From: <sip:1001@lab>;tag=a\r\nTo: <sip:1001@lab>\r\nCall-ID: r1\r\nCSeq: 2 REGISTER\r\n\
            Contact: <sip:1001@192.0.2.1:5062>;expires=120, <sip:1001@192.0.2.1:5063>\r\n\
            Contact: <sip:old@192.0.2.1>;expires=0\r\nExpires: 7200\r\nContent-Length: 0\r\n\r\n";
        let req = sip::parse(Bytes::from(text)).unwrap();
        let r = accept(&req, "t1", "Fri, 15 Jan 2027 08:00:00 GMT");
        assert_eq!(r.code(), Some(200));
        let contacts: Vec<Bytes> = r.values(&HeaderName::Contact).collect();
        assert_eq!(
            contacts,
            [
                &b"<sip:1001@192.0.2.1:5062>;expires=120"[..],
                b"<sip:1001@192.0.2.1:5063>;expires=3600"
            ]
        );
        let date = HeaderName::from_bytes(&Bytes::from_static(b"Date"));
        assert_eq!(&r.header(&date).unwrap()[..], b"Fri, 15 Jan 2027 08:00:00 GMT");
        assert!(r.to().unwrap().tag().is_some());
    }
}
