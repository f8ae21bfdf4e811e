// Browser client for the voice media server: WHEP signaling, data-channel control, live stats.
// An ES module, so nothing here leaks into the global scope.

const GATHER_TIMEOUT_MS = 1500;
const MAX_LOG_ENTRIES = 200;
const STATS_INTERVAL_MS = 1000;
const RESTART_AFTER_DISCONNECTED_MS = 2000; // a path that stays 'disconnected' this long is restarted
const RESTART_AFTER_STALL_MS = 1000;     // speech playing, yet no audio packet this long: the path is gone
const STALL_CHECK_MS = 250;
const STALL_RESTART_GRACE_MS = 2000;     // then a restart's new path may take this long (Chromium gathers on the new network first)
const MAX_RESTARTS_UNCONNECTED = 3;         // restarts in a row that did not reconnect, then give up
const TRICKLE_TYPE = 'application/trickle-ice-sdpfrag';
const MIC_CONSTRAINTS = { audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true } };
const MIC_METER_MS = 50;           // how often the level meter reads the microphone
const MIC_FLOOR_DBFS = -60;        // the meter's empty end
const MIC_SPEECH_DBFS = -42;       // above this the page calls the microphone 'speaking' (a hint only: the server's VAD decides barge-in)
const MIC_HANGOVER_MS = 400;       // 'speaking' lasts this long past the last loud reading, so pauses between words do not flicker

const $ = (id) => document.getElementById(id);
const ui = {
  connect: $('connect'), disconnect: $('disconnect'), speak: $('speak'), stop: $('stop'),
  text: $('text'), voice: $('voice'), room: $('room'), token: $('token'), speed: $('speed'), speedValue: $('speed-value'),
  asDeltas: $('as-deltas'), iceServers: $('ice-servers'), audio: $('audio'),
  pcState: $('pc-state'), iceState: $('ice-state'), dcState: $('dc-state'),
  log: $('log'), clearLog: $('clear-log'),
  latencyStats: $('latency-stats'), rtpStats: $('rtp-stats'), serverStats: $('server-stats'),
  talk: $('talk'), hangup: $('hangup'), micLevel: $('mic-level'), micDb: $('mic-db'),
  micState: $('mic-state'), agentState: $('agent-state'), heard: $('heard'),
};

let pc = null;          // the current RTCPeerConnection, null when disconnected
let channel = null;     // its 'control' data channel
let sessionUrl = null;  // the WHEP resource (from the Location header)
let sessionEtag = null; // its ETag: the current ICE generation, sent as If-Match when trickling
let statsTimer = null;
let sayCount = 0;
const outstanding = new Map(); // say id -> performance.now() of the Speak click
const playing = new Set();     // ids between speech.started and speech.done / cancelled
const ttfa = { last: null, sum: 0, count: 0 }; // time to first audio, ms
let lastRtp = null;     // previous inbound-rtp sample, for the bitrate
let lastRtt = null;     // seconds, from the selected ICE candidate pair
let mic = null;         // Talk: { stream, context, timer } while the microphone is ours
let acquiring = false;  // Talk: waiting for the browser's microphone permission

// ---------------------------------------------------------------- log & view

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  node.textContent = text;
  return node;
}

function log(kind, text, level = 'info') {
  const now = new Date();
  const time = el('time', '', `${now.toTimeString().slice(0, 8)}.${String(now.getMilliseconds()).padStart(3, '0')}`);
  time.dateTime = now.toISOString();
  const item = el('li', `entry ${level}`, '');
  item.append(time, el('span', 'kind', kind), el('span', 'text', text));
  ui.log.prepend(item); // newest at the top
  while (ui.log.children.length > MAX_LOG_ENTRIES) ui.log.lastElementChild.remove();
}

function logProblem(kind, { error, message, solution }) {
  const parts = [[error && `[${error}]`, message].filter(Boolean).join(' '), solution && `Solution: ${solution}`];
  log(kind, parts.filter(Boolean).join('\n'), 'error');
}

function setBadge(el, state) {
  el.textContent = state;
  el.dataset.state = state;
}

function render() {
  const connected = pc !== null;
  const open = channel?.readyState === 'open';
  ui.connect.disabled = connected || acquiring;
  ui.disconnect.disabled = !connected;
  ui.talk.disabled = connected || acquiring;
  ui.hangup.disabled = !connected || mic === null;
  ui.voice.disabled = connected;
  ui.iceServers.disabled = connected;
  ui.speak.disabled = !open;
  ui.stop.disabled = !open || outstanding.size === 0;
  setBadge(ui.pcState, pc ? pc.connectionState : 'idle');
  setBadge(ui.iceState, pc ? pc.iceConnectionState : 'idle');
  setBadge(ui.dcState, channel ? channel.readyState : 'none');
}

function showStats(dl, rows) {
  dl.replaceChildren(...rows.flatMap(([name, value]) => [el('dt', '', name), el('dd', '', value ?? '–')]));
}

const ms = (value, digits = 1) => (value == null ? null : `${value.toFixed(digits)} ms`);

function showLatency() {
  showStats(ui.latencyStats, [
    ['Time to first audio (last)', ms(ttfa.last, 0)],
    ['Time to first audio (avg)', ttfa.count ? `${ms(ttfa.sum / ttfa.count, 0)} over ${ttfa.count}` : null],
    ['ICE round-trip time', lastRtt == null ? null : ms(lastRtt * 1000)],
  ]);
}

function clearStats() {
  lastRtp = null;
  lastRtt = null;
  showLatency();
  showStats(ui.rtpStats, [['packetsReceived', null]]);
  showStats(ui.serverStats, [['frames_sent', null]]);
}

// ---------------------------------------------------------------- HTTP (WHEP)

async function reportHttpError(what, response) {
  const problem = await response.json().catch(() => ({ message: `${response.status} ${response.statusText}` }));
  const retry = response.headers.get('Retry-After');
  if (retry) problem.solution = `${problem.solution ?? ''} (Retry-After: ${retry} s)`.trim();
  logProblem(`${what} → HTTP ${response.status}`, problem);
}

function iceCredentials(sdp) {
  return {
    ufrag: sdp.match(/^a=ice-ufrag:(.+)$/m)?.[1].trim(),
    pwd: sdp.match(/^a=ice-pwd:(.+)$/m)?.[1].trim(),
  };
}

// The token the session was created with: its URL needs the same one (WHEP).
let sessionAuth = {};

function authHeaders() {
  const token = ui.token.value.trim();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function patchCandidates(url, { ufrag, pwd }, lines, mid) {
  const body = [`a=ice-ufrag:${ufrag}`, `a=ice-pwd:${pwd}`, `a=mid:${mid}`, ...lines].join('\r\n') + '\r\n';
  try {
    const response = await fetch(url, {
      method: 'PATCH', headers: { 'Content-Type': TRICKLE_TYPE, 'If-Match': sessionEtag ?? '*', ...sessionAuth }, body,
    });
    // 412: the candidate belongs to an ICE generation a restart has replaced; nothing to do
    if (response.status !== 204 && response.status !== 412) await reportHttpError('PATCH candidate', response);
  } catch (err) {
    log('PATCH candidate', `failed: ${err.message}`, 'error');
  }
}

// The remote description with the server's new ICE credentials and candidates from a
// restart's answer fragment: the rest (DTLS fingerprint and role, codecs) stays as it was.
function withNewIce(sdp, fragment) {
  const { ufrag, pwd } = iceCredentials(fragment);
  const candidates = fragment.split(/\r?\n/).filter((l) => l.startsWith('a=candidate:'));
  const out = [];
  for (const line of sdp.split(/\r?\n/)) {
    if (line.startsWith('a=candidate:') || line === 'a=end-of-candidates') continue;
    if (line.startsWith('o=')) { // a new version of the description (RFC 8866 section 5.2)
      const parts = line.split(' ');
      parts[2] = String(BigInt(parts[2]) + 1n);
      out.push(parts.join(' '));
    } else if (line.startsWith('a=ice-ufrag:')) {
      out.push(`a=ice-ufrag:${ufrag}`);
    } else if (line.startsWith('a=ice-pwd:')) {
      out.push(`a=ice-pwd:${pwd}`, ...candidates, 'a=end-of-candidates');
    } else if (line) {
      out.push(line);
    }
  }
  return out.join('\r\n') + '\r\n';
}

// ICE restart as WHEP specifies it: an offer with new credentials (after pc.restartIce(),
// the negotiationneeded event), PATCH If-Match: * with them and the candidates gathered,
// then the server's new credentials and candidates replace those of the remote description.
// DTLS, the data channel and the audio stream carry on over the new path.
let restarting = false;
let restartsUnconnected = 0;
const late = []; // [lines, mid] of candidates found before the session's URL (or a restart's ETag) was known

function flushLate(peer) {
  const credentials = iceCredentials(peer.localDescription.sdp);
  for (const [lines, mid] of late.splice(0)) patchCandidates(sessionUrl, credentials, lines, mid);
}

async function renegotiateIce(peer) {
  if (restarting || !sessionUrl || pc !== peer || peer.signalingState !== 'stable') return;
  restarting = true;
  const url = sessionUrl;
  try {
    // listening from before setLocalDescription: until the restart's gathering starts,
    // iceGatheringState still reads the last generation's 'complete'
    const gathered = waitForRestartGathering(peer);
    await peer.setLocalDescription(await peer.createOffer());
    const complete = await gathered;
    const sdp = peer.localDescription.sdp;
    const { ufrag, pwd } = iceCredentials(sdp);
    const firstSection = sdp.split(/\r?\nm=/)[1] ?? '';
    const mid = firstSection.match(/^a=mid:(\S+)/m)?.[1] ?? '0';
    const candidates = [...new Set(sdp.split(/\r?\n/).filter((l) => l.startsWith('a=candidate:')))];
    const body = [`a=ice-ufrag:${ufrag}`, `a=ice-pwd:${pwd}`, `a=mid:${mid}`, ...candidates,
      ...(complete ? ['a=end-of-candidates'] : [])].join('\r\n') + '\r\n';
    log('ice', `restart: PATCH ${new URL(url).pathname} (If-Match: *, ${candidates.length} candidates)`);
    const response = await fetch(url, {
      method: 'PATCH', headers: { 'Content-Type': TRICKLE_TYPE, 'If-Match': '*', ...sessionAuth }, body,
    });
    if (pc !== peer) return;
    if (response.status !== 200) {
      await reportHttpError('ICE restart', response);
      await peer.setLocalDescription({ type: 'rollback' }).catch(() => {});
      return;
    }
    sessionEtag = response.headers.get('ETag');
    const fragment = await response.text();
    await peer.setRemoteDescription({ type: 'answer', sdp: withNewIce(peer.remoteDescription.sdp, fragment) });
    log('ice', 'restart: the server answered with new credentials; checking the new path');
  } catch (err) {
    if (pc === peer) log('ice', `restart failed: ${err.message}`, 'error');
  } finally {
    restarting = false;
    if (pc === peer && sessionUrl) flushLate(peer);
  }
}

function restartIce(peer, why) {
  if (restarting || !sessionUrl || pc !== peer) return;
  if (restartsUnconnected >= MAX_RESTARTS_UNCONNECTED) return;
  restartsUnconnected += 1;
  log('ice', `${why}: restarting ICE (attempt ${restartsUnconnected})`, 'warn');
  peer.restartIce(); // fires negotiationneeded, answered by renegotiateIce
}

// A path that died mid-speech. Chromium takes about 7 s to call it 'disconnected' (measured by
// bench/ice_move.py), but while the server speaks it sends 50 packets a second (with DTX, one
// every 400 ms in pauses): none for RESTART_AFTER_STALL_MS says as much. Only while speech
// plays: an idle session sends nothing. A needless restart costs one PATCH; the old path
// carries audio until the new one is nominated.
function watchStalls(peer) {
  let packets = -1;
  let since = performance.now();
  const timer = setInterval(async () => {
    if (pc !== peer) return clearInterval(timer);
    let received = packets;
    (await peer.getStats()).forEach((s) => {
      if (s.type === 'inbound-rtp' && (s.kind ?? s.mediaType) === 'audio') received = s.packetsReceived;
    });
    const now = performance.now();
    if (received !== packets || playing.size === 0) {
      if (received > packets && packets >= 0) restartsUnconnected = 0; // audio flows: reconnected
      [packets, since] = [received, now];
    } else if (now - since >= RESTART_AFTER_STALL_MS && pc === peer) {
      since = now + STALL_RESTART_GRACE_MS; // a second restart would supersede the first one's checks
      restartIce(peer, `no audio for ${RESTART_AFTER_STALL_MS} ms while speech plays`);
    }
  }, STALL_CHECK_MS);
}

function waitForGathering(peer) {
  return new Promise((resolve) => {
    if (peer.iceGatheringState === 'complete') return resolve();
    const done = () => { clearTimeout(timer); peer.removeEventListener('icegatheringstatechange', check); resolve(); };
    const check = () => { if (peer.iceGatheringState === 'complete') done(); };
    const timer = setTimeout(done, GATHER_TIMEOUT_MS);
    peer.addEventListener('icegatheringstatechange', check);
  });
}

// A restart's gathering, as far as the PATCH needs it: resolves with true once it went
// 'gathering' then 'complete', with false at its first candidate (Chromium takes about 1 s
// more to complete; the audio is off meanwhile) or at the timeout; the candidates still to
// come are trickled. Ending a restart's candidates with the last generation's 'complete'
// would tell the server there are none.
function waitForRestartGathering(peer) {
  return new Promise((resolve) => {
    let started = false;
    const done = (complete) => {
      clearTimeout(timer);
      peer.removeEventListener('icegatheringstatechange', check);
      peer.removeEventListener('icecandidate', found);
      resolve(complete);
    };
    const check = () => {
      if (peer.iceGatheringState === 'gathering') started = true;
      else if (started && peer.iceGatheringState === 'complete') done(true);
    };
    const found = ({ candidate }) => { if (candidate?.candidate) done(false); };
    const timer = setTimeout(() => done(false), GATHER_TIMEOUT_MS);
    peer.addEventListener('icegatheringstatechange', check);
    peer.addEventListener('icecandidate', found);
  });
}

// ---------------------------------------------------------------- connect / disconnect

// Listen (Connect) or, with talk, join the room as a caller: the same WHEP path, but the
// microphone's track goes out on a sendrecv transceiver instead of a recvonly one.
async function connect(talk = false) {
  ui.audio.play().catch(() => {}); // inside the click: unlocks autoplay for the stream to come
  if (talk && !ui.room.value.trim()) {
    logProblem('talk', { message: 'Talk joins a room as a caller, and no room is given',
      solution: 'fill in Room and a caller token (voice-media-token --room NAME --role caller)' });
    return;
  }
  let iceServers = [];
  try {
    if (ui.iceServers.value.trim()) iceServers = JSON.parse(ui.iceServers.value);
    if (!Array.isArray(iceServers)) throw new Error('expected a JSON list such as [{"urls": "stun:host:3478"}]');
  } catch (err) {
    logProblem('ICE servers', { message: err.message, solution: 'fix the JSON under Advanced, or leave it empty' });
    return;
  }
  const stream = talk ? await openMicrophone() : null;
  if (talk && !stream) return;
  clearStats();
  const peer = new RTCPeerConnection({ iceServers });
  pc = peer;
  const current = () => pc === peer; // false once Disconnect (or a new Connect) replaced this peer
  if (stream) {
    const [track] = stream.getAudioTracks();
    peer.addTransceiver(track, { direction: 'sendrecv', streams: [stream] });
    log('talk', `microphone "${track.label || 'default'}" on; joining as a caller`);
  } else {
    peer.addTransceiver('audio', { direction: 'recvonly' });
  }
  openChannel(peer.createDataChannel('control'));

  peer.ontrack = (event) => {
    ui.audio.srcObject = event.streams[0] ?? new MediaStream([event.track]);
    ui.audio.play().catch((err) => log('audio', `playback blocked: ${err.message}`, 'error'));
  };
  peer.onconnectionstatechange = () => {
    if (!current()) return;
    render();
    if (peer.connectionState === 'connected') restartsUnconnected = 0;
    if (peer.connectionState !== 'failed') return log('peer', `connectionState ${peer.connectionState}`);
    if (sessionUrl && restartsUnconnected < MAX_RESTARTS_UNCONNECTED) return restartIce(peer, 'connection failed');
    logProblem('peer', { message: 'connectionState failed: no media path to the server',
      solution: 'check that the server is reachable, or configure ICE servers under Advanced' });
  };
  let disconnectedTimer = null;
  peer.oniceconnectionstatechange = () => {
    if (!current()) return;
    render();
    clearTimeout(disconnectedTimer);
    if (peer.iceConnectionState === 'disconnected') { // e.g. Wi-Fi gone: wait a little, it may come back
      disconnectedTimer = setTimeout(() => {
        if (current() && peer.iceConnectionState === 'disconnected') restartIce(peer, 'ICE disconnected');
      }, RESTART_AFTER_DISCONNECTED_MS);
    }
  };
  peer.onnegotiationneeded = () => current() && renegotiateIce(peer);

  // Candidates found after the offer went out are trickled with PATCH once the Location is known.
  let offerSent = false;
  late.length = 0;
  const trickle = (lines, mid) => (sessionUrl && current() && !restarting
    ? patchCandidates(sessionUrl, iceCredentials(peer.localDescription.sdp), lines, mid)
    : late.push([lines, mid]));
  peer.onicecandidate = ({ candidate }) => {
    if (!offerSent || !current()) return;
    if (candidate && candidate.candidate) {
      trickle([`a=candidate:${candidate.candidate.replace(/^candidate:/, '')}`], candidate.sdpMid ?? '0');
    } else if (!candidate) {
      trickle(['a=end-of-candidates'], '0');
    }
  };

  try {
    await peer.setLocalDescription(await peer.createOffer());
    await waitForGathering(peer);
    if (!current()) return;
    offerSent = true;
    const voice = ui.voice.value.trim();
    const room = ui.room.value.trim();
    sessionAuth = authHeaders(); // a room's join token, or the server's operator token
    const headers = { 'Content-Type': 'application/sdp', ...sessionAuth };
    let url = voice ? `/whep?voice=${encodeURIComponent(voice)}` : '/whep';
    if (room) url = `/rooms/${encodeURIComponent(room)}/whep`; // every bot speaking there is heard
    log('whep', `POST ${url} (ICE gathering ${peer.iceGatheringState})`);
    const response = await fetch(url, { method: 'POST', headers, body: peer.localDescription.sdp });
    if (response.status !== 201) {
      await reportHttpError(`POST ${url}`, response);
      if (current()) teardown();
      return;
    }
    const location = new URL(response.headers.get('Location'), response.url).href;
    sessionEtag = response.headers.get('ETag');
    const answer = await response.text();
    if (!current()) { // disconnected while the POST was in flight
      fetch(location, { method: 'DELETE', headers: sessionAuth }).catch(() => {});
      return;
    }
    sessionUrl = location;
    log('whep', `session ${new URL(location).pathname}`);
    await peer.setRemoteDescription({ type: 'answer', sdp: answer });
    flushLate(peer);
    startStats();
    watchStalls(peer);
  } catch (err) {
    if (!current()) return;
    logProblem('connect', { message: err.message, solution: 'is the server running? check its log' });
    teardown();
  }
}

function teardown() {
  clearTimeout(statsTimer);
  closeMicrophone();
  pc?.close();
  [pc, channel, sessionUrl, sessionEtag] = [null, null, null, null];
  restartsUnconnected = 0;
  outstanding.clear();
  playing.clear();
  ui.audio.srcObject = null;
  render();
}

async function disconnect() {
  const url = sessionUrl;
  ui.disconnect.disabled = true;
  clearTimeout(statsTimer);
  if (channel) channel.onclose = null; // the server closing it now is expected
  if (url) { // DELETE before closing: a closed peer makes the server end the session by itself
    try {
      const response = await fetch(url, { method: 'DELETE', headers: sessionAuth });
      if (!response.ok && response.status !== 404) await reportHttpError('DELETE', response);
    } catch (err) {
      log('DELETE', `failed: ${err.message}`, 'error');
    }
  }
  teardown();
  log('whep', 'disconnected');
}

async function hangUp() {
  await disconnect(); // DELETE the session, then teardown() stops the microphone
  log('talk', 'hung up: microphone off');
}

// ---------------------------------------------------------------- microphone (Talk)

// The microphone with the browser's echo canceller on: the room's own speech, played by
// this page, must not reach the server as the caller's voice (it would barge in on itself).
async function openMicrophone() {
  acquiring = true;
  render();
  try {
    if (!navigator.mediaDevices?.getUserMedia) {
      throw Object.assign(new Error('this page cannot use a microphone'), { name: 'NotSupported',
        solution: 'open the page from http://localhost or over https: browsers offer the microphone only to secure origins' });
    }
    const stream = await navigator.mediaDevices.getUserMedia(MIC_CONSTRAINTS);
    startMeter(stream);
    return stream;
  } catch (err) {
    logProblem('microphone', {
      error: err.name, message: err.message || 'the microphone could not be opened',
      solution: err.solution ?? (err.name === 'NotAllowedError'
        ? 'allow the microphone for this page (the address bar\'s site settings), then press Talk again'
        : 'check that a microphone is connected and not used by another program'),
    });
    return null;
  } finally {
    acquiring = false;
    render();
  }
}

// The level meter and a local speaking hint. Members do not get the server's voice
// activity events (only bots do); what the server decided shows as the agent's
// speech.paused / resumed / cancelled.
function startMeter(stream) {
  const context = new AudioContext();
  context.resume().catch(() => {});
  const analyser = context.createAnalyser();
  analyser.fftSize = 1024;
  context.createMediaStreamSource(stream).connect(analyser);
  const samples = new Float32Array(analyser.fftSize);
  let loudUntil = 0;
  const timer = setInterval(() => {
    analyser.getFloatTimeDomainData(samples);
    let sum = 0;
    for (const x of samples) sum += x * x;
    const dbfs = Math.max(MIC_FLOOR_DBFS, 10 * Math.log10(sum / samples.length + 1e-12));
    ui.micLevel.value = (dbfs - MIC_FLOOR_DBFS) / -MIC_FLOOR_DBFS;
    ui.micDb.textContent = `${Math.round(dbfs)} dBFS`;
    const now = performance.now();
    const wasSpeaking = now < loudUntil;
    if (dbfs > MIC_SPEECH_DBFS) loudUntil = now + MIC_HANGOVER_MS;
    const speaking = now < loudUntil;
    if (speaking && !wasSpeaking) log('mic', `speaking (local level ${Math.round(dbfs)} dBFS)`);
    setBadge(ui.micState, speaking ? 'speaking' : 'quiet');
  }, MIC_METER_MS);
  for (const track of stream.getTracks()) {
    track.onended = () => log('mic', 'the microphone stopped (unplugged, or taken by the system)', 'warn');
  }
  mic = { stream, context, timer };
  setBadge(ui.micState, 'quiet');
}

function closeMicrophone() {
  if (!mic) return;
  clearInterval(mic.timer);
  for (const track of mic.stream.getTracks()) {
    track.onended = null;
    track.stop();
  }
  mic.context.close().catch(() => {});
  mic = null;
  ui.micLevel.value = 0;
  ui.micDb.textContent = 'off';
  setBadge(ui.micState, 'off');
}

// What the room's speech is doing, from its events; heard_text is what was played of it
// before a caller's voice stopped it.
function showAgent(event) {
  const { type } = event;
  if (type === 'speech.started' || type === 'speech.resumed') setBadge(ui.agentState, 'playing');
  else if (type === 'speech.paused') setBadge(ui.agentState, 'paused');
  else if (type === 'speech.cancelled' && event.played_ms > 0) setBadge(ui.agentState, 'cancelled');
  else if (type === 'speech.done' && playing.size === 0) setBadge(ui.agentState, 'idle');
  else return;
  if ((type === 'speech.paused' || type === 'speech.cancelled') && event.heard_text != null) {
    ui.heard.textContent = `${type === 'speech.paused' ? 'Paused' : 'Cancelled'} after ${event.played_ms} ms; `
      + `heard: “${event.heard_text}”`;
  } else if (type === 'speech.started') {
    ui.heard.textContent = '';
  }
}

// ---------------------------------------------------------------- data channel

function openChannel(dc) {
  channel = dc;
  dc.onopen = () => { log('channel', 'open: ready to speak'); render(); };
  dc.onclose = () => {
    if (channel !== dc) return;
    log('channel', 'closed by the server', 'warn');
    outstanding.clear();
    playing.clear();
    render();
  };
  dc.onmessage = (event) => {
    let message = null;
    try { message = JSON.parse(event.data); } catch { log('channel', `not JSON: ${event.data}`, 'error'); }
    if (message) onServerEvent(message);
    render();
  };
  render();
}

function onServerEvent(event) {
  const { type, id } = event;
  const show = (v) => (Array.isArray(v) ? v.map((p) => p.identity ?? JSON.stringify(p)).join(',')
    : v !== null && typeof v === 'object' ? JSON.stringify(v) : v);
  const details = Object.entries(event).filter(([k]) => k !== 'type')
    .map(([k, v]) => `${k}=${k === 'heard_text' ? JSON.stringify(v) : show(v)}`).join(' ');
  if (type === 'speech.started') playing.add(id);
  else if (type === 'speech.done' || type === 'speech.cancelled' || type === 'error') playing.delete(id);
  showAgent(event);
  if (type === 'speech.started') {
    const clicked = outstanding.get(id);
    if (clicked !== undefined) {
      ttfa.last = performance.now() - clicked;
      ttfa.sum += ttfa.last;
      ttfa.count += 1;
      showLatency();
      log(type, `${details} · first audio ${Math.round(ttfa.last)} ms after Speak`);
      return;
    }
  } else if (type === 'speech.done' || type === 'speech.cancelled') {
    outstanding.delete(id);
  } else if (type === 'error') {
    if (id !== undefined) outstanding.delete(id);
    logProblem(id ? `error (${id})` : 'error', event);
    return;
  }
  log(type ?? 'event', details, type === 'speech.cancelled' || type === 'speech.paused' ? 'warn' : 'info');
}

function send(message) {
  const open = channel?.readyState === 'open';
  if (open) channel.send(JSON.stringify(message));
  return open;
}

const DELTA_INTERVAL_MS = 60;

function speak() {
  const text = ui.text.value.trim();
  if (!text) return ui.text.focus();
  const id = `c${++sayCount}`;
  const short = text.length > 60 ? text.slice(0, 57) + '…' : text;
  if (ui.asDeltas.checked) return streamDeltas(text, id, short);
  const speed = Number(ui.speed.value);
  if (send({ type: 'say', text, id, ...(speed !== 1 ? { speed } : {}) })) {
    outstanding.set(id, performance.now());
    log('say', `id=${id} "${short}"${speed !== 1 ? ` speed=${speed}` : ''}`);
    render();
  }
}

// Send the text word by word, as a voice agent forwards an LLM's tokens.
function streamDeltas(text, id, short) {
  const words = text.split(/(?<=\s)/);
  outstanding.set(id, performance.now());
  log('text.delta', `id=${id} ${words.length} deltas, one every ${DELTA_INTERVAL_MS} ms: "${short}"`);
  words.forEach((word, i) => setTimeout(() => {
    send({ type: 'text.delta', text: word, id });
    if (i === words.length - 1) send({ type: 'text.done', id });
  }, i * DELTA_INTERVAL_MS));
  render();
}

function stop() {
  if (send({ type: 'cancel' })) log('cancel', 'sent');
}

// ---------------------------------------------------------------- stats

function startStats() {
  const tick = async () => {
    const peer = pc;
    if (!peer) return;
    await Promise.all([updateRtpStats(peer), updateServerStats(sessionUrl)]);
    if (pc === peer) statsTimer = setTimeout(tick, STATS_INTERVAL_MS);
  };
  clearTimeout(statsTimer);
  tick();
}

async function updateRtpStats(peer) {
  let rtp = null;
  let rtt = null;
  (await peer.getStats()).forEach((s) => {
    if (s.type === 'inbound-rtp' && (s.kind ?? s.mediaType) === 'audio') rtp = s;
    if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') rtt = s.currentRoundTripTime ?? rtt;
  });
  if (pc !== peer) return;
  lastRtt = rtt;
  showLatency();
  if (!rtp) {
    showStats(ui.rtpStats, [['packetsReceived', 'no audio stream yet']]);
    return;
  }
  const kbps = lastRtp && rtp.timestamp > lastRtp.timestamp
    ? ((rtp.bytesReceived - lastRtp.bytesReceived) * 8) / (rtp.timestamp - lastRtp.timestamp)
    : null;
  lastRtp = rtp;
  const has = (key) => typeof rtp[key] === 'number';
  showStats(ui.rtpStats, [
    ['packetsReceived', rtp.packetsReceived],
    ['packetsLost', rtp.packetsLost],
    ['jitter', ms(has('jitter') ? rtp.jitter * 1000 : null)],
    ['bytesReceived', rtp.bytesReceived],
    ['bitrate', kbps == null ? null : `${kbps.toFixed(1)} kbit/s`],
    ['audioLevel', has('audioLevel') ? rtp.audioLevel.toFixed(3) : null],
    ['totalAudioEnergy', has('totalAudioEnergy') ? rtp.totalAudioEnergy.toFixed(3) : null],
    ['jitter buffer (avg)', has('jitterBufferDelay') && rtp.jitterBufferEmittedCount
      ? ms((rtp.jitterBufferDelay / rtp.jitterBufferEmittedCount) * 1000) : null],
  ]);
}

const SERVER_KEYS = [
  'connection_state', 'frames_sent', 'speech_frames_sent', 'underruns', 'skipped_frames',
  'lateness_p50_ms', 'lateness_p99_ms', 'lateness_max_ms', 'dropped_frames', 'queued_utterances',
];

async function updateServerStats(url) {
  // Failures are left to the next tick; a server that went away shows in the connection state.
  const response = url && (await fetch(`${url}/stats`, { cache: 'no-store', headers: sessionAuth }).catch(() => null));
  const data = response?.ok && (await response.json().catch(() => null));
  if (!data || url !== sessionUrl) return;
  const link = data.link ?? {};  // what the server's link adaptor made of this page's RTCP reports
  showStats(ui.serverStats, [
    ...SERVER_KEYS.map((key) => [key, data[key]]),
    ['link reports', link.reports],
    ['link loss', link.loss_pct == null ? null : `${link.loss_pct} %`],
    ['RED negotiated', link.red_negotiated],
    ['RED distance', link.red_distance],
    ['FEC', link.inband_fec == null ? null : `${link.inband_fec ? 'on' : 'off'} (${link.expected_loss_pct} %)`],
    ['opus bitrate', link.bitrate_bps == null ? null : `${link.bitrate_bps / 1000} kbit/s`],
  ]);
}

// ---------------------------------------------------------------- wiring

ui.connect.addEventListener('click', () => connect(false));
ui.talk.addEventListener('click', () => connect(true));
ui.hangup.addEventListener('click', hangUp);
ui.disconnect.addEventListener('click', disconnect);
ui.speak.addEventListener('click', speak);
ui.speed.addEventListener('input', () => { ui.speedValue.textContent = `${Number(ui.speed.value).toFixed(1)}×`; });
ui.stop.addEventListener('click', stop);
ui.clearLog.addEventListener('click', () => ui.log.replaceChildren());
ui.text.addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    if (!ui.speak.disabled) speak();
  }
});
window.addEventListener('pagehide', () => {
  if (sessionUrl) fetch(sessionUrl, { method: 'DELETE', headers: sessionAuth, keepalive: true }).catch(() => {});
});

clearStats();
render();
