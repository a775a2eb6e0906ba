//! Offer/answer rewriting (RFC 3264) for an SBC that anchors media: pure functions, no ports
//! opened, no state.
//!
//! An SDP crosses the SBC in two steps. First a transport-independent rewrite
//! ([`prepare_offer`], [`prepare_answer`]) decides what the other leg is offered or answered:
//! which codecs, which streams stay enabled, which attributes of the sender's own transport go.
//! Then, once the call logic has the relay's ports, [`localize`] writes the SBC's own `o=`, `c=`,
//! ports and `a=rtcp`. The helpers at the end ([`effective_direction`], [`remote_addresses`],
//! [`clock_rate`], ...) read what the relay needs to know about each side.
//!
//! Rules, and why:
//! - Everything that describes the sender's own transport is removed: ICE (RFC 8839) candidates
//!   and credentials, and BUNDLE (RFC 8843), since the SBC gives every m-line its own ports and
//!   is the other leg's only peer. `a=crypto`, `a=fingerprint` and `a=setup` are left for
//!   [`crate::profile`], which replaces them with the SBC's own per leg (the plane terminates
//!   SRTP and DTLS on each leg).
//! - Session-level `i=`, `u=`, `e=`, `p=` are dropped and `s=` becomes `-`: they name the peer,
//!   and the B2BUA hides topology by default.
//! - Codecs are filtered and ordered by the profile of the leg the offer is written for. The
//!   offerer's payload type numbers are kept in the offer; the answer toward the offerer is
//!   renumbered to the offerer's numbers (RFC 3264 §6.1 asks answerers to reuse them; doing it
//!   for them means the offerer always sees one numbering), and [`PtMaps`] tells the relay how
//!   to rewrite packets between the two numberings.
//! - RFC 2543 hold (`c=0.0.0.0` or `::`) is turned into a direction attribute: see
//!   [`effective_direction`].
//! - m-line count and order never change, so index `i` names the same stream on both legs.
//! - Transcoding only when the legs share no codec ([`prepare_offer_transcoding`]): when the
//!   offer, filtered by the offerer's profile, has no codec the other leg's profile allows, but
//!   has one the SBC transcodes (Opus, PCMU, PCMA) and the other profile lists one too, the
//!   other leg is offered its own profile's transcodable codecs (and telephone-event at their
//!   rate if the offerer offered DTMF), and the answer toward the offerer names the offerer's
//!   codec ([`prepare_answer_transcoding`]).

use std::net::{IpAddr, SocketAddr};

use crate::backend::{CodecSpec, RemoteSpec, Transcode};
use crate::sdp::{Attribute, Codec, Connection, Direction, Media, Sdp, addr_type};
use crate::transcode;

/// Why an offer or answer cannot be passed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NegotiateError {
    /// The description is unusable; the reason is static text for the 488's `Warning`.
    BadSdp(&'static str),
    /// An audio stream has no codec left that both the SDP and the leg's profile allow (488).
    NoCommonCodec,
}

/// Payload type rewriting for one stream, per direction (for [`RemoteSpec::pt_map`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PtMaps {
    /// For RTP from the offerer: offerer's number → answerer's number.
    pub from_offerer: [u8; 128],
    /// For RTP from the answerer: answerer's number → offerer's number.
    pub from_answerer: [u8; 128],
}

impl Default for PtMaps {
    fn default() -> PtMaps {
        PtMaps {
            from_offerer: RemoteSpec::IDENTITY_PT_MAP,
            from_answerer: RemoteSpec::IDENTITY_PT_MAP,
        }
    }
}

/// An answer ready for [`localize`], with the payload type maps of each stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedAnswer {
    /// The answer to send to the offerer (before [`localize`]).
    pub sdp: Sdp,
    /// One per m-line, identity for disabled and non-RTP streams.
    pub pt_maps: Vec<PtMaps>,
}

/// The offerer's side of a stream the SBC will transcode, decided at offer time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranscodePlan {
    /// The offerer's codec the answer toward it names: payload type and codec.
    pub codec: (u8, Codec),
    /// The offerer's telephone-event format at that codec's clock rate, if it offered one.
    pub events: Option<(u8, Codec)>,
}

/// An offer for the other leg, with the transcoding plan of each m-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedOffer {
    /// The offer to send (before [`localize`]).
    pub sdp: Sdp,
    /// One per m-line: `Some` where the legs share no codec and the SBC transcodes.
    pub transcode: Vec<Option<TranscodePlan>>,
}

/// Both directions of a transcoded stream, from the answer (for [`RemoteSpec::transcode`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranscodePair {
    /// RTP from the offerer, toward the answerer.
    pub from_offerer: Transcode,
    /// RTP from the answerer, toward the offerer.
    pub from_answerer: Transcode,
}

/// Rewrites an offer for the other leg, whose profile allows `codecs` (empty: all, in the
/// offerer's order). Streams that stay enabled (port not 0) are the ones that need a relay pair.
pub fn prepare_offer(offer: &Sdp, codecs: &[String]) -> Result<Sdp, NegotiateError> {
    prepare_offer_transcoding(offer, &[], codecs).map(|p| p.sdp)
}

/// [`prepare_offer`] for an offerer whose own profile allows `from_codecs` (empty: all): the
/// offer is filtered by both profiles, and an audio stream whose filtered formats share no codec
/// with `to_codecs` is offered for transcoding (see the module docs) instead of refused.
pub fn prepare_offer_transcoding(
    offer: &Sdp,
    from_codecs: &[String],
    to_codecs: &[String],
) -> Result<PreparedOffer, NegotiateError> {
    let codecs = to_codecs;
    let mut plans = vec![None; offer.media.len()];
    if offer.media.is_empty() {
        return Err(NegotiateError::BadSdp("no media"));
    }
    let mut out = offer.clone();
    clean_session(&mut out);
    for (i, m) in out.media.iter_mut().enumerate() {
        strip_transport(m);
        if m.port == 0 {
            continue;
        }
        if !is_relayed(m) {
            // The relay moves datagrams only: a TCP stream (MSRP, BFCP over TCP...) is offered
            // disabled, so both ends see it rejected instead of connecting to nothing.
            m.port = 0;
            continue;
        }
        if is_held_by_address(offer, i) {
            set_direction(m, effective_direction(offer, i));
        }
        if m.is_rtp() && m.is_audio() && !codecs.is_empty() && !m.formats.is_empty() {
            // Transcoding is the last resort: only when what the offerer's own profile allows
            // shares no codec with the other profile. Otherwise the offer is filtered by the
            // other leg's profile alone, as without transcoding.
            let mut allowed = m.clone();
            let allowed_ok =
                from_codecs.is_empty() || filter_codecs(&mut allowed, from_codecs).is_ok();
            let shares = allowed_ok && filter_codecs(&mut allowed.clone(), codecs).is_ok();
            match plans.get_mut(i) {
                Some(slot) if allowed_ok && !shares => {
                    *m = allowed;
                    *slot = Some(offer_for_transcoding(m, codecs)?);
                }
                _ => filter_codecs(m, codecs)?,
            }
        }
    }
    Ok(PreparedOffer { sdp: out, transcode: plans })
}

/// [`prepare_answer`] for an offer made by [`prepare_offer_transcoding`]: transcoded m-lines of
/// the answer toward the offerer name the offerer's planned codec (its payload types, `rtpmap`
/// and `fmtp` lines), and each gets both directions' [`Transcode`].
pub fn prepare_answer_transcoding(
    answer: &Sdp,
    sent_offer: &Sdp,
    received_offer: &Sdp,
    plans: &[Option<TranscodePlan>],
) -> Result<(PreparedAnswer, Vec<Option<TranscodePair>>), NegotiateError> {
    let mut prepared = prepare_answer(answer, sent_offer, received_offer)?;
    let mut pairs = vec![None; prepared.sdp.media.len()];
    for (i, m) in prepared.sdp.media.iter_mut().enumerate() {
        let Some(plan) = plans.get(i).and_then(Option::as_ref) else { continue };
        if m.port == 0 {
            continue;
        }
        let (Some(raw), Some(sent), Some(offered)) =
            (answer.media.get(i), sent_offer.media.get(i), received_offer.media.get(i))
        else {
            continue;
        };
        // The answerer receives with its answer's numbers and sends with the numbers of the
        // offer it got (RFC 3264 §6.1).
        let (to_pt, to_codec) = first_transcodable(raw).ok_or(NegotiateError::NoCommonCodec)?;
        let from_pt = sent
            .formats
            .iter()
            .filter_map(|f| Some((f.parse::<u8>().ok()?, sent.codec(f)?)))
            .find(|(_, c)| c.matches(&to_codec))
            .map_or(to_pt, |(pt, _)| pt);
        let events = |media: &Media| {
            media.formats.iter().find_map(|f| {
                let c = media.codec(f)?;
                let te = c.name.eq_ignore_ascii_case("telephone-event")
                    && c.clock_rate == to_codec.clock_rate;
                te.then(|| Some((f.parse::<u8>().ok()?, c))).flatten()
            })
        };
        // Events cross only when both ends have them (at their codec's clock rate).
        let with_events = plan.events.is_some() && events(raw).is_some();
        let events_in = events(sent).filter(|_| with_events);
        let events_out = events(raw).filter(|_| with_events);
        let spec = |pt: u8, c: &Codec| CodecSpec {
            name: c.name.clone(),
            payload_type: pt,
            clock_rate: c.clock_rate,
            channels: c.channels.map_or(1, |n| n.min(255) as u8),
        };
        let offerer_codec = spec(plan.codec.0, &plan.codec.1);
        let offerer_events =
            plan.events.as_ref().filter(|_| with_events).map(|(pt, c)| spec(*pt, c));
        if let Some(slot) = pairs.get_mut(i) {
            *slot = Some(TranscodePair {
                from_offerer: Transcode {
                    from: offerer_codec.clone(),
                    to: spec(to_pt, &to_codec),
                    dtmf_from: offerer_events.clone(),
                    dtmf_to: events_out.as_ref().map(|(pt, c)| spec(*pt, c)),
                    fec_to: inband_fec(raw, to_pt),
                },
                from_answerer: Transcode {
                    from: spec(from_pt, &to_codec),
                    to: offerer_codec,
                    dtmf_from: events_in.as_ref().map(|(pt, c)| spec(*pt, c)),
                    dtmf_to: offerer_events,
                    fec_to: inband_fec(offered, plan.codec.0),
                },
            });
        }
        answer_for_transcoding(m, plan, offered, with_events);
    }
    // The payload type maps do not apply to transcoded lines (the transcoder writes its own).
    for (maps, pair) in prepared.pt_maps.iter_mut().zip(&pairs) {
        if pair.is_some() {
            *maps = PtMaps::default();
        }
    }
    Ok((prepared, pairs))
}

/// Whether format `pt` of a line has `useinbandfec=1` in its fmtp: its receiver decodes Opus
/// in-band FEC (RFC 7587 §7.1; absent means 0).
fn inband_fec(m: &Media, pt: u8) -> bool {
    m.attributes.iter().filter_map(|a| a.payload_value("fmtp")).any(|(p, params)| {
        p == pt
            && params.split(';').any(|kv| {
                kv.split_once('=').is_some_and(|(k, v)| {
                    k.trim().eq_ignore_ascii_case("useinbandfec") && v.trim() == "1"
                })
            })
    })
}

/// The Opus format parameters the SBC declares for what it receives on a transcoded line
/// (RFC 7587 §7.1). The other side is G.711, so nothing above 4 kHz survives: asking the
/// browser for narrowband (`maxplaybackrate=8000`) saves it bits and the SBC the decoding of
/// bands it would throw away (a fullband packet costs twice a narrowband one to decode to
/// 8 kHz). The SBC's own encoder runs at 8 kHz (`sprop-maxcapturerate`), decodes in-band FEC,
/// and sends mono.
///
/// `maxaveragebitrate=20000`: without it Chrome sends narrowband at 12 kbit/s (libwebrtc's
/// default once the playback rate is 8 kHz), and at that rate libopus never adds in-band FEC,
/// whatever the loss the SBC reports (`decide_fec`: narrowband FEC needs about 13-16 kbit/s
/// after the loss allowance, 20 kbit/s clears it up to 20 % loss). 20 kbit/s is also the rate of
/// the SBC's own encoder toward the browser.
const OPUS_FMTP: &str =
    "maxplaybackrate=8000;sprop-maxcapturerate=8000;maxaveragebitrate=20000;useinbandfec=1";

/// `params` (an offerer's Opus fmtp) with what the SBC declares for its own receiving side put
/// in place of the offerer's: [`OPUS_FMTP`], the rest (`minptime`, `cbr`, `usedtx`) kept.
fn opus_fmtp_answer(params: &str) -> String {
    const OURS: [&str; 6] = [
        "maxplaybackrate",
        "sprop-maxcapturerate",
        "maxaveragebitrate",
        "useinbandfec",
        "stereo",
        "sprop-stereo",
    ];
    let mut out: Vec<&str> = params
        .split(';')
        .map(str::trim)
        .filter(|kv| !kv.is_empty())
        .filter(|kv| {
            let key = kv.split_once('=').map_or(*kv, |(k, _)| k).trim();
            !OURS.iter().any(|o| key.eq_ignore_ascii_case(o))
        })
        .collect();
    out.push(OPUS_FMTP);
    out.join(";")
}

/// The first format of a line that the SBC transcodes, with its payload type.
fn first_transcodable(m: &Media) -> Option<(u8, Codec)> {
    m.formats.iter().find_map(|f| {
        let c = m.codec(f)?;
        transcode::Codec::from_rtpmap(&c.name, c.clock_rate)?;
        Some((f.parse().ok()?, c))
    })
}

/// Payload types the SBC uses for the codecs it offers in place of the offerer's: the RFC 3551
/// static ones for G.711, and the numbers browsers use for Opus and telephone-event.
const OPUS_PT: u8 = 111;
const EVENTS_PT: u8 = 101;

/// Rewrites an offered audio line (already filtered by the offerer's profile) for a leg whose
/// profile `to_codecs` shares no codec with it: that profile's transcodable codecs, in its
/// order, plus telephone-event at the first one's rate when both the offer and the profile
/// have it. Returns what the answer toward the offerer will name.
fn offer_for_transcoding(
    m: &mut Media,
    to_codecs: &[String],
) -> Result<TranscodePlan, NegotiateError> {
    let codec = first_transcodable(m).ok_or(NegotiateError::NoCommonCodec)?;
    let events = m.formats.iter().find_map(|f| {
        let c = m.codec(f)?;
        let te =
            c.name.eq_ignore_ascii_case("telephone-event") && c.clock_rate == codec.1.clock_rate;
        te.then(|| Some((f.parse::<u8>().ok()?, c))).flatten()
    });
    let mut offered: Vec<(u8, &str, Option<&str>)> = Vec::new();
    for entry in to_codecs {
        let (name, rate) = match entry.split_once('/') {
            Some((name, rate)) => (name.trim(), rate.trim().parse::<u32>().ok()),
            None => (entry.trim(), None),
        };
        let Some(c) = transcode::Codec::from_rtpmap(
            name,
            rate.unwrap_or(match name {
                n if n.eq_ignore_ascii_case("opus") => 48000,
                _ => 8000,
            }),
        ) else {
            continue;
        };
        let line = match c {
            transcode::Codec::Opus => (OPUS_PT, "opus/48000/2", Some(OPUS_FMTP)),
            transcode::Codec::Pcmu => (0, "PCMU/8000", None),
            transcode::Codec::Pcma => (8, "PCMA/8000", None),
        };
        if !offered.iter().any(|o| o.0 == line.0) {
            offered.push(line);
        }
    }
    let Some(&(_, first, _)) = offered.first() else {
        return Err(NegotiateError::NoCommonCodec);
    };
    let rate: u32 = first.split('/').nth(1).and_then(|r| r.parse().ok()).unwrap_or(8000);
    let te = Codec { name: "telephone-event".to_owned(), clock_rate: rate, channels: None };
    let with_events = events.is_some() && profile_rank(&te, to_codecs).is_some();

    m.attributes.retain(|a| format_attribute_pt(a).is_none() && !is_stream_attribute(a));
    m.formats.clear();
    for (pt, rtpmap, fmtp) in &offered {
        m.formats.push(pt.to_string());
        m.attributes.push(Attribute::new("rtpmap", format!("{pt} {rtpmap}")));
        if let Some(fmtp) = fmtp {
            m.attributes.push(Attribute::new("fmtp", format!("{pt} {fmtp}")));
        }
    }
    if with_events {
        m.formats.push(EVENTS_PT.to_string());
        m.attributes.push(Attribute::new("rtpmap", format!("{EVENTS_PT} telephone-event/{rate}")));
        m.attributes.push(Attribute::new("fmtp", format!("{EVENTS_PT} 0-16")));
    }
    // The SBC packetizes 20 ms frames whatever the offerer does.
    m.attributes.push(Attribute::new("ptime", "20".to_owned()));
    Ok(TranscodePlan { codec, events })
}

/// Rewrites an answer line toward the offerer of a transcoded stream: its planned codec (and
/// events, when the answerer accepted events too), with the offerer's own `rtpmap`/`fmtp`.
fn answer_for_transcoding(m: &mut Media, plan: &TranscodePlan, offered: &Media, events: bool) {
    let mut pts = vec![plan.codec.0];
    if let Some((pt, _)) = plan.events.as_ref().filter(|_| events) {
        pts.push(*pt);
    }
    m.attributes.retain(|a| format_attribute_pt(a).is_none() && !is_stream_attribute(a));
    m.formats = pts.iter().map(u8::to_string).collect();
    let opus = transcode::Codec::from_rtpmap(&plan.codec.1.name, plan.codec.1.clock_rate)
        == Some(transcode::Codec::Opus);
    let mut opus_fmtp = opus;
    for a in &offered.attributes {
        let keep = ["rtpmap", "fmtp"]
            .iter()
            .any(|n| a.payload_value(n).is_some_and(|(pt, _)| pts.contains(&pt)));
        if !keep {
            continue;
        }
        match a.payload_value("fmtp") {
            Some((pt, params)) if opus && pt == plan.codec.0 => {
                m.attributes
                    .push(Attribute::new("fmtp", format!("{pt} {}", opus_fmtp_answer(params))));
                opus_fmtp = false;
            }
            _ => m.attributes.push(a.clone()),
        }
    }
    if opus_fmtp {
        // The offerer sent no fmtp for its Opus: the SBC's parameters still apply.
        m.attributes.push(Attribute::new("fmtp", format!("{} {OPUS_FMTP}", plan.codec.0)));
    }
}

/// Attributes that describe the sender's own stream (its SSRCs and packetization), which a
/// transcoded stream does not share.
fn is_stream_attribute(a: &Attribute) -> bool {
    ["ssrc", "ssrc-group", "ptime", "maxptime"].iter().any(|n| a.is(n))
}

/// Rewrites an answer for the offerer. `sent_offer` is the offer as the answerer got it (after
/// [`prepare_offer`] and [`localize`]), `received_offer` as the offerer sent it.
pub fn prepare_answer(
    answer: &Sdp,
    sent_offer: &Sdp,
    received_offer: &Sdp,
) -> Result<PreparedAnswer, NegotiateError> {
    // RFC 3264 §6: one m-line per offered one, same order, same media type.
    let matches_offer = answer.media.len() == sent_offer.media.len()
        && answer
            .media
            .iter()
            .zip(&sent_offer.media)
            .all(|(a, o)| a.kind.eq_ignore_ascii_case(&o.kind));
    if !matches_offer {
        return Err(NegotiateError::BadSdp("answer m= lines do not match the offer"));
    }
    let mut out = answer.clone();
    clean_session(&mut out);
    let mut pt_maps = Vec::with_capacity(out.media.len());
    for (i, (m, offered)) in out.media.iter_mut().zip(&sent_offer.media).enumerate() {
        let mut maps = PtMaps::default();
        strip_transport(m);
        // The SBC answers the offerer's rtcp-mux itself (the relay handles a difference between
        // the legs), so what the answerer said about it does not cross.
        m.attributes.retain(|a| !a.is("rtcp-mux") && !a.is("rtcp-mux-only"));
        if offered.port == 0 || m.port == 0 {
            m.port = 0;
            if m.formats.is_empty() {
                m.formats.clone_from(&offered.formats);
            }
            pt_maps.push(maps);
            continue;
        }
        if is_held_by_address(answer, i) {
            set_direction(m, effective_direction(answer, i));
        }
        // An offered line without formats (invalid, but passed on as the offerer sent it) has
        // nothing to renumber against: its answer crosses as it is.
        if m.is_rtp() && !offered.formats.is_empty() {
            maps = renumber_to_offer(m, offered)?;
        }
        if received_offer.media.get(i).is_some_and(has_rtcp_mux) {
            m.attributes.push(Attribute::flag("rtcp-mux"));
        }
        pt_maps.push(maps);
    }
    Ok(PreparedAnswer { sdp: out, pt_maps })
}

/// Writes the SBC's side of a leg into a prepared description (all but `o=`, which the caller
/// stamps with the leg's origin): a session `c=` for `advertise` (`IN IP4` or `IN IP6` after its
/// family, whatever the input had), media-level `c=` removed, every enabled m-line's port from
/// `ports` (`None` disables it), and `a=rtcp` (kept only where the input had one) pointing at
/// RTP + 1, or at the RTP port where `rtcp_on_rtp` says RTCP is multiplexed toward this leg
/// (RFC 5761 §5.1.3).
pub fn localize(sdp: &mut Sdp, advertise: IpAddr, ports: &[Option<u16>], rtcp_on_rtp: &[bool]) {
    sdp.connection = Some(Connection::for_ip(advertise));
    for (i, m) in sdp.media.iter_mut().enumerate() {
        m.connections.clear();
        m.port_count = None;
        let port = ports.get(i).copied().flatten().filter(|_| m.port != 0);
        let Some(port) = port else {
            m.port = 0;
            m.attributes.retain(|a| !a.is("rtcp"));
            continue;
        };
        m.port = port;
        let rtcp = if rtcp_on_rtp.get(i).copied().unwrap_or(false) {
            port
        } else {
            port.saturating_add(1)
        };
        for a in m.attributes.iter_mut().filter(|a| a.is("rtcp")) {
            let with_address = a.value.as_deref().is_some_and(|v| v.split_whitespace().count() > 1);
            a.value = Some(if with_address {
                format!("{rtcp} IN {} {advertise}", addr_type(advertise))
            } else {
                rtcp.to_string()
            });
        }
    }
}

/// The direction the writer of `sdp` really has on media `index`: its attribute, except that an
/// RFC 2543 hold address (`0.0.0.0`, or `::`) means it cannot receive. Without ICE only: with
/// ICE (WebRTC), `c=IN IP4 0.0.0.0` just says "see the candidates" (trickle ICE, RFC 8840, writes
/// it while no candidate is known).
///
/// Toward the other leg such a hold is written as the SBC's real address plus `a=sendonly` (or
/// `a=inactive` when the stream was `recvonly`): RFC 3264 §8.4 deprecates the 0.0.0.0 form, it
/// has no IPv6 equivalent that user agents understand (the legs may differ in family), and it
/// would stop RTCP; the direction attributes are understood by every current UA (Asterisk,
/// FreeSWITCH, baresip, browsers), which answer `recvonly`/`inactive` as for any hold.
pub fn effective_direction(sdp: &Sdp, index: usize) -> Direction {
    let declared = sdp.direction(index);
    if is_held_by_address(sdp, index) {
        Direction::from_flags(declared.sends(), false)
    } else {
        declared
    }
}

/// Where the writer of `sdp` receives media `index`: RTP at the `c=` address and `m=` port, RTCP
/// at `a=rtcp` (port, and address if given; RFC 3605) or else RTP + 1. Both `None` for a
/// disabled stream, a hold address, or a host name (the media plane does no DNS).
pub fn remote_addresses(sdp: &Sdp, index: usize) -> (Option<SocketAddr>, Option<SocketAddr>) {
    let Some(m) = sdp.media.get(index).filter(|m| m.port != 0) else {
        return (None, None);
    };
    let ip = sdp.connection_for(index).and_then(Connection::ip).filter(|ip| !ip.is_unspecified());
    let Some(ip) = ip else {
        return (None, None);
    };
    let rtp = SocketAddr::new(ip, m.port);
    let explicit = m.attribute("rtcp").and_then(|a| {
        let mut f = a.value.as_deref()?.split_whitespace();
        let port: u16 = f.next()?.parse().ok().filter(|p| *p != 0)?;
        let addr = match (f.next(), f.next(), f.next()) {
            (Some(_net), Some(_family), Some(addr)) => addr.parse().ok()?,
            _ => ip,
        };
        Some(SocketAddr::new(addr, port))
    });
    let rtcp = explicit.or_else(|| m.port.checked_add(1).map(|p| SocketAddr::new(ip, p)));
    (Some(rtp), rtcp)
}

/// The first real codec of a media line (auxiliary formats such as telephone-event skipped).
pub fn main_codec(media: &Media) -> Option<Codec> {
    media.formats.iter().filter_map(|f| media.codec(f)).find(|c| !c.is_auxiliary())
}

/// RTP clock rate of the media line's main codec; 8000 (G.711) when unknown.
pub fn clock_rate(media: &Media) -> u32 {
    main_codec(media).map_or(8000, |c| c.clock_rate)
}

/// Whether the line asks for (offer) or accepts (answer) RTP/RTCP multiplexing (RFC 5761).
pub fn has_rtcp_mux(media: &Media) -> bool {
    media.attribute("rtcp-mux").is_some()
}

/// Whether the relay can carry the stream: any datagram transport, not TCP.
pub fn is_relayed(media: &Media) -> bool {
    !media.proto.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("TCP"))
}

/// RFC 2543 hold: the connection address is unspecified, and no ICE explains why.
fn is_held_by_address(sdp: &Sdp, index: usize) -> bool {
    let unspecified =
        sdp.connection_for(index).and_then(Connection::ip).is_some_and(|ip| ip.is_unspecified());
    unspecified && !sdp.uses_ice(index)
}

/// Removes what names the peer (topology hiding) and what belongs to its own transport.
fn clean_session(sdp: &mut Sdp) {
    sdp.session_name = "-".to_owned();
    sdp.information = None;
    sdp.uri = None;
    sdp.emails.clear();
    sdp.phones.clear();
    sdp.attributes.retain(|a| !is_transport_attribute(a));
}

fn strip_transport(m: &mut Media) {
    m.attributes.retain(|a| !is_transport_attribute(a));
}

/// ICE (RFC 8839) and BUNDLE (RFC 8843) attributes: they describe how the sender's own
/// transport is reached, which the SBC replaces with its ports on the other leg.
fn is_transport_attribute(a: &Attribute) -> bool {
    let bundle_group = a.is("group")
        && a.value
            .as_deref()
            .and_then(|v| v.split_whitespace().next())
            .is_some_and(|semantics| semantics.eq_ignore_ascii_case("BUNDLE"));
    bundle_group
        || a.name.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("ice-"))
        || ["candidate", "end-of-candidates", "remote-candidates", "bundle-only"]
            .iter()
            .any(|n| a.is(n))
}

/// Replaces the media-level direction with `direction`.
fn set_direction(m: &mut Media, direction: Direction) {
    let flag = Attribute::flag(direction.as_str());
    let existing = m
        .attributes
        .iter()
        .position(|a| a.value.is_none() && Direction::from_attribute(&a.name).is_some());
    match existing {
        Some(at) => {
            m.attributes[at] = flag;
            let mut seen = 0usize;
            m.attributes.retain(|a| {
                let is_dir = a.value.is_none() && Direction::from_attribute(&a.name).is_some();
                seen += usize::from(is_dir);
                !is_dir || seen == 1
            });
        }
        None => m.attributes.push(flag),
    }
}

/// The position of a codec in a leg profile (`"PCMU"`, or `"telephone-event/8000"` to pin the
/// clock rate), if the profile allows it.
fn profile_rank(codec: &Codec, profile: &[String]) -> Option<usize> {
    profile.iter().position(|entry| {
        let (name, rate) = match entry.split_once('/') {
            Some((name, rate)) => (name, Some(rate)),
            None => (entry.as_str(), None),
        };
        name.trim().eq_ignore_ascii_case(&codec.name)
            && rate.is_none_or(|r| r.trim().parse() == Ok(codec.clock_rate))
    })
}

/// Keeps the formats the profile allows, in the profile's order (the offerer's order among
/// formats of the same codec), and drops the `rtpmap`/`fmtp`/`rtcp-fb` lines of the others.
fn filter_codecs(m: &mut Media, profile: &[String]) -> Result<(), NegotiateError> {
    let mut ranked: Vec<(usize, String)> = m
        .formats
        .iter()
        .filter_map(|f| Some((profile_rank(&m.codec(f)?, profile)?, f.clone())))
        .collect();
    ranked.sort_by_key(|(rank, _)| *rank);
    let kept: Vec<String> = ranked.into_iter().map(|(_, f)| f).collect();
    if !kept.iter().any(|f| m.codec(f).is_some_and(|c| !c.is_auxiliary())) {
        return Err(NegotiateError::NoCommonCodec);
    }
    let kept_pts: Vec<u8> = kept.iter().filter_map(|f| f.parse().ok()).collect();
    m.attributes.retain(|a| match format_attribute_pt(a) {
        Some(pt) => kept_pts.contains(&pt),
        None => true,
    });
    m.formats = kept;
    Ok(())
}

/// The payload type a per-format attribute (`rtpmap`, `fmtp`, `rtcp-fb`) is about.
fn format_attribute_pt(a: &Attribute) -> Option<u8> {
    ["rtpmap", "fmtp", "rtcp-fb"].iter().find_map(|n| a.payload_value(n)).map(|(pt, _)| pt)
}

/// Renumbers an RTP answer line to the offer's payload types (matching codecs by name, clock
/// rate and channels; a dynamic type without `rtpmap` by number), drops formats the offer did
/// not have, and returns the packet maps between the two numberings.
fn renumber_to_offer(m: &mut Media, offered: &Media) -> Result<PtMaps, NegotiateError> {
    let mut pairs: Vec<(u8, u8)> = Vec::new(); // (answer's number, offer's number)
    for f in &m.formats {
        let Some(y) = f.parse::<u8>().ok().filter(|pt| *pt < 128) else {
            continue;
        };
        let taken = |x: u8| pairs.iter().any(|&(_, used)| used == x);
        let codec = m.codec(f);
        let same_number = offered.formats.iter().any(|o| o == f)
            && match (&codec, offered.codec(f)) {
                (Some(ours), Some(theirs)) => ours.matches(&theirs),
                (None, _) => true,
                (Some(_), None) => false,
            };
        let x = if same_number {
            Some(y)
        } else {
            codec.as_ref().and_then(|c| {
                offered
                    .formats
                    .iter()
                    .filter_map(|o| Some((o, o.parse::<u8>().ok().filter(|pt| *pt < 128)?)))
                    .filter(|(_, x)| !taken(*x))
                    .find(|(o, _)| offered.codec(o).is_some_and(|oc| oc.matches(c)))
                    .map(|(_, x)| x)
            })
        };
        if let Some(x) = x.filter(|x| !taken(*x)) {
            pairs.push((y, x));
        }
    }

    let mut maps = PtMaps::default();
    for &(y, x) in &pairs {
        // Invariant: x and y are below 128 (filtered above), the maps' length.
        maps.from_offerer[usize::from(x)] = y;
        maps.from_answerer[usize::from(y)] = x;
    }
    let to_offer = |y: u8| pairs.iter().find(|p| p.0 == y).map(|p| p.1);

    m.attributes.retain_mut(|a| {
        let Some((name, y)) =
            ["rtpmap", "fmtp", "rtcp-fb"].iter().find_map(|n| Some((*n, a.payload_value(n)?.0)))
        else {
            return true;
        };
        let Some(x) = to_offer(y) else {
            return false;
        };
        let rest = a.payload_value(name).map_or("", |(_, rest)| rest);
        let rest = if name == "fmtp" { renumber_apt(rest, &to_offer) } else { rest.to_owned() };
        a.value = Some(if rest.is_empty() { x.to_string() } else { format!("{x} {rest}") });
        true
    });
    m.formats = pairs.iter().map(|(_, x)| x.to_string()).collect();

    if m.formats.is_empty() || (m.is_audio() && main_codec(m).is_none()) {
        if m.is_audio() {
            return Err(NegotiateError::NoCommonCodec);
        }
        // A video (or other) stream with nothing the offer had: rejected toward the offerer.
        m.port = 0;
        m.formats.clone_from(&offered.formats);
    }
    Ok(maps)
}

/// RTX (RFC 4588) names the payload type it repeats in `apt=`; it follows the renumbering.
fn renumber_apt(params: &str, to_offer: &impl Fn(u8) -> Option<u8>) -> String {
    params
        .split(';')
        .map(|p| {
            let renumbered =
                p.trim().strip_prefix("apt=").and_then(|n| n.parse().ok()).and_then(to_offer);
            match renumbered {
                Some(x) => format!("{}apt={x}", &p[..p.len() - p.trim_start().len()]),
                None => p.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(";")
}

#[cfg(test)]
mod tests;
