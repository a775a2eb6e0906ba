//! The minimal local answer to an authenticated REGISTER: `200 OK` listing the contacts just
//! registered with their expiry, and a `Date` (RFC 3261 section 10.3, steps 8 and 10).
//!
//! There is no binding store: nothing is remembered and no call is routed to a registered user.
//! That is issue 6 (relaying registrations to an upstream registrar, and a local registrar with
//! bindings). Until then a phone behind the SBC can register, and so keep its account "online",
//! and place calls, but not receive them.

use bytes::Bytes;

use crate::sip::{HeaderName, Message, NameAddr};

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
