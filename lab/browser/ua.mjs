#!/usr/bin/env node
// ua.mjs: run one JsSIP user agent in headless Chromium and judge what it saw.
//
//   node lab/browser/ua.mjs --wss wss://127.0.0.1:8443 --uri sip:alice@lab.test \
//        --password secret --send-hz 440 --expect-hz 1300 --duration 8 \
//        register-and-call sip:bob@lab.test
//
// Modes (positional, or --mode): register | register-and-call TARGET | register-and-answer |
// call TARGET (no REGISTER) | answer (no REGISTER: only useful when the UA is reached by a
// route that does not need its binding). See README.md for every option and the JSON.
//
// Prints one JSON object on stdout (also written to --out FILE): what happened (registration,
// call, received audio, getStats figures, SDPs, a timeline) and `checks`, each {name, ok,
// detail}; `ok` is true when every check passed. Exit status: 0 all checks passed, 1 a check
// failed, 2 bad usage or the harness itself broke (browser did not start, page error).
// Progress lines go to stderr; with --ready-file F the file F is created once the UA is
// registered (or connected, without registration), so a test can start the peer then.

import { chromium } from 'playwright-core';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));

const USAGE = `usage: ua.mjs [options] MODE [TARGET]
  MODE: register | register-and-call | register-and-answer | call | answer
  --wss URL            WebSocket URL of the SIP server (env LAB_WSS)
  --uri URI            the UA's SIP URI, e.g. sip:alice@lab.test (env LAB_SIP_URI)
  --password PW        digest password (env LAB_SIP_PASSWORD)
  --auth-user NAME     digest user name if not the URI's user
  --target URI         whom to call (or the positional TARGET)
  --duration S         the call's expected length, seconds (8): packet minimums scale with it
  --hold S             hang up after S s of call unless the peer does first (register: keep the
                       registration S s) (call and register: --duration; answer: --duration + 5,
                       so that the caller's BYE normally ends the call)
  --send-hz HZ         tone the browser sends (fake microphone; a 48 kHz WAV made with sox) (440)
  --wav FILE           send this WAV instead of a generated tone
  --expect-hz HZ       the tone that must be found in the received audio
  --tolerance HZ       +- for --expect-hz (25)
  --min-match R        share of analysed frames whose dominant frequency must be the expected one (0.8)
  --expect-codec NAME  the received codec must be this (e.g. PCMU, opus; matched in mimeType)
  --codecs LIST        offer/answer only these, in this order (e.g. opus or opus,telephone-event)
  --send-dtmf DIGITS   send these as RFC 4733 events (RTCDTMFSender) --dtmf-at S into the call (2)
  --min-packets N      RTP packets received and sent, at least (default 20 per second of call)
  --max-loss R         packetsLost / (packetsReceived + packetsLost), at most (0.02)
  --lossy-path         the network drops packets on purpose: the selected, nominated candidate
                       pair may show "in-progress" (a consent check whose request or answer was
                       lost is outstanding when the stats are read), not only "succeeded"
  --skip S             seconds of received audio ignored at the start (1)
  --expect-fail        the call must NOT be established (negative tests)
  --answer-timeout S   register-and-answer: wait this long for the call (30)
  --call-timeout S     until the call is confirmed (20)
  --register-expires S (300)
  --ready-file FILE    created when registered (or connected without registration)
  --out FILE           also write the JSON result here
  --debug              JsSIP debug log and the page console on stderr
Environment: LAB_CHROMIUM (default /usr/bin/chromium), and LAB_WSS/LAB_SIP_URI/LAB_SIP_PASSWORD.`;

function parseArgs(argv) {
  const o = {
    wss: process.env.LAB_WSS, uri: process.env.LAB_SIP_URI,
    password: process.env.LAB_SIP_PASSWORD, authUser: null, target: null, mode: null,
    duration: 8, hold: null, sendHz: 440, wav: null, expectHz: null, tolerance: 25, minMatch: 0.8,
    expectCodec: null, codecs: null, dtmf: null, dtmfAt: 2, minPackets: null, maxLoss: 0.02, lossyPath: false, skip: 1, expectFail: false,
    answerTimeout: 30, callTimeout: 20, registerExpires: 300, readyFile: null, out: null,
    debug: false,
  };
  const num = (k, v) => {
    const x = Number(v);
    if (!Number.isFinite(x)) usage(`--${k} needs a number, not '${v}'`);
    return x;
  };
  const positional = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      return argv[++i];
    };
    switch (a) {
      case '--wss': o.wss = val(); break;
      case '--uri': o.uri = val(); break;
      case '--password': o.password = val(); break;
      case '--auth-user': o.authUser = val(); break;
      case '--target': o.target = val(); break;
      case '--mode': o.mode = val(); break;
      case '--duration': o.duration = num('duration', val()); break;
      case '--hold': o.hold = num('hold', val()); break;
      case '--send-hz': o.sendHz = num('send-hz', val()); break;
      case '--wav': o.wav = val(); break;
      case '--expect-hz': o.expectHz = num('expect-hz', val()); break;
      case '--tolerance': o.tolerance = num('tolerance', val()); break;
      case '--min-match': o.minMatch = num('min-match', val()); break;
      case '--expect-codec': o.expectCodec = val(); break;
      case '--codecs': o.codecs = val().split(',').filter(Boolean); break;
      case '--send-dtmf': o.dtmf = val(); break;
      case '--dtmf-at': o.dtmfAt = num('dtmf-at', val()); break;
      case '--min-packets': o.minPackets = num('min-packets', val()); break;
      case '--max-loss': o.maxLoss = num('max-loss', val()); break;
      case '--lossy-path': o.lossyPath = true; break;
      case '--skip': o.skip = num('skip', val()); break;
      case '--expect-fail': o.expectFail = true; break;
      case '--answer-timeout': o.answerTimeout = num('answer-timeout', val()); break;
      case '--call-timeout': o.callTimeout = num('call-timeout', val()); break;
      case '--register-expires': o.registerExpires = num('register-expires', val()); break;
      case '--ready-file': o.readyFile = val(); break;
      case '--out': o.out = val(); break;
      case '--debug': o.debug = true; break;
      case '-h': case '--help': console.log(USAGE); process.exit(0); break;
      default:
        if (a.startsWith('--')) usage(`unknown option ${a}`);
        positional.push(a);
    }
  }
  if (positional.length) o.mode = o.mode || positional.shift();
  if (positional.length) o.target = o.target || positional.shift();
  if (positional.length) usage(`unexpected argument ${positional[0]}`);
  const modes = {
    register: ['register', true], 'register-and-call': ['call', true],
    'register-and-answer': ['answer', true], call: ['call', false], answer: ['answer', false],
  };
  if (!o.mode || !modes[o.mode]) usage(`MODE must be one of ${Object.keys(modes).join(', ')}`);
  [o.pageMode, o.register] = modes[o.mode];
  if (!o.wss) usage('--wss is required');
  if (!o.uri) usage('--uri is required');
  if (o.pageMode === 'call' && !o.target) usage(`${o.mode} needs a TARGET`);
  if (o.minPackets === null) o.minPackets = Math.round(20 * o.duration);
  if (o.hold === null) o.hold = o.pageMode === 'answer' ? o.duration + 5 : o.duration;
  return o;
}

function usage(msg) {
  console.error(`ua.mjs: ${msg}\n${USAGE}`);
  process.exit(2);
}

const log = (msg) => process.stderr.write(`[ua ${new Date().toISOString().slice(11, 23)}] ${msg}\n`);

// A 30 s mono 48 kHz sine (Chrome loops the file): what the fake microphone sends.
function makeTone(dir, hz) {
  const file = path.join(dir, `tone-${hz}hz.wav`);
  const r = spawnSync('sox', ['-n', '-r', '48000', '-c', '1', '-b', '16', '-e', 'signed-integer',
    file, 'synth', '30', 'sine', String(hz), 'vol', '0.5'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`sox could not make ${file}: ${r.stderr || r.error}`);
  return file;
}

// Serves page.html, ua.js and build/jssip.js on 127.0.0.1 (a secure context for WebRTC).
function serve() {
  const files = {
    '/page.html': ['page.html', 'text/html'],
    '/ua.js': ['ua.js', 'text/javascript'],
    '/build/jssip.js': ['build/jssip.js', 'text/javascript'],
  };
  const server = http.createServer((req, res) => {
    const f = files[req.url.split('?')[0]];
    if (!f) {
      res.writeHead(404).end();
      return;
    }
    fs.readFile(path.join(HERE, f[0]), (err, data) => {
      if (err) res.writeHead(500).end(String(err));
      else res.writeHead(200, { 'content-type': f[1], 'cache-control': 'no-store' }).end(data);
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

function check(checks, name, ok, detail) {
  checks.push({ name, ok: Boolean(ok), detail });
}

// The verdict: which of the expected things happened.
function judge(o, r) {
  const checks = [];
  if (o.register) {
    const reg = r.registered;
    check(checks, 'registered', reg && reg.ok,
      reg ? `status ${reg.status}${reg.cause ? ` (${reg.cause})` : ''}` : 'no registration result');
  }
  if (o.pageMode === 'register') return checks;
  const call = r.call || { status: null, cause: 'not attempted' };
  if (o.expectFail) {
    // A call never attempted (the page broke first) proves nothing.
    check(checks, 'call not established', r.call && !call.established,
      `status ${call.status}, cause ${call.cause}`);
    return checks;
  }
  check(checks, 'call established', call.established,
    call.established ? `${call.direction}, held ${call.durationS} s, ended by ${call.endedBy}`
      : `status ${call.status}, cause ${call.cause}`);
  if (!call.established) return checks;
  const s = r.stats || {};
  const tr = s.transport || {};
  check(checks, 'DTLS connected', tr.dtlsState === 'connected',
    `dtlsState ${tr.dtlsState}, role ${tr.dtlsRole}, ${tr.tlsVersion} ${tr.dtlsCipher}`);
  check(checks, 'SRTP', Boolean(tr.srtpCipher), `srtpCipher ${tr.srtpCipher}`);
  const cp = s.candidatePair;
  const pairUp = cp && (cp.state === 'succeeded' ||
    (o.lossyPath && cp.state === 'in-progress' && cp.nominated === true));
  check(checks, 'candidate pair selected', pairUp,
    cp ? `${cp.local && cp.local.address}:${cp.local && cp.local.port} -> ` +
      `${cp.remote && cp.remote.address}:${cp.remote && cp.remote.port} (${cp.state}` +
      `${cp.nominated ? ', nominated' : ''})` : 'none');
  const inb = s.inbound || {};
  const out = s.outbound || {};
  check(checks, 'RTP received', inb.packetsReceived >= o.minPackets,
    `${inb.packetsReceived} packets (need ${o.minPackets})`);
  check(checks, 'RTP sent', out.packetsSent >= o.minPackets,
    `${out.packetsSent} packets (need ${o.minPackets})`);
  const lost = Math.max(0, inb.packetsLost || 0);
  const loss = inb.packetsReceived ? lost / (inb.packetsReceived + lost) : 1;
  check(checks, 'loss', loss <= o.maxLoss,
    `${lost} lost (${(100 * loss).toFixed(2)} %, at most ${100 * o.maxLoss} %), jitter ${inb.jitter} s`);
  if (o.expectCodec) {
    const mime = (inb.codec && inb.codec.mimeType) || '';
    check(checks, 'codec', mime.toLowerCase().includes(o.expectCodec.toLowerCase()),
      `received ${mime || 'nothing'}, sent ${(out.codec && out.codec.mimeType) || 'nothing'}` +
      ` (expected ${o.expectCodec})`);
  }
  if (o.dtmf) {
    const d = r.dtmf || {};
    check(checks, 'DTMF sent', d.sent === o.dtmf,
      `sent '${d.sent || ''}' of '${o.dtmf}'${d.error ? ` (${d.error})` : ''}`);
  }
  if (o.expectHz) {
    const a = r.audio || {};
    check(checks, 'received tone',
      a.dominantHz !== null && Math.abs(a.dominantHz - o.expectHz) <= o.tolerance &&
        a.matchRatio >= o.minMatch,
      `dominant ${a.dominantHz} Hz at ${a.levelDbfs} dBFS, ${a.matchedFrames} of ${a.frames} frames ` +
      `at ${o.expectHz}+-${o.tolerance} Hz (ratio ${a.matchRatio}, need ${o.minMatch}), ` +
      `energy share ${a.toneShare}`);
  }
  return checks;
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'lab-browser-'));
  const chromiumPath = process.env.LAB_CHROMIUM || '/usr/bin/chromium';
  if (!fs.existsSync(path.join(HERE, 'build/jssip.js'))) {
    throw new Error('build/jssip.js missing: run lab/browser/setup.sh');
  }
  const wav = o.wav || makeTone(work, o.sendHz);
  const args = [
    '--no-sandbox', '--disable-gpu',
    '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
    `--use-file-for-fake-audio-capture=${wav}`,
    '--allow-loopback-in-peer-connection',
    '--ignore-certificate-errors',
    '--autoplay-policy=no-user-gesture-required',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--no-first-run',
  ];
  const server = await serve();
  const pageUrl = `http://127.0.0.1:${server.address().port}/page.html`;
  let context = null;
  const overall = setTimeout(() => {
    log('harness timed out');
    process.exit(2);
  }, 1000 * (o.hold + o.answerTimeout + o.callTimeout + 60));
  try {
    log(`chromium ${chromiumPath}, profile ${work}/profile, page ${pageUrl}, sending ${o.wav || `${o.sendHz} Hz`}`);
    // A persistent context on a fresh directory: the profile is ours (and empty).
    context = await chromium.launchPersistentContext(path.join(work, 'profile'), {
      executablePath: chromiumPath,
      headless: true,
      args,
      // Playwright mutes audio in headless by default; the remote track must play.
      ignoreDefaultArgs: ['--mute-audio'],
      ignoreHTTPSErrors: true,
    });
    const page = context.pages()[0] || await context.newPage();
    page.on('console', (m) => {
      if (o.debug || m.type() === 'error') log(`console.${m.type()}: ${m.text()}`);
    });
    page.on('pageerror', (e) => log(`page error: ${e.message}`));
    await page.exposeFunction('labEvent', (name, detail) => {
      log(`event ${name} ${JSON.stringify(detail)}`);
      if (o.readyFile && (name === 'registered' || (!o.register && name === 'ws-connected'))) {
        fs.writeFileSync(o.readyFile, `${name}\n`);
      }
    });
    await page.goto(pageUrl);
    const params = {
      wss: o.wss, uri: o.uri, password: o.password, authUser: o.authUser, mode: o.pageMode,
      target: o.target, register: o.register, durationMs: o.duration * 1000,
      holdMs: o.hold * 1000,
      expectHz: o.expectHz, toleranceHz: o.tolerance, skipS: o.skip,
      connectTimeoutMs: 10000, registerTimeoutMs: 10000, callTimeoutMs: o.callTimeout * 1000,
      answerTimeoutMs: o.answerTimeout * 1000, registerExpires: o.registerExpires,
      codecs: o.codecs, dtmf: o.dtmf, dtmfAtMs: o.dtmfAt * 1000, debug: o.debug,
    };
    const result = await page.evaluate((p) => window.labHarness.run(p), params);
    result.browser = { version: context.browser() ? context.browser().version() : null,
      sent: o.wav ? o.wav : `${o.sendHz} Hz sine` };
    result.checks = judge(o, result);
    result.ok = result.checks.length > 0 && result.checks.every((c) => c.ok);
    const text = JSON.stringify(result, null, 2);
    if (o.out) fs.writeFileSync(o.out, `${text}\n`);
    process.stdout.write(`${text}\n`);
    for (const e of result.errors) log(`error: ${e}`);
    for (const c of result.checks) log(`${c.ok ? 'ok  ' : 'FAIL'} ${c.name}: ${c.detail}`);
    return result.ok ? 0 : 1;
  } finally {
    clearTimeout(overall);
    if (context) await context.close().catch(() => {});
    server.close();
    fs.rmSync(work, { recursive: true, force: true });
  }
}

main().then((rc) => process.exit(rc), (err) => {
  log(`harness error: ${err && err.stack ? err.stack : err}`);
  process.exit(2);
});
