// matchstream — the watcher's page, part 2 of 3: following one match over the WebSocket.
//
// Opens /1/ws and sends {"command":"watch","mid":ID,"since":lastSeq}; the server answers with
// {"type":"status",...,"state":{match}}, then every event after `since`, then live events.
// Messages are handled one at a time in arrival order and handed to view.js, which shows each
// event exactly once (kept by `lastSeq`). On a drop this reconnects with exponential backoff
// and jitter and resumes with `since: lastSeq`, so nothing is missed or repeated.

import {
  $, acceptEvent, flash, getJSON, loadTeam, rememberLineups, renderAll, renderClock,
  resetMatchView, setConn, show, showProblem,
} from './view.js';

// ---------------------------------------------------------------- watching a match

let w = null; // the current watch session
let clockTimer = null;

function newSession(mid) {
  return {
    mid,
    ws: null,
    state: null, // match object, folded forward to state.seq
    lastSeq: 0, // last event shown in the feed
    attempt: 0, // reconnect attempt (0 = first connect)
    timer: null,
    connectTimer: null,
    chain: Promise.resolve(),
    ended: false,
    stopped: false,
    skew: 0, // server clock − local clock, learnt from live events
    // The feed's own fold, over every event shown (from seq 1): clock and running score.
    tl: { periodStart: null, offset: 0, phase: 'not_started', home: 0, visit: 0, minute: null, minuteTs: 0 },
    names: { home: new Map(), visit: new Map() }, // number → name, everyone ever listed
    yellow: { home: new Set(), visit: new Set() },
    cameOn: { home: new Set(), visit: new Set() },
  };
}

// Stops following the current match, if any: no more reconnects, the socket closed.
export function stopWatch() {
  if (!w) return;
  w.stopped = true;
  clearTimeout(w.timer);
  clearTimeout(w.connectTimer);
  if (w.ws) {
    try { w.ws.close(1000, 'bye'); } catch (_) { /* already closed */ }
  }
  w = null;
  clearInterval(clockTimer);
}

// Shows match `mid` and follows it live (from its first event).
export function openMatch(mid) {
  stopWatch();
  w = newSession(mid);
  resetMatchView(mid);
  show('match');
  connect(w);
  clockTimer = setInterval(() => renderClock(w), 1000);
}

function backoff(attempt) {
  // 250 ms × 2^(n−1), capped at 4 s, then ±25 % jitter (so at most 5 s).
  const base = Math.min(4000, 250 * 2 ** Math.max(0, attempt - 1));
  return Math.round(base * (0.75 + Math.random() * 0.5));
}

function connect(s) {
  if (s.stopped) return;
  clearTimeout(s.timer);
  s.timer = null;
  setConn(s.attempt ? 'reconnecting' : 'connecting',
    s.attempt ? `Reconnecting (attempt ${s.attempt})…` : 'Connecting…');
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  let ws;
  try {
    ws = new WebSocket(`${proto}//${location.host}/1/ws`);
  } catch (e) {
    scheduleReconnect(s);
    return;
  }
  s.ws = ws;
  // A handshake that hangs counts as a drop.
  s.connectTimer = setTimeout(() => { if (ws.readyState === WebSocket.CONNECTING) ws.close(); }, 8000);
  ws.onopen = () => {
    clearTimeout(s.connectTimer);
    if (s.ws !== ws || s.stopped) return;
    ws.send(JSON.stringify({ command: 'watch', mid: s.mid, since: s.lastSeq }));
  };
  // Messages and the close are handled strictly in arrival order, one at a time (a status
  // may wait for the team names before anything after it is shown).
  ws.onmessage = (e) => {
    if (s.ws !== ws || s.stopped) return;
    let msg;
    try { msg = JSON.parse(e.data); } catch (_) { return; }
    s.chain = s.chain.then(() => { if (!s.stopped) return onMessage(s, ws, msg); });
  };
  ws.onclose = (e) => {
    clearTimeout(s.connectTimer);
    if (s.ws !== ws || s.stopped) return;
    s.ws = null;
    s.chain = s.chain.then(() => { if (!s.stopped) onClose(s, e); });
  };
}

function scheduleReconnect(s) {
  if (s.stopped || s.timer) return;
  s.attempt += 1;
  const delay = backoff(s.attempt);
  setConn('reconnecting', `Reconnecting (attempt ${s.attempt}) in ${(delay / 1000).toFixed(1)} s…`);
  s.timer = setTimeout(() => connect(s), delay);
}

function onClose(s, e) {
  if (s.ended) {
    setConn('ended', 'Ended');
    fillFromHistory(s);
    return;
  }
  if (e.code === 1000 && /cancel/i.test(e.reason || '')) {
    s.stopped = true;
    setConn('ended', 'Cancelled');
    showProblem('This match was cancelled.');
    return;
  }
  scheduleReconnect(s);
}

// The server may end an already-ended match's subscription right after its status; the
// feed's missing lines then come from the history endpoint.
async function fillFromHistory(s) {
  if (!s.state || s.lastSeq >= s.state.seq) return;
  try {
    const events = await getJSON(`/1/match/${encodeURIComponent(s.mid)}/history?since=${s.lastSeq}`);
    if (w !== s) return;
    for (const ev of Array.isArray(events) ? events : []) {
      if (ev.seq > s.lastSeq) acceptEvent(s, ev, false);
    }
    renderAll(s);
  } catch (_) { /* the scoreboard is right; the feed stays short */ }
}

async function onMessage(s, ws, msg) {
  if (msg.type === 'error') {
    // "match not found: X", or "not a match id: X" for a name that cannot be an id.
    if (/not found|not a match id/i.test(msg.error || '')) {
      s.stopped = true;
      try { ws.close(1000); } catch (_) { /* closed */ }
      setConn('ended', 'No such match');
      showProblem(`Match “${s.mid}” was not found.`);
    }
    return;
  }
  if (msg.match !== undefined && msg.match !== s.mid) return;
  if (msg.type === 'status') {
    const st = msg.state || {};
    if (!s.state || (st.seq ?? 0) >= s.state.seq) s.state = structuredClone(st);
    s.state.seq = s.state.seq ?? msg.seq ?? 0;
    s.attempt = 0;
    rememberLineups(s, s.state);
    await Promise.all([loadTeam(s.state.home), loadTeam(s.state.visit)]);
    if (s.stopped) return;
    if (s.state.period === 'ended') {
      s.ended = true;
      setConn('ended', 'Ended');
    } else {
      setConn('live', 'Live');
    }
    renderAll(s);
    return;
  }
  if (msg.type === 'event') {
    if (typeof msg.seq !== 'number' || msg.seq <= s.lastSeq) return; // already shown
    if (msg.seq > s.lastSeq + 1) {
      // A gap should never happen; resume from what we have rather than show a hole.
      try { ws.close(4000, 'gap'); } catch (_) { /* closed */ }
      return;
    }
    const live = !s.state || msg.seq > s.state.seq;
    if (live && typeof msg.ts === 'number') s.skew = msg.ts - Date.now();
    acceptEvent(s, msg, live);
    renderAll(s);
    if (msg.kind === 'goal' && live) flash($('score'));
    if (msg.kind === 'stop') {
      s.ended = true;
      setConn('ended', 'Ended');
    }
  }
}

// ---------------------------------------------------------------- for the router

// The id of the match being followed, or null.
export function watchedMatch() {
  return w ? w.mid : null;
}

// Back online: don't wait for the backoff timer.
export function reconnectNow() {
  if (w && w.timer && !w.stopped) {
    clearTimeout(w.timer);
    w.timer = null;
    connect(w);
  }
}
