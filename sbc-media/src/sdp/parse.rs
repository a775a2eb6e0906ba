//! The SDP parser: line by line, without indexing that input could make panic.
//!
//! Lenient where deployed user agents stray from RFC 8866's grammar in harmless ways (line order
//! at session level, missing `s=`/`t=`, extra blanks between fields, bytes that are not UTF-8 in
//! free text), strict where the description would be ambiguous or dangerous to pass on (unknown
//! line types, duplicate `o=`/`c=`, bare CR or NUL inside a line).

use std::borrow::Cow;

use super::{Attribute, Bandwidth, Connection, MAX_MEDIA, Media, Origin, ParseError, Sdp, Timing};

/// Parses a whole body.
pub(super) fn parse(input: &[u8]) -> Result<Sdp, ParseError> {
    // Free text (s=, i=) may be in another charset (a=charset, RFC 8866 §6.10); replacing invalid
    // bytes keeps the description usable, and the SBC writes `s=-` anyway.
    let text: Cow<'_, str> = String::from_utf8_lossy(input);
    // Every CR before the LF is line end: a doubled CR comes from a sloppy line-end conversion
    // (seen in test tools), and nothing follows it on the line, so it cannot hide a line.
    let mut lines =
        text.split('\n').map(|l| l.trim_end_matches('\r')).filter(|l| !l.trim().is_empty());

    match lines.next() {
        Some(first) if first.starts_with("v=") => {
            if first.get(2..).map(str::trim) != Some("0") {
                return Err(ParseError::BadVersion);
            }
        }
        _ => return Err(ParseError::NotSdp),
    }

    let mut b = Builder::default();
    for line in lines {
        let (kind, value) = split_line(line)?;
        if b.media.is_empty() { b.session_line(kind, value)? } else { b.media_line(kind, value)? }
    }
    b.finish()
}

/// `<letter>=<value>`, with the characters a peer could use to smuggle a line end refused.
fn split_line(line: &str) -> Result<(char, &str), ParseError> {
    let mut chars = line.chars();
    let (Some(kind), Some('=')) = (chars.next(), chars.next()) else {
        return Err(ParseError::NotTypeValue);
    };
    if !kind.is_ascii_lowercase() {
        return Err(ParseError::NotTypeValue);
    }
    let value = chars.as_str();
    if value.contains(['\r', '\0']) {
        return Err(ParseError::BadCharacter);
    }
    Ok((kind, value))
}

#[derive(Default)]
struct Builder {
    origin: Option<Origin>,
    session_name: Option<String>,
    information: Option<String>,
    uri: Option<String>,
    emails: Vec<String>,
    phones: Vec<String>,
    connection: Option<Connection>,
    bandwidths: Vec<Bandwidth>,
    timings: Vec<Timing>,
    time_zones: Option<String>,
    key: Option<String>,
    attributes: Vec<Attribute>,
    media: Vec<Media>,
}

impl Builder {
    fn session_line(&mut self, kind: char, value: &str) -> Result<(), ParseError> {
        match kind {
            'v' => return Err(ParseError::Duplicate),
            'o' => set_once(&mut self.origin, parse_origin(value)?)?,
            's' => set_once(&mut self.session_name, value.to_owned())?,
            'i' => set_once(&mut self.information, value.to_owned())?,
            'u' => set_once(&mut self.uri, value.to_owned())?,
            'e' => self.emails.push(value.to_owned()),
            'p' => self.phones.push(value.to_owned()),
            'c' => set_once(&mut self.connection, parse_connection(value)?)?,
            'b' => self.bandwidths.push(parse_bandwidth(value)?),
            't' => {
                let mut fields = value.split_ascii_whitespace();
                let (Some(start), Some(stop), None) = (fields.next(), fields.next(), fields.next())
                else {
                    return Err(ParseError::BadTiming);
                };
                self.timings.push(Timing {
                    start: start.to_owned(),
                    stop: stop.to_owned(),
                    repeats: Vec::new(),
                });
            }
            'r' => {
                let timing = self.timings.last_mut().ok_or(ParseError::RepeatWithoutTiming)?;
                timing.repeats.push(value.to_owned());
            }
            'z' => set_once(&mut self.time_zones, value.to_owned())?,
            'k' => set_once(&mut self.key, value.to_owned())?,
            'a' => self.attributes.push(parse_attribute(value)?),
            'm' => self.start_media(value)?,
            _ => return Err(ParseError::UnknownLine),
        }
        Ok(())
    }

    fn media_line(&mut self, kind: char, value: &str) -> Result<(), ParseError> {
        if kind == 'm' {
            return self.start_media(value);
        }
        // Invariant: media_line is only called once a media section was started.
        let Some(media) = self.media.last_mut() else {
            return Err(ParseError::OutOfPlace);
        };
        match kind {
            'i' => set_once(&mut media.information, value.to_owned())?,
            'c' => media.connections.push(parse_connection(value)?),
            'b' => media.bandwidths.push(parse_bandwidth(value)?),
            'k' => set_once(&mut media.key, value.to_owned())?,
            'a' => media.attributes.push(parse_attribute(value)?),
            'v' | 'o' | 's' | 'u' | 'e' | 'p' | 't' | 'r' | 'z' => {
                return Err(ParseError::OutOfPlace);
            }
            _ => return Err(ParseError::UnknownLine),
        }
        Ok(())
    }

    fn start_media(&mut self, value: &str) -> Result<(), ParseError> {
        if self.media.len() >= MAX_MEDIA {
            return Err(ParseError::TooManyMedia);
        }
        self.media.push(parse_media(value)?);
        Ok(())
    }

    fn finish(self) -> Result<Sdp, ParseError> {
        let origin = self.origin.ok_or(ParseError::MissingOrigin)?;
        let mut timings = self.timings;
        if timings.is_empty() {
            // RFC 8866 requires t=; SIP UAs that leave it out mean a permanent session.
            timings.push(Timing { start: "0".into(), stop: "0".into(), repeats: Vec::new() });
        }
        Ok(Sdp {
            origin,
            session_name: self.session_name.unwrap_or_else(|| "-".to_owned()),
            information: self.information,
            uri: self.uri,
            emails: self.emails,
            phones: self.phones,
            connection: self.connection,
            bandwidths: self.bandwidths,
            timings,
            time_zones: self.time_zones,
            key: self.key,
            attributes: self.attributes,
            media: self.media,
        })
    }
}

fn set_once<T>(slot: &mut Option<T>, value: T) -> Result<(), ParseError> {
    if slot.is_some() {
        return Err(ParseError::Duplicate);
    }
    *slot = Some(value);
    Ok(())
}

fn parse_origin(value: &str) -> Result<Origin, ParseError> {
    let f: Vec<&str> = value.split_ascii_whitespace().collect();
    let [username, session_id, session_version, net_type, addr_type, address] = f[..] else {
        return Err(ParseError::BadOrigin);
    };
    Ok(Origin {
        username: username.to_owned(),
        session_id: session_id.to_owned(),
        session_version: session_version.to_owned(),
        net_type: net_type.to_owned(),
        addr_type: addr_type.to_owned(),
        address: address.to_owned(),
    })
}

fn parse_connection(value: &str) -> Result<Connection, ParseError> {
    let f: Vec<&str> = value.split_ascii_whitespace().collect();
    let [net_type, addr_type, address] = f[..] else {
        return Err(ParseError::BadConnection);
    };
    Ok(Connection {
        net_type: net_type.to_owned(),
        addr_type: addr_type.to_owned(),
        address: address.to_owned(),
    })
}

fn parse_bandwidth(value: &str) -> Result<Bandwidth, ParseError> {
    let (kind, number) = value.split_once(':').ok_or(ParseError::BadBandwidth)?;
    let kind = kind.trim();
    if kind.is_empty() || kind.contains(char::is_whitespace) {
        return Err(ParseError::BadBandwidth);
    }
    let value = number.trim().parse().map_err(|_| ParseError::BadBandwidth)?;
    Ok(Bandwidth { kind: kind.to_owned(), value })
}

fn parse_attribute(value: &str) -> Result<Attribute, ParseError> {
    let (name, value) = match value.split_once(':') {
        Some((name, value)) => (name, Some(value.to_owned())),
        None => (value, None),
    };
    if name.is_empty() {
        return Err(ParseError::BadAttribute);
    }
    Ok(Attribute { name: name.to_owned(), value })
}

fn parse_media(value: &str) -> Result<Media, ParseError> {
    let mut f = value.split_ascii_whitespace();
    let (Some(kind), Some(port), Some(proto)) = (f.next(), f.next(), f.next()) else {
        return Err(ParseError::BadMedia);
    };
    let (port, port_count) = match port.split_once('/') {
        Some((port, count)) => (port, Some(number(count)?)),
        None => (port, None),
    };
    Ok(Media {
        kind: kind.to_owned(),
        port: number(port)?,
        port_count,
        proto: proto.to_owned(),
        formats: f.map(str::to_owned).collect(),
        information: None,
        connections: Vec::new(),
        bandwidths: Vec::new(),
        key: None,
        attributes: Vec::new(),
    })
}

/// A port or port count: digits only (`str::parse` would also take a leading `+`).
fn number(s: &str) -> Result<u16, ParseError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::BadMedia);
    }
    s.parse().map_err(|_| ParseError::BadMedia)
}
