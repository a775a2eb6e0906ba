//! A classic libpcap file writer (the format of `tcpdump -w`, magic `a1b2c3d4`, version 2.4) for
//! datagrams the SBC saw as payloads only: every record gets a synthesized Ethernet II, IPv4 or
//! IPv6, and UDP header between the real addresses, with valid lengths and checksums, so
//! Wireshark, tshark and sngrep decode it like a capture from the wire.
//!
//! Why not `pcap-file`'s `PcapWriter`: it owns its inner writer without a way to reach it, so a
//! capture could not be flushed every 100 ms while it stays open; the format itself is a 24-byte
//! file header and a 16-byte record header, written here in little endian. `pcap-file`'s reader
//! checks these files in the tests.
//!
//! Link type Ethernet (1) rather than raw IP (101): every reader, sngrep included, knows it, and
//! IPv4 and IPv6 records can share one file. The MAC addresses are zero.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use etherparse::PacketBuilder;

/// Largest UDP payload that fits one IPv4 datagram (65535 - 20 - 8); longer payloads (SIP over
/// TCP can carry more in one message) are cut there and the record says how long it was.
pub const MAX_PAYLOAD: usize = 65_507;

/// The snapshot length announced in the file header: a whole Ethernet frame of the largest IP
/// datagram.
const SNAPLEN: u32 = 65_535 + 14;

/// LINKTYPE_ETHERNET.
const LINKTYPE_ETHERNET: u32 = 1;

/// Why a record was not written.
#[derive(Debug)]
#[non_exhaustive]
pub enum PcapError {
    /// Source and destination are of different address families (no IP header can hold both).
    MixedFamilies,
    /// The underlying writer failed.
    Io(io::Error),
}

impl std::fmt::Display for PcapError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PcapError::MixedFamilies => {
                f.write_str("source and destination address families differ")
            }
            PcapError::Io(e) => write!(f, "pcap write: {e}"),
        }
    }
}

impl std::error::Error for PcapError {}

impl From<io::Error> for PcapError {
    fn from(e: io::Error) -> PcapError {
        PcapError::Io(e)
    }
}

/// A pcap stream over any writer. Buffering and flushing are the writer's business: the capture
/// thread gives it a `BufWriter<File>` and flushes it on its own schedule.
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    out: W,
    /// Reused frame buffer: headers plus payload of the record being written.
    frame: Vec<u8>,
    /// Bytes written so far, file header included (for size-based rotation).
    written: u64,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the file header and returns the writer.
    pub fn new(mut out: W) -> io::Result<PcapWriter<W>> {
        let mut header = [0u8; 24];
        header[0..4].copy_from_slice(&0xa1b2_c3d4_u32.to_le_bytes());
        header[4..6].copy_from_slice(&2u16.to_le_bytes());
        header[6..8].copy_from_slice(&4u16.to_le_bytes());
        // thiszone and sigfigs stay 0 (timestamps are UTC).
        header[16..20].copy_from_slice(&SNAPLEN.to_le_bytes());
        header[20..24].copy_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        out.write_all(&header)?;
        Ok(PcapWriter { out, frame: Vec::with_capacity(2048), written: 24 })
    }

    /// Writes one UDP datagram from `src` to `dst` seen at `at`.
    pub fn write_udp(
        &mut self,
        at: SystemTime,
        src: SocketAddr,
        dst: SocketAddr,
        payload: &[u8],
    ) -> Result<(), PcapError> {
        let payload = &payload[..payload.len().min(MAX_PAYLOAD)];
        let eth = PacketBuilder::ethernet2([0; 6], [0; 6]);
        // IPv4-mapped IPv6 addresses are IPv4 peers on a dual-stack socket: write them as IPv4.
        let (src_ip, dst_ip) = (src.ip().to_canonical(), dst.ip().to_canonical());
        let builder = match (src_ip, dst_ip) {
            (std::net::IpAddr::V4(s), std::net::IpAddr::V4(d)) => {
                eth.ipv4(s.octets(), d.octets(), 64).udp(src.port(), dst.port())
            }
            (std::net::IpAddr::V6(s), std::net::IpAddr::V6(d)) => {
                eth.ipv6(s.octets(), d.octets(), 64).udp(src.port(), dst.port())
            }
            _ => return Err(PcapError::MixedFamilies),
        };
        self.frame.clear();
        // The builder fails only on lengths above the IP limits, which MAX_PAYLOAD rules out.
        builder
            .write(&mut self.frame, payload)
            .map_err(|e| PcapError::Io(io::Error::other(e.to_string())))?;
        let since = at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or(Duration::ZERO);
        let mut record = [0u8; 16];
        // Seconds wrap in 2106, as in every classic pcap file.
        record[0..4].copy_from_slice(&(since.as_secs() as u32).to_le_bytes());
        record[4..8].copy_from_slice(&since.subsec_micros().to_le_bytes());
        let len = self.frame.len() as u32;
        record[8..12].copy_from_slice(&len.to_le_bytes());
        record[12..16].copy_from_slice(&len.to_le_bytes());
        self.out.write_all(&record)?;
        self.out.write_all(&self.frame)?;
        self.written += 16 + u64::from(len);
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Flushes the underlying writer.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// The underlying writer.
    pub fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use pcap_file::DataLink;
    use pcap_file::pcap::PcapReader;

    use super::*;

    fn at(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + ms)
    }

    #[test]
    fn round_trip_through_pcap_file_reader() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        let sip = b"INVITE sip:bob@example.com SIP/2.0\r\nCall-ID: x\r\n\r\n";
        w.write_udp(
            at(0),
            "192.0.2.1:5060".parse().unwrap(),
            "192.0.2.2:5080".parse().unwrap(),
            sip,
        )
        .unwrap();
        let rtp = [0x80u8, 8, 0, 1, 0, 0, 0, 160, 1, 2, 3, 4, 0xd5, 0xd5];
        w.write_udp(
            at(20),
            "[2001:db8::1]:4000".parse().unwrap(),
            "[2001:db8::2]:30000".parse().unwrap(),
            &rtp,
        )
        .unwrap();
        assert!(matches!(
            w.write_udp(at(40), "192.0.2.1:1".parse().unwrap(), "[::1]:2".parse().unwrap(), &rtp),
            Err(PcapError::MixedFamilies)
        ));
        let size = w.written();
        let bytes = w.into_inner();
        assert_eq!(size, bytes.len() as u64);

        let mut r = PcapReader::new(&bytes[..]).unwrap();
        assert_eq!(r.header().datalink, DataLink::ETHERNET);
        let p = r.next_packet().unwrap().unwrap().into_owned();
        assert_eq!(p.timestamp, Duration::from_millis(1_700_000_000_000));
        let parsed = etherparse::SlicedPacket::from_ethernet(&p.data).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = &parsed.net else { panic!("not IPv4") };
        assert_eq!(ip.header().source(), [192, 0, 2, 1]);
        assert_eq!(ip.header().destination(), [192, 0, 2, 2]);
        let Some(etherparse::TransportSlice::Udp(udp)) = &parsed.transport else { panic!() };
        assert_eq!((udp.source_port(), udp.destination_port()), (5060, 5080));
        assert_eq!(udp.payload(), sip);
        // The checksum the builder computed verifies.
        let header = udp.to_header();
        assert_eq!(
            header.checksum,
            header.calc_checksum_ipv4(&ip.header().to_header(), sip).unwrap()
        );

        let p = r.next_packet().unwrap().unwrap().into_owned();
        assert_eq!(p.timestamp, Duration::from_millis(1_700_000_000_020));
        let parsed = etherparse::SlicedPacket::from_ethernet(&p.data).unwrap();
        assert!(matches!(parsed.net, Some(etherparse::NetSlice::Ipv6(_))));
        let Some(etherparse::TransportSlice::Udp(udp)) = &parsed.transport else { panic!() };
        assert_eq!(udp.payload(), &rtp);
        assert!(r.next_packet().is_none());
    }

    #[test]
    fn oversized_payload_is_cut_to_one_datagram() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        let big = vec![b'x'; MAX_PAYLOAD + 100];
        w.write_udp(
            at(0),
            "127.0.0.1:5060".parse().unwrap(),
            "127.0.0.1:5061".parse().unwrap(),
            &big,
        )
        .unwrap();
        let bytes = w.into_inner();
        let mut r = PcapReader::new(&bytes[..]).unwrap();
        let p = r.next_packet().unwrap().unwrap().into_owned();
        assert_eq!(p.data.len(), 14 + 20 + 8 + MAX_PAYLOAD);
    }
}
