//! The CDR row: one flat set of named fields, shared by the CSV and JSON Lines formats so that both
//! carry exactly the same data (`docs/cdr.md` documents each field).
//!
//! Times are UTC with millisecond precision in RFC 3339 form (`2026-11-03T10:00:05.123Z`);
//! durations are seconds with three decimals. Empty strings stand for "not applicable" in CSV;
//! JSON carries the same empty strings, so that a collector can treat both formats alike.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::{CallRecord, MediaLegStats};

/// File format of the CDRs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// RFC 4180 CSV with a header row.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

impl Format {
    /// File name extension.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Jsonl => "jsonl",
        }
    }
}

/// The flat row written for one record. Field order is the CSV column order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// Unique record id.
    pub record_id: String,
    /// INVITE received.
    pub start: String,
    /// First 18x relayed, or empty.
    pub ring: String,
    /// Answered, or empty.
    pub answer: String,
    /// Ended.
    pub end: String,
    /// Start to end, seconds.
    pub duration_s: String,
    /// Answer to end, seconds (0.000 when not answered).
    pub billable_s: String,
    /// Caller as received (From user).
    pub caller_in: String,
    /// Callee as received (Request-URI user).
    pub callee_in: String,
    /// Caller as sent on the last attempt.
    pub caller_out: String,
    /// Callee as sent on the last attempt, after rewriting.
    pub callee_out: String,
    /// Inbound listener.
    pub inbound_listener: String,
    /// Inbound trunk, empty for a UA.
    pub inbound_trunk: String,
    /// Source address of the INVITE.
    pub source: String,
    /// Outbound trunk of the last attempt.
    pub outbound_trunk: String,
    /// Target of the last attempt.
    pub target: String,
    /// Leg A Call-ID.
    pub a_call_id: String,
    /// Leg B Call-ID of the last attempt.
    pub b_call_id: String,
    /// Disposition label.
    pub disposition: String,
    /// Final SIP status toward the caller (0 when none was sent: interrupted).
    pub status: u16,
    /// Its reason phrase.
    pub reason_phrase: String,
    /// caller, callee or sbc.
    pub released_by: String,
    /// The SBC's reason when it released the call.
    pub sbc_reason: String,
    /// Reason header received (Q.850 cause).
    pub cause: String,
    /// Number of leg B attempts.
    pub attempts: usize,
    /// Every attempt as `trunk/target`, separated by `;`.
    pub attempt_targets: String,
    /// Leg A codec.
    pub a_codec: String,
    /// Packets received from leg A's peer.
    pub a_packets: u64,
    /// Bytes received from leg A's peer.
    pub a_bytes: u64,
    /// Packets lost from leg A's peer.
    pub a_lost: u64,
    /// Jitter of leg A, milliseconds.
    pub a_jitter_ms: String,
    /// MOS estimate of leg A (empty when unknown).
    pub a_mos: String,
    /// Leg B codec.
    pub b_codec: String,
    /// Packets received from leg B's peer.
    pub b_packets: u64,
    /// Bytes received from leg B's peer.
    pub b_bytes: u64,
    /// Packets lost from leg B's peer.
    pub b_lost: u64,
    /// Jitter of leg B, milliseconds.
    pub b_jitter_ms: String,
    /// MOS estimate of leg B (empty when unknown).
    pub b_mos: String,
}

impl Row {
    /// Flattens a record.
    pub fn from_record(r: &CallRecord) -> Row {
        let last = r.attempts.last();
        let none = MediaLegStats::default();
        let (a, b) = r.media.as_ref().map_or((&none, &none), |(a, b)| (a, b));
        let mos = |m: &MediaLegStats| {
            if m.mos_x100 == 0 {
                String::new()
            } else {
                format!("{}.{:02}", m.mos_x100 / 100, m.mos_x100 % 100)
            }
        };
        let jitter =
            |m: &MediaLegStats| format!("{}.{:03}", m.jitter_us / 1000, m.jitter_us % 1000);
        Row {
            record_id: r.record_id.clone(),
            start: utc_ms(r.start),
            ring: r.ring.map(utc_ms).unwrap_or_default(),
            answer: r.answer.map(utc_ms).unwrap_or_default(),
            end: utc_ms(r.end),
            duration_s: seconds(r.duration()),
            billable_s: seconds(r.billable()),
            caller_in: r.caller.clone(),
            callee_in: r.callee.clone(),
            caller_out: last.map(|a| a.caller.clone()).unwrap_or_default(),
            callee_out: last.map(|a| a.callee.clone()).unwrap_or_default(),
            inbound_listener: r.listener.clone(),
            inbound_trunk: r.trunk.clone().unwrap_or_default(),
            source: r.source.to_string(),
            outbound_trunk: last.map(|a| a.trunk.clone()).unwrap_or_default(),
            target: last.map(|a| a.target.to_string()).unwrap_or_default(),
            a_call_id: r.call_id.clone(),
            b_call_id: last.map(|a| a.call_id.clone()).unwrap_or_default(),
            disposition: r.disposition.label().to_owned(),
            status: r.status,
            reason_phrase: r.phrase.clone(),
            released_by: r.released_by.label().to_owned(),
            sbc_reason: r.reason.clone().unwrap_or_default(),
            cause: r.cause.clone().unwrap_or_default(),
            attempts: r.attempts.len(),
            attempt_targets: r
                .attempts
                .iter()
                .map(|a| format!("{}/{}", a.trunk, a.target))
                .collect::<Vec<_>>()
                .join(";"),
            a_codec: a.codec.clone(),
            a_packets: a.packets,
            a_bytes: a.bytes,
            a_lost: a.lost,
            a_jitter_ms: jitter(a),
            a_mos: mos(a),
            b_codec: b.codec.clone(),
            b_packets: b.packets,
            b_bytes: b.bytes,
            b_lost: b.lost,
            b_jitter_ms: jitter(b),
            b_mos: mos(b),
        }
    }
}

/// Encodes rows in one format. CSV needs to know whether the header row is due (first row of a
/// file).
pub fn encode(format: Format, record: &CallRecord, header: bool, out: &mut Vec<u8>) {
    let row = Row::from_record(record);
    match format {
        Format::Csv => {
            let mut w = csv::WriterBuilder::new().has_headers(header).from_writer(&mut *out);
            // Writing into a Vec cannot fail, and Row has only scalar fields, which the csv
            // serializer always accepts.
            let _ = w.serialize(&row);
            let _ = w.flush();
        }
        Format::Jsonl => {
            // A struct of strings and integers always serializes.
            let _ = serde_json::to_writer(&mut *out, &row);
            out.push(b'\n');
        }
    }
}

/// Seconds with millisecond precision: `5.004`.
pub fn seconds(d: Duration) -> String {
    format!("{}.{:03}", d.as_secs(), d.subsec_millis())
}

/// RFC 3339 UTC with milliseconds: `2026-11-03T10:00:05.123Z`.
pub fn utc_ms(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (y, mo, day, h, mi, s) = civil(d.as_secs());
    format!("{y:04}-{mo:02}-{day:02}T{h:02}:{mi:02}:{s:02}.{:03}Z", d.subsec_millis())
}

/// Compact UTC for file names: `20261103T100005.123Z`.
pub fn utc_compact(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (y, mo, day, h, mi, s) = civil(d.as_secs());
    format!("{y:04}{mo:02}{day:02}T{h:02}{mi:02}{s:02}.{:03}Z", d.subsec_millis())
}

/// Parses [`utc_compact`] back (for retention by age, from file names).
pub fn parse_utc_compact(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() != 20 || b[8] != b'T' || b[15] != b'.' || b[19] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<u64>().ok();
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, sec, ms) = (num(9..11)?, num(11..13)?, num(13..15)?, num(16..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let days = days_from_civil(y as i64, mo as i64, d as i64);
    let secs = u64::try_from(days).ok()? * 86_400 + h * 3600 + mi * 60 + sec;
    Some(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(ms))
}

/// Unix seconds to (year, month, day, hour, minute, second), proleptic Gregorian (H. Hinnant's
/// `civil_from_days`).
fn civil(secs: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, (rem / 3600) as u32, (rem % 3600 / 60) as u32, (rem % 60) as u32)
}

/// (year, month, day) to days since 1970-01-01 (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_round_trip() {
        let t = UNIX_EPOCH + Duration::from_millis(1_793_700_005_123);
        assert_eq!(utc_ms(t), "2026-11-03T10:00:05.123Z");
        assert_eq!(utc_compact(t), "20261103T100005.123Z");
        assert_eq!(parse_utc_compact(&utc_compact(t)), Some(t));
        assert_eq!(utc_ms(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(&utc_ms(leap)[..10], "2000-02-29");
        assert_eq!(parse_utc_compact("garbage"), None);
    }

    #[test]
    fn seconds_keep_milliseconds() {
        assert_eq!(seconds(Duration::from_millis(5_004)), "5.004");
        assert_eq!(seconds(Duration::ZERO), "0.000");
    }
}
