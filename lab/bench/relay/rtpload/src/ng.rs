//! rtpengine's ng control protocol: a cookie, a space, and a bencoded dictionary, over UDP.
//!
//! Only what the benchmark needs: offer, answer and delete, sent with a bounded window of
//! outstanding requests (so that 2,000 calls are set up in well under a second) and retransmitted
//! on silence, as rtpengine itself deduplicates by cookie.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

/// A bencoded value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Byte string.
    Bytes(Vec<u8>),
    /// Integer.
    Int(i64),
    /// List.
    List(Vec<Value>),
    /// Dictionary (bencode requires sorted keys, which a BTreeMap gives for free).
    Dict(BTreeMap<Vec<u8>, Value>),
}

impl Value {
    /// A byte string from text.
    pub fn str(s: &str) -> Value {
        Value::Bytes(s.as_bytes().to_vec())
    }

    /// A dictionary from `(key, value)` pairs.
    pub fn dict(items: Vec<(&str, Value)>) -> Value {
        Value::Dict(items.into_iter().map(|(k, v)| (k.as_bytes().to_vec(), v)).collect())
    }

    /// Looks a key up in a dictionary.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(d) => d.get(key.as_bytes()),
            _ => None,
        }
    }

    /// The value as text, if it is a UTF-8 byte string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// Appends the encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Bytes(b) => {
                out.extend_from_slice(b.len().to_string().as_bytes());
                out.push(b':');
                out.extend_from_slice(b);
            }
            Value::Int(i) => {
                out.push(b'i');
                out.extend_from_slice(i.to_string().as_bytes());
                out.push(b'e');
            }
            Value::List(l) => {
                out.push(b'l');
                l.iter().for_each(|v| v.encode(out));
                out.push(b'e');
            }
            Value::Dict(d) => {
                out.push(b'd');
                for (k, v) in d {
                    Value::Bytes(k.clone()).encode(out);
                    v.encode(out);
                }
                out.push(b'e');
            }
        }
    }

    /// Decodes one value at the start of `input`; returns it and the bytes consumed.
    pub fn decode(input: &[u8]) -> Option<(Value, usize)> {
        decode_at(input, 0, 0)
    }
}

/// Nesting limit: replies are two levels deep; anything deeper is not rtpengine talking.
const MAX_DEPTH: usize = 32;

fn decode_at(b: &[u8], pos: usize, depth: usize) -> Option<(Value, usize)> {
    if depth > MAX_DEPTH {
        return None;
    }
    match *b.get(pos)? {
        b'i' => {
            let end = pos + 1 + b[pos + 1..].iter().position(|&c| c == b'e')?;
            let n = std::str::from_utf8(&b[pos + 1..end]).ok()?.parse().ok()?;
            Some((Value::Int(n), end + 1 - pos))
        }
        b'l' => {
            let mut p = pos + 1;
            let mut items = Vec::new();
            while *b.get(p)? != b'e' {
                let (v, used) = decode_at(b, p, depth + 1)?;
                items.push(v);
                p += used;
            }
            Some((Value::List(items), p + 1 - pos))
        }
        b'd' => {
            let mut p = pos + 1;
            let mut items = BTreeMap::new();
            while *b.get(p)? != b'e' {
                let (k, used) = decode_at(b, p, depth + 1)?;
                p += used;
                let Value::Bytes(k) = k else { return None };
                let (v, used) = decode_at(b, p, depth + 1)?;
                p += used;
                items.insert(k, v);
            }
            Some((Value::Dict(items), p + 1 - pos))
        }
        b'0'..=b'9' => {
            let colon = pos + b[pos..].iter().position(|&c| c == b':')?;
            let len: usize = std::str::from_utf8(&b[pos..colon]).ok()?.parse().ok()?;
            let start = colon + 1;
            let end = start.checked_add(len)?;
            let s = b.get(start..end)?.to_vec();
            Some((Value::Bytes(s), end - pos))
        }
        _ => None,
    }
}

/// An ng client on its own UDP socket.
pub struct NgClient {
    sock: UdpSocket,
    server: SocketAddrV4,
    next_cookie: u64,
    /// Requests sent that got no reply within this time are sent again.
    pub retransmit_after: Duration,
    /// Sends per request before giving up.
    pub max_sends: u32,
    /// Requests outstanding at once.
    pub window: usize,
}

impl NgClient {
    /// A client bound on an ephemeral port of `local_ip`, talking to `server`.
    pub fn new(local_ip: std::net::Ipv4Addr, server: SocketAddrV4) -> io::Result<NgClient> {
        let sock = UdpSocket::bind(SocketAddrV4::new(local_ip, 0))?;
        sock.set_read_timeout(Some(Duration::from_millis(5)))?;
        Ok(NgClient {
            sock,
            server,
            next_cookie: std::process::id() as u64 * 1_000_000,
            retransmit_after: Duration::from_millis(500),
            max_sends: 6,
            window: 32,
        })
    }

    /// Sends every request (a dictionary each) and returns the replies in the same order.
    /// Fails if one gets no reply after `max_sends` sends, or if a reply is not bencode.
    pub fn request_all(&mut self, reqs: &[Value]) -> io::Result<Vec<Value>> {
        let mut replies: Vec<Option<Value>> = vec![None; reqs.len()];
        // cookie -> (request index, encoded datagram, last send, sends)
        let mut pending: HashMap<String, (usize, Vec<u8>, Instant, u32)> = HashMap::new();
        let mut next = 0;
        let mut done = 0;
        let mut buf = vec![0u8; 65536];
        while done < reqs.len() {
            while pending.len() < self.window && next < reqs.len() {
                let cookie = format!("{}", self.next_cookie);
                self.next_cookie += 1;
                let mut dgram = cookie.clone().into_bytes();
                dgram.push(b' ');
                reqs[next].encode(&mut dgram);
                self.sock.send_to(&dgram, self.server)?;
                pending.insert(cookie, (next, dgram, Instant::now(), 1));
                next += 1;
            }
            match self.sock.recv_from(&mut buf) {
                Ok((n, _)) => {
                    let d = &buf[..n];
                    let Some(sp) = d.iter().position(|&c| c == b' ') else { continue };
                    let cookie = String::from_utf8_lossy(&d[..sp]).into_owned();
                    let Some((idx, _, _, _)) = pending.remove(&cookie) else { continue };
                    let (v, _) = Value::decode(&d[sp + 1..]).ok_or_else(|| {
                        io::Error::new(io::ErrorKind::InvalidData, "ng reply is not bencode")
                    })?;
                    replies[idx] = Some(v);
                    done += 1;
                }
                Err(e)
                    if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            for (idx, dgram, last, sends) in pending.values_mut() {
                if now.duration_since(*last) >= self.retransmit_after {
                    if *sends >= self.max_sends {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("ng request {idx}: no reply after {sends} sends"),
                        ));
                    }
                    self.sock.send_to(dgram, self.server)?;
                    *last = now;
                    *sends += 1;
                }
            }
        }
        Ok(replies.into_iter().map(|r| r.expect("every index was answered")).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let v = Value::dict(vec![
            ("command", Value::str("offer")),
            ("replace", Value::List(vec![Value::str("origin")])),
            ("n", Value::Int(-3)),
        ]);
        let mut b = Vec::new();
        v.encode(&mut b);
        assert_eq!(b, b"d7:command5:offer1:ni-3e7:replacel6:originee");
        assert_eq!(Value::decode(&b), Some((v, b.len())));
    }

    #[test]
    fn truncated_is_none() {
        assert_eq!(Value::decode(b"d3:sdp10:v=0"), None);
        assert_eq!(Value::decode(b"l"), None);
    }
}
