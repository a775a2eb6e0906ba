// ua.js: the in-page half of the lab's browser harness (driven by ua.mjs through playwright).
//
// window.labHarness.run(params) registers a JsSIP user agent over WebSocket, places or answers
// one call, plays the remote track in <audio id=remote> (headless Chrome decodes remote audio,
// and counts it in getStats(), only then), measures the received audio with WebAudio while the
// call lasts, snapshots getStats() every second, hangs up and returns a plain object. Judging
// the result (exit status) is ua.mjs's job: this file only observes.
//
// Progress is reported through window.labEvent(name, detail) when the driver exposes it (it
// writes the ready file on "registered").
'use strict';

(function () {
  const T0 = performance.now();
  const secs = () => Math.round(performance.now() - T0) / 1000;
  const timeline = [];

  function event(name, detail) {
    const e = Object.assign({ t: secs(), event: name }, detail || {});
    timeline.push(e);
    if (typeof window.labEvent === 'function') {
      window.labEvent(name, e).catch(() => {});
    }
  }

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  // Resolves with the first of the named JsSIP events emitted by `emitter`, or with
  // {timeout: true} after `ms`.
  function firstOf(emitter, names, ms) {
    return new Promise((resolve) => {
      const handlers = {};
      const done = (value) => {
        clearTimeout(timer);
        for (const n of names) emitter.removeListener(n, handlers[n]);
        resolve(value);
      };
      const timer = setTimeout(() => done({ name: 'timeout', timeout: true }), ms);
      for (const n of names) {
        handlers[n] = (e) => done({ name: n, e });
        emitter.on(n, handlers[n]);
      }
    });
  }

  // Goertzel power of `x` at `hz`, normalised so that a pure sine at hz over the whole window
  // gives its share of the window's energy (1.0 for a clean tone, ~0 for another one).
  function goertzelShare(x, rate, hz) {
    const k = 2 * Math.cos((2 * Math.PI * hz) / rate);
    let s1 = 0;
    let s2 = 0;
    let energy = 0;
    for (let i = 0; i < x.length; i++) {
      const s0 = x[i] + k * s1 - s2;
      s2 = s1;
      s1 = s0;
      energy += x[i] * x[i];
    }
    const power = s1 * s1 + s2 * s2 - k * s1 * s2;
    if (energy <= 0) return 0;
    return Math.min(1, power / ((x.length / 2) * energy));
  }

  // Measures a received stream every 100 ms: level (dBFS, RMS), dominant frequency (FFT peak
  // of the AnalyserNode, parabolic interpolation) and, with an expected frequency, the share of
  // energy at it (Goertzel).
  class ToneMeter {
    constructor(stream, expectHz) {
      this.expectHz = expectHz;
      this.frames = [];
      this.ctx = new AudioContext();
      this.rate = this.ctx.sampleRate;
      const src = this.ctx.createMediaStreamSource(stream);
      this.an = this.ctx.createAnalyser();
      this.an.fftSize = 8192;
      this.an.smoothingTimeConstant = 0;
      src.connect(this.an);
      // Keep the graph pulled toward the destination, silently.
      const mute = this.ctx.createGain();
      mute.gain.value = 0;
      this.an.connect(mute);
      mute.connect(this.ctx.destination);
      this.td = new Float32Array(this.an.fftSize);
      this.fd = new Float32Array(this.an.frequencyBinCount);
      this.t0 = secs();
      this.ctx.resume().catch(() => {});
      this.timer = setInterval(() => this.sample(), 100);
    }

    sample() {
      const an = this.an;
      an.getFloatTimeDomainData(this.td);
      let sum = 0;
      for (const v of this.td) sum += v * v;
      const rms = Math.sqrt(sum / this.td.length);
      const db = rms > 0 ? 20 * Math.log10(rms) : -200;
      an.getFloatFrequencyData(this.fd);
      const binHz = this.rate / an.fftSize;
      const lo = Math.max(1, Math.floor(50 / binHz));
      const hi = Math.min(this.fd.length - 2, Math.ceil(8000 / binHz));
      let best = lo;
      for (let i = lo; i <= hi; i++) if (this.fd[i] > this.fd[best]) best = i;
      const a = this.fd[best - 1];
      const b = this.fd[best];
      const c = this.fd[best + 1];
      const den = a - 2 * b + c;
      const off = Number.isFinite(den) && den !== 0 ? (0.5 * (a - c)) / den : 0;
      const peakHz = (best + Math.max(-0.5, Math.min(0.5, off))) * binHz;
      const frame = { t: secs() - this.t0, db, hz: peakHz };
      if (this.expectHz) frame.share = goertzelShare(this.td, this.rate, this.expectHz);
      this.frames.push(frame);
    }

    stop() {
      if (this.stopped) return;
      this.stopped = true;
      clearInterval(this.timer);
      this.ctx.close().catch(() => {});
    }

    // Frames from `skip` s after the track arrived (jitter buffer and ramp-up excluded); a
    // frame is "voiced" above -60 dBFS.
    summary(toleranceHz, skip) {
      const med = (xs) => {
        if (!xs.length) return null;
        const s = [...xs].sort((p, q) => p - q);
        return s[Math.floor(s.length / 2)];
      };
      const round = (x, n) => (x === null ? null : Number(x.toFixed(n)));
      const frames = this.frames.filter((f) => f.t >= skip);
      const voiced = frames.filter((f) => f.db > -60);
      const out = {
        sampleRate: this.rate,
        frames: frames.length,
        voicedFrames: voiced.length,
        levelDbfs: round(med(frames.map((f) => f.db)), 1),
        dominantHz: round(med(voiced.map((f) => f.hz)), 1),
      };
      if (this.expectHz) {
        const hits = voiced.filter((f) => Math.abs(f.hz - this.expectHz) <= toleranceHz);
        out.expectedHz = this.expectHz;
        out.toleranceHz = toleranceHz;
        out.matchedFrames = hits.length;
        out.matchRatio = frames.length ? round(hits.length / frames.length, 3) : 0;
        out.toneShare = round(med(voiced.map((f) => f.share)), 3);
        const first = this.frames.find(
          (f) => f.db > -60 && Math.abs(f.hz - this.expectHz) <= toleranceHz);
        out.firstMatchS = first ? round(first.t, 2) : null;
      }
      // One line per second, for reading a failure: median level and dominant frequency.
      const perSecond = [];
      for (let s = 0; ; s++) {
        const fs = this.frames.filter((f) => f.t >= s && f.t < s + 1);
        if (!fs.length) break;
        perSecond.push({ s, db: round(med(fs.map((f) => f.db)), 1),
          hz: round(med(fs.map((f) => f.hz)), 1) });
      }
      out.perSecond = perSecond;
      return out;
    }
  }

  // --codecs: restrict what this browser offers or answers to the named codecs (mimeType
  // subtypes: opus, pcmu, pcma, g722, telephone-event, cn, red), in that order, through
  // setCodecPreferences on each audio transceiver just before JsSIP creates the offer/answer
  // (JsSIP has no hook between setRemoteDescription and createAnswer).
  function restrictCodecs(names) {
    const want = names.map((n) => n.toLowerCase());
    const caps = RTCRtpReceiver.getCapabilities('audio').codecs;
    const keep = [];
    for (const n of want) {
      for (const c of caps) if (c.mimeType.split('/')[1].toLowerCase() === n) keep.push(c);
    }
    if (!keep.length) throw new Error('none of the codecs ' + names.join(',') + ' is supported');
    const prefer = (pc) => {
      for (const t of pc.getTransceivers()) {
        if (t.receiver.track && t.receiver.track.kind === 'audio' && !t.stopped) {
          t.setCodecPreferences(keep);
        }
      }
    };
    for (const m of ['createOffer', 'createAnswer']) {
      const orig = RTCPeerConnection.prototype[m];
      RTCPeerConnection.prototype[m] = function (...args) {
        prefer(this);
        return orig.apply(this, args);
      };
    }
    return keep.map((c) => c.mimeType + '/' + c.clockRate);
  }

  function digestStats(report) {
    const all = new Map();
    report.forEach((s) => all.set(s.id, s));
    const cand = (c) => c && { address: c.address, port: c.port, protocol: c.protocol,
      candidateType: c.candidateType };
    const codec = (id) => {
      const c = all.get(id);
      return c && { mimeType: c.mimeType, clockRate: c.clockRate, channels: c.channels,
        payloadType: c.payloadType, sdpFmtpLine: c.sdpFmtpLine };
    };
    const out = { transport: null, candidatePair: null, inbound: null, outbound: null,
      remoteInbound: null };
    for (const s of all.values()) {
      if (s.type === 'transport' && !out.transport) {
        out.transport = { dtlsState: s.dtlsState, iceState: s.iceState, dtlsRole: s.dtlsRole,
          srtpCipher: s.srtpCipher, dtlsCipher: s.dtlsCipher, tlsVersion: s.tlsVersion,
          selectedCandidatePairChanges: s.selectedCandidatePairChanges,
          bytesSent: s.bytesSent, bytesReceived: s.bytesReceived };
        const p = all.get(s.selectedCandidatePairId);
        if (p) {
          out.candidatePair = { state: p.state, nominated: p.nominated,
            local: cand(all.get(p.localCandidateId)), remote: cand(all.get(p.remoteCandidateId)),
            currentRoundTripTime: p.currentRoundTripTime, requestsSent: p.requestsSent,
            responsesReceived: p.responsesReceived };
        }
      } else if (s.type === 'inbound-rtp' && s.kind === 'audio') {
        out.inbound = { ssrc: s.ssrc, packetsReceived: s.packetsReceived,
          packetsLost: s.packetsLost, jitter: s.jitter, bytesReceived: s.bytesReceived,
          totalSamplesReceived: s.totalSamplesReceived, concealedSamples: s.concealedSamples,
          audioLevel: s.audioLevel, codec: codec(s.codecId) };
      } else if (s.type === 'outbound-rtp' && s.kind === 'audio') {
        out.outbound = { ssrc: s.ssrc, packetsSent: s.packetsSent, bytesSent: s.bytesSent,
          codec: codec(s.codecId) };
      } else if (s.type === 'remote-inbound-rtp' && s.kind === 'audio') {
        out.remoteInbound = { packetsLost: s.packetsLost, fractionLost: s.fractionLost,
          jitter: s.jitter, roundTripTime: s.roundTripTime };
      }
    }
    return out;
  }

  async function run(p) {
    const result = {
      params: { wss: p.wss, uri: p.uri, mode: p.mode, target: p.target || null,
        register: p.register, durationS: p.durationMs / 1000, holdS: p.holdMs / 1000 },
      registered: null,
      call: null,
      audio: null,
      stats: null,
      sdp: null,
      timeline,
      errors: [],
    };
    if (p.debug) JsSIP.debug.enable('JsSIP:*');
    else JsSIP.debug.disable();
    if (p.codecs && p.codecs.length) {
      try {
        result.codecsOffered = restrictCodecs(p.codecs);
      } catch (err) {
        result.errors.push('--codecs: ' + err.message);
        return result;
      }
    }

    let ua;
    try {
      const socket = new JsSIP.WebSocketInterface(p.wss);
      ua = new JsSIP.UA({
        sockets: [socket],
        uri: p.uri,
        password: p.password || undefined,
        authorization_user: p.authUser || undefined,
        display_name: p.displayName || undefined,
        register: false,
        register_expires: p.registerExpires,
        session_timers: false,
        user_agent: 'sbc-lab JsSIP/' + JsSIP.version,
        no_answer_timeout: 60,
      });
    } catch (err) {
      result.errors.push('JsSIP.UA: ' + err.message);
      return result;
    }
    ua.on('connected', () => event('ws-connected'));
    ua.on('disconnected', (e) => event('ws-disconnected', { code: e && e.code }));

    // Incoming calls are queued from the start, so that one arriving while we still wait for
    // something else is not lost.
    const incoming = [];
    let incomingWaiter = null;
    ua.on('newRTCSession', (e) => {
      if (e.originator !== 'remote') return;
      event('incoming', { from: e.request.from.uri.toString() });
      if (p.mode !== 'answer') {
        e.session.terminate({ status_code: 486 });
        return;
      }
      incoming.push(e.session);
      if (incomingWaiter) incomingWaiter();
    });

    ua.start();
    const conn = await firstOf(ua, ['connected', 'disconnected'], p.connectTimeoutMs);
    if (conn.name !== 'connected') {
      result.errors.push('WebSocket to ' + p.wss + ' not connected (' + conn.name + ')');
      result.registered = p.register ? { ok: false, status: null, cause: 'no connection' } : null;
      ua.stop();
      return result;
    }

    if (p.register) {
      const regWait = firstOf(ua, ['registered', 'registrationFailed'], p.registerTimeoutMs);
      ua.register();
      const reg = await regWait;
      if (reg.name === 'registered') {
        const r = reg.e.response;
        result.registered = { ok: true, status: r.status_code,
          expires: r.getHeader('Expires') || null, contact: r.getHeader('Contact') || null };
        event('registered', { status: r.status_code });
      } else {
        const r = reg.e && reg.e.response;
        result.registered = { ok: false, status: r ? r.status_code : null,
          cause: reg.timeout ? 'timeout' : reg.e.cause };
        event('registration-failed', result.registered);
        ua.stop();
        return result;
      }
    }

    if (p.mode === 'register') {
      await sleep(p.holdMs);
    } else {
      await runCall(ua, p, result, incoming, (w) => { incomingWaiter = w; });
    }

    if (p.register && ua.isRegistered()) {
      const un = firstOf(ua, ['unregistered'], 3000);
      ua.unregister();
      const u = await un;
      result.unregistered = u.name === 'unregistered';
    }
    ua.stop();
    await sleep(200);
    return result;
  }

  async function runCall(ua, p, result, incoming, setWaiter) {
    const call = { established: false, direction: p.mode === 'call' ? 'outgoing' : 'incoming',
      status: null, cause: null, endedBy: null, durationS: null };
    result.call = call;
    let session;
    if (p.mode === 'call') {
      session = ua.call(p.target, {
        mediaConstraints: { audio: true, video: false },
        pcConfig: { iceServers: [] },
      });
      event('calling', { target: p.target });
    } else {
      if (!incoming.length) {
        await Promise.race([new Promise((r) => setWaiter(r)), sleep(p.answerTimeoutMs)]);
      }
      session = incoming.shift();
      if (!session) {
        call.cause = 'no incoming call within ' + p.answerTimeoutMs / 1000 + ' s';
        result.errors.push(call.cause);
        return;
      }
    }

    let meter = null;
    let pc = null;
    let ended = false;
    let onEnded = null;
    const endedP = new Promise((r) => { onEnded = r; });
    let lastStats = null;
    const audio = document.getElementById('remote');

    const onTrack = (track) => {
      if (meter || track.kind !== 'audio') return;
      const stream = new MediaStream([track]);
      audio.srcObject = stream;
      audio.play().then(() => event('remote-audio-playing'),
        (err) => result.errors.push('audio.play: ' + err.message));
      meter = new ToneMeter(stream, p.expectHz);
      event('remote-track');
    };
    const watch = (conn) => {
      pc = conn;
      pc.addEventListener('track', (e) => onTrack(e.track));
      pc.addEventListener('connectionstatechange', () =>
        event('pc-' + pc.connectionState));
    };
    if (session.connection) watch(session.connection);
    session.on('peerconnection', (e) => watch(e.peerconnection));
    session.on('progress', (e) => event('progress', { status: e.response && e.response.status_code }));
    session.on('failed', (e) => {
      call.status = e.message && e.message.status_code ? e.message.status_code : null;
      call.cause = e.cause;
      event('failed', { cause: e.cause, status: call.status });
    });
    session.on('ended', (e) => {
      ended = true;
      // What plays after the BYE is silence: keep it out of the measurement.
      if (meter) meter.stop();
      call.endedBy = e.originator;
      call.cause = e.cause;
      event('ended', { by: e.originator, cause: e.cause });
      onEnded();
    });

    const confirmed = firstOf(session, ['confirmed', 'failed'], p.callTimeoutMs);
    if (p.mode === 'answer') {
      event('answering');
      session.answer({ mediaConstraints: { audio: true, video: false },
        pcConfig: { iceServers: [] } });
    }
    const c = await confirmed;
    if (c.name !== 'confirmed') {
      if (c.timeout) {
        call.cause = 'not established within ' + p.callTimeoutMs / 1000 + ' s';
        session.terminate();
      }
      result.errors.push('call not established: ' + call.cause);
      return;
    }
    call.established = true;
    call.status = 200;
    event('confirmed');
    if (!pc) pc = session.connection;
    if (!meter && pc) {
      for (const r of pc.getReceivers()) if (r.track) onTrack(r.track);
    }

    const t0 = performance.now();
    if (p.dtmf) {
      result.dtmf = { requested: p.dtmf, sent: '', error: null };
      setTimeout(() => {
        if (ended || !pc) return;
        const sender = pc.getSenders().find((x) => x.track && x.track.kind === 'audio');
        if (!sender || !sender.dtmf || !sender.dtmf.canInsertDTMF) {
          result.dtmf.error = 'cannot send RFC 4733 events (telephone-event not negotiated?)';
          return;
        }
        sender.dtmf.addEventListener('tonechange', (e) => {
          if (e.tone) {
            result.dtmf.sent += e.tone;
            event('dtmf-sent', { tone: e.tone });
          }
        });
        sender.dtmf.insertDTMF(p.dtmf, 160, 100);
      }, p.dtmfAtMs);
    }
    const snap = async () => {
      if (!pc || pc.signalingState === 'closed') return;
      try {
        lastStats = digestStats(await pc.getStats());
        lastStats.atS = (performance.now() - t0) / 1000;
      } catch (err) {
        // The connection closed between the check and the call.
      }
    };
    // Stats every second while the call is up; the last snapshot before the end is reported
    // (after a BYE the peer connection is closed and has none).
    while (!ended && performance.now() - t0 < p.holdMs) {
      await Promise.race([sleep(Math.min(1000, p.holdMs - (performance.now() - t0))), endedP]);
      if (!ended) await snap();
    }
    call.durationS = Math.round(performance.now() - t0) / 1000;
    if (pc && pc.localDescription && pc.remoteDescription) {
      result.sdp = { local: pc.localDescription.sdp, remote: pc.remoteDescription.sdp };
    }
    if (meter) {
      meter.stop();
      result.audio = meter.summary(p.toleranceHz, p.skipS);
    } else {
      result.errors.push('no remote audio track');
    }
    result.stats = lastStats;
    if (!ended) {
      const done = firstOf(session, ['ended', 'failed'], 3000);
      session.terminate();
      event('hangup');
      await done;
    }
  }

  window.labHarness = { run };
})();
