// matchstream — the watcher's page, part 1 of 3: everything it draws.
//
// Small DOM and fetch helpers, team names (GET /1/team/{id}, cached), the connection indicator
// and the three views (picker, match, problem); then, for the match view, the fold of events
// into the scoreboard, the feed and the lineups, and their rendering. No sockets, no timers:
// watch.js drives this with the events it receives, app.js with the match list.

export const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- helpers

const PERIOD_LABEL = {
  not_started: 'Not started',
  first: '1st half',
  halftime: 'Half-time',
  last: '2nd half',
  penalties: 'Penalties',
  ended: 'Full time',
};

const KIND_LABEL = {
  shot: 'Shot',
  save: 'Save',
  corner: 'Corner',
  goalkick: 'Goal kick',
  offside: 'Offside',
  foul: 'Foul',
  penalty: 'Penalty',
  freekick: 'Free kick',
  throwin: 'Throw-in',
};

export function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

export async function getJSON(url) {
  const res = await fetch(url, {
    cache: 'no-store',
    headers: { accept: 'application/json' },
    signal: AbortSignal.timeout ? AbortSignal.timeout(5000) : undefined,
  });
  if (!res.ok) {
    const err = new Error(`${url}: HTTP ${res.status}`);
    err.status = res.status;
    throw err;
  }
  return res.json();
}

// Team names, fetched once per id (GET /1/team/{id}); the id stands in until then.
const teamCache = new Map();
export function loadTeam(id) {
  if (!teamCache.has(id)) {
    const entry = { id, name: null, promise: null };
    entry.promise = getJSON(`/1/team/${encodeURIComponent(id)}`)
      .then((t) => { entry.name = (t && t.name) || null; })
      .catch(() => { teamCache.delete(id); });
    teamCache.set(id, entry);
  }
  return teamCache.get(id).promise;
}
export function teamName(id) {
  const entry = teamCache.get(id);
  return (entry && entry.name) || String(id || '?').toUpperCase();
}
const code = (id) => String(id || '?').toUpperCase();

// A stable, pleasant accent colour per team id (no team colours in the API).
function teamHue(id) {
  let h = 0;
  for (const c of String(id)) h = (h * 31 + c.charCodeAt(0)) % 360;
  return h;
}

function minuteLabel(ts, periodStart, offset) {
  if (periodStart == null || ts == null) return '';
  const m = offset + Math.max(0, Math.floor((ts - periodStart) / 60000));
  const limit = offset + 45;
  return m > limit ? `${limit}+${m - limit}'` : `${m}'`;
}

// The match minute a feed gave an event (`"minute": 67`), or null.
const feedMinute = (ev) => (Number.isInteger(ev.minute) ? ev.minute : null);

// The running clock of a feed that gives minutes: the last event's minute, moved on by the
// wall-clock time since that event (a real-time feed ticks; a fast replay shows its
// events' own minutes), so it never reads earlier than an event on the page.
function feedClock(tl, now, offset) {
  const m = Math.max(offset, tl.minute + Math.max(0, Math.floor((now - tl.minuteTs) / 60000)));
  const limit = offset + 45;
  return m > limit && tl.minute <= limit ? `${limit}+${m - limit}'` : `${m}'`;
}

// ---------------------------------------------------------------- connection indicator

export function setConn(state, text) {
  const c = $('conn');
  c.dataset.state = state;
  $('conn-text').textContent = text;
}

// ---------------------------------------------------------------- views

export function show(view) {
  for (const id of ['picker', 'match', 'problem']) $(id).hidden = id !== view;
}

export function showProblem(text) {
  $('problem-text').textContent = text;
  show('problem');
}

// ---------------------------------------------------------------- folding

function sideOf(state, team) {
  if (!state || !team) return null;
  if (team === state.home) return 'home';
  if (team === state.visit) return 'visit';
  return null;
}

export function rememberLineups(s, st) {
  for (const side of ['home', 'visit']) {
    for (const p of st[`${side}_players`] || []) {
      if (Array.isArray(p) && p[1]) s.names[side].set(p[0], p[1]);
    }
  }
}

function num(p) { return Array.isArray(p) ? p[0] : p; }

function playerText(s, side, p) {
  if (p === undefined || p === null) return '';
  const n = num(p);
  const name = (Array.isArray(p) && p[1]) || (side && s.names[side].get(n)) || '';
  return name ? `#${n} ${name}` : `#${n}`;
}

function remember(s, side, p) {
  if (side && Array.isArray(p) && p[1]) s.names[side].set(p[0], p[1]);
}

// Folds one event into the match state (the server's rules, for live updates).
function applyToState(st, ev) {
  const d = ev.data || {};
  const lineup = (side) => st[`${side}_players`] || (st[`${side}_players`] = []);
  switch (ev.kind) {
    case 'start':
      if (Array.isArray(d.home_players)) st.home_players = d.home_players.slice();
      if (Array.isArray(d.visit_players)) st.visit_players = d.visit_players.slice();
      st.home_score = 0; st.visit_score = 0;
      st.period = 'first'; st.period_start = ev.ts;
      break;
    case 'halftime': st.period = 'halftime'; delete st.period_start; break;
    case 'continue': st.period = 'last'; st.period_start = ev.ts; break;
    case 'penalties': st.period = 'penalties'; st.period_start = ev.ts; break;
    case 'stop': st.period = 'ended'; delete st.period_start; break;
    case 'goal': {
      const side = sideOf(st, d.team);
      if (side) st[`${side}_score`] = (st[`${side}_score`] || 0) + 1;
      break;
    }
    case 'card': {
      const side = sideOf(st, d.team);
      if (side && d.card === 'red') {
        st[`${side}_players`] = lineup(side).filter((p) => num(p) !== num(d.player));
      }
      break;
    }
    case 'substitution': {
      const side = sideOf(st, d.team);
      if (side) {
        const list = lineup(side);
        const i = list.findIndex((p) => num(p) === num(d.player_out));
        const pin = Array.isArray(d.player_in) ? d.player_in : [num(d.player_in), ''];
        if (i >= 0) list[i] = pin; else list.push(pin);
      }
      break;
    }
    default: break;
  }
  st.seq = ev.seq;
}

// One event, in seq order: update the state (when it is newer than the snapshot), the
// feed's own timeline, and append exactly one feed line.
export function acceptEvent(s, ev, applyState) {
  const st = s.state;
  const d = ev.data || {};
  const tl = s.tl;
  const side = sideOf(st, d.team);
  // Names first, so lines can name players given by number only.
  if (ev.kind === 'start') {
    rememberLineups(s, { home_players: d.home_players, visit_players: d.visit_players });
  }
  remember(s, side, d.player_in);
  remember(s, side, d.player_out);
  remember(s, sideOf(st, d.player_team) || side, d.player);

  switch (ev.kind) {
    case 'start': Object.assign(tl, { periodStart: ev.ts, offset: 0, phase: 'first', home: 0, visit: 0 }); break;
    case 'halftime': Object.assign(tl, { periodStart: null, phase: 'halftime' }); break;
    case 'continue': Object.assign(tl, { periodStart: ev.ts, offset: 45, phase: 'last' }); break;
    case 'penalties': Object.assign(tl, { periodStart: null, phase: 'penalties' }); break;
    case 'stop': Object.assign(tl, { periodStart: null, phase: 'ended' }); break;
    case 'goal': if (side) tl[side] += 1; break;
    case 'card':
      if (side && d.card === 'yellow') s.yellow[side].add(num(d.player));
      break;
    case 'substitution':
      if (side) s.cameOn[side].add(num(d.player_in));
      break;
    default: break;
  }
  const given = feedMinute(ev);
  if (given !== null) Object.assign(tl, { minute: given, minuteTs: ev.ts });
  else if (ev.kind === 'start') tl.minute = null; // a feed without minutes: wall-clock time
  let minute;
  switch (tl.phase) {
    case 'first': case 'last':
      minute = given !== null ? `${given}'` : minuteLabel(ev.ts, tl.periodStart, tl.offset);
      break;
    case 'halftime': minute = 'HT'; break;
    case 'penalties': minute = 'PEN'; break;
    case 'ended': minute = 'FT'; break;
    default: minute = '';
  }
  appendFeedLine(s, ev, minute, describe(s, ev));
  s.lastSeq = ev.seq;
  if (applyState && st) applyToState(st, ev);
}

function describe(s, ev) {
  const st = s.state || {};
  const d = ev.data || {};
  const side = sideOf(st, d.team);
  const team = d.team ? teamName(d.team) : '';
  const tl = s.tl;
  const scoreNow = `${tl.home}–${tl.visit}`;
  switch (ev.kind) {
    case 'start': return { cls: 'period', text: `Kick-off — ${teamName(st.home)} vs ${teamName(st.visit)}` };
    case 'halftime': return { cls: 'period', text: `Half-time — ${teamName(st.home)} ${scoreNow} ${teamName(st.visit)}` };
    case 'continue': return { cls: 'period', text: 'Second half under way' };
    case 'penalties': return { cls: 'period', text: 'Penalty shoot-out' };
    case 'stop': return { cls: 'period', text: `Full time — ${teamName(st.home)} ${scoreNow} ${teamName(st.visit)}` };
    case 'goal': {
      if (d.player_team && d.player_team !== d.team) {
        const who = playerText(s, sideOf(st, d.player_team), d.player);
        return { cls: 'goal own', text: `Own goal — ${teamName(d.player_team)}'s ${who || 'player'}, for ${team}`, score: scoreNow };
      }
      const who = playerText(s, side, d.player);
      return { cls: 'goal', text: `Goal — ${team}${who ? `, ${who}` : ''}`, score: scoreNow };
    }
    case 'card': {
      const red = d.card === 'red';
      return {
        cls: red ? 'booking red' : 'booking yellow',
        text: `${red ? 'Red' : 'Yellow'} card — ${team}, ${playerText(s, side, d.player)}`,
      };
    }
    case 'substitution':
      return {
        cls: 'sub',
        text: `Substitution — ${team}: ⇄ ${playerText(s, side, d.player_in)} for ${playerText(s, side, d.player_out)}`,
      };
    case 'comment': {
      const text = d.text ?? d.comment ?? d.message ?? (Object.keys(d).length ? JSON.stringify(d) : '');
      return { cls: 'comment', text: `“${text}”` };
    }
    default: {
      const label = KIND_LABEL[ev.kind] || (ev.kind ? ev.kind[0].toUpperCase() + ev.kind.slice(1) : 'Event');
      const who = playerText(s, side, d.player);
      return { cls: `play ${ev.kind}`, text: `${label}${team ? ` — ${team}` : ''}${who ? `, ${who}` : ''}` };
    }
  }
}

// ---------------------------------------------------------------- rendering

export function resetMatchView(mid) {
  document.title = `${mid} — matchstream`;
  for (const id of ['home-name', 'visit-name', 'home-code', 'visit-code', 'meta']) $(id).textContent = '';
  $('home-score').textContent = '–';
  $('visit-score').textContent = '–';
  $('clock').textContent = '—';
  $('period').textContent = 'Loading…';
  $('feed').replaceChildren();
  $('feed-empty').hidden = false;
  $('home-lineup').replaceChildren();
  $('visit-lineup').replaceChildren();
  $('scoreboard').dataset.period = '';
}

function appendFeedLine(s, ev, minute, { cls, text, score }) {
  const li = el('li', `ev ${cls}`);
  li.dataset.seq = ev.seq;
  li.dataset.kind = ev.kind;
  const d = ev.data || {};
  const side = sideOf(s.state, d.team);
  if (side) li.dataset.side = side;
  li.append(el('span', 'min', minute || '·'), document.createTextNode(' '));
  const icon = el('span', 'icon');
  icon.setAttribute('aria-hidden', 'true');
  li.append(icon, el('span', 'txt', text));
  if (score) li.append(document.createTextNode(' '), el('span', 'sc', score));
  $('feed').prepend(li);
  $('feed-empty').hidden = true;
}

export function renderAll(s) {
  const st = s.state;
  if (!st) return;
  const board = $('scoreboard');
  board.dataset.period = st.period || '';
  board.style.setProperty('--home-hue', teamHue(st.home));
  board.style.setProperty('--visit-hue', teamHue(st.visit));
  $('home-name').textContent = teamName(st.home);
  $('visit-name').textContent = teamName(st.visit);
  $('home-code').textContent = code(st.home);
  $('visit-code').textContent = code(st.visit);
  const started = st.period && st.period !== 'not_started';
  $('home-score').textContent = started ? st.home_score ?? 0 : '–';
  $('visit-score').textContent = started ? st.visit_score ?? 0 : '–';
  $('period').textContent = PERIOD_LABEL[st.period] || st.period || '';
  $('meta').textContent = [st.stadium, st.start_date].filter(Boolean).join(' · ');
  $('home-lineup-title').textContent = teamName(st.home);
  $('visit-lineup-title').textContent = teamName(st.visit);
  renderLineup(s, 'home');
  renderLineup(s, 'visit');
  renderClock(s);
  document.title = started
    ? `${code(st.home)} ${st.home_score}–${st.visit_score} ${code(st.visit)} · ${clockText(s)} — matchstream`
    : `${teamName(st.home)} vs ${teamName(st.visit)} — matchstream`;
}

function renderLineup(s, side) {
  const players = (s.state && s.state[`${side}_players`]) || [];
  const items = players.map((p) => {
    const n = num(p);
    const li = el('li', 'player');
    li.append(el('span', 'num', n), document.createTextNode(' '),
      el('span', 'name', (Array.isArray(p) && p[1]) || s.names[side].get(n) || ''));
    if (s.cameOn[side].has(n)) {
      li.classList.add('came-on');
      li.append(document.createTextNode(' '), el('span', 'tag in', 'in'));
    }
    if (s.yellow[side].has(n)) {
      const yc = el('span', 'yc');
      yc.title = 'Booked';
      yc.setAttribute('aria-label', 'booked');
      li.append(yc);
    }
    return li;
  });
  $(`${side}-lineup`).replaceChildren(...items);
}

function clockText(s) {
  const st = s && s.state;
  if (!st) return '—';
  switch (st.period) {
    case 'first': case 'last': {
      const offset = st.period === 'first' ? 0 : 45;
      const now = Date.now() + s.skew;
      if (s.tl.minute != null) return feedClock(s.tl, now, offset);
      return minuteLabel(now, st.period_start, offset) || (offset ? '2nd' : '1st');
    }
    case 'halftime': return 'HT';
    case 'penalties': return 'PEN';
    case 'ended': return 'FT';
    default: return '—';
  }
}

// The clock line of session `s` (the match being watched), redrawn every second by watch.js.
export function renderClock(s) {
  if (!s) return;
  $('clock').textContent = clockText(s);
}

export function flash(node) {
  node.classList.remove('flash');
  void node.offsetWidth; // restart the animation
  node.classList.add('flash');
}
