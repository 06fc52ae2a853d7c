// matchstream — the watcher's page, part 3 of 3: the entry point (the match picker and the
// routing). Plain JS as ES modules, no build step, no dependencies.
//
// `#` shows the picker: the matches of GET /1/matches (each with GET /1/match/{id}), refreshed
// every 5 s, live ones first. `#/match/{id}` follows that match (watch.js), drawn by view.js.

import { $, el, getJSON, loadTeam, setConn, show, teamName } from './view.js';
import { openMatch, reconnectNow, stopWatch, watchedMatch } from './watch.js';

// ---------------------------------------------------------------- match picker

let pickerTimer = null;

function periodBadge(m) {
  switch (m.period) {
    case 'first': case 'last': case 'penalties': return ['live', 'Live'];
    case 'halftime': return ['live', 'HT'];
    case 'ended': return ['ended', 'FT'];
    default: return ['soon', 'Not started'];
  }
}

async function refreshPicker() {
  const status = $('picker-status');
  let ids;
  try {
    ids = await getJSON('/1/matches');
  } catch (e) {
    status.textContent = 'Could not load matches — retrying…';
    return;
  }
  if (!Array.isArray(ids) || ids.length === 0) {
    status.textContent = 'No matches yet. Start one with “matchstream replay” or “matchstream serve --demo”.';
    $('matches').replaceChildren();
    return;
  }
  const matches = (await Promise.all(ids.slice(0, 100).map((id) =>
    getJSON(`/1/match/${encodeURIComponent(id)}`).catch(() => ({ id }))))).filter(Boolean);
  await Promise.all(matches.flatMap((m) => [m.home, m.visit].filter(Boolean).map(loadTeam)));
  const rank = { first: 0, last: 0, penalties: 0, halftime: 0, not_started: 1, ended: 2 };
  matches.sort((a, b) => ((rank[a.period] ?? 3) - (rank[b.period] ?? 3))
    || String(b.start_date || '').localeCompare(String(a.start_date || ''))
    || String(a.id).localeCompare(String(b.id)));
  status.textContent = `${matches.length} match${matches.length === 1 ? '' : 'es'}`;
  const list = matches.map((m) => {
    const li = el('li');
    const a = el('a', 'match-link');
    a.href = `#/match/${encodeURIComponent(m.id)}`;
    if (!m.home) {
      a.append(el('span', 'teams', m.id));
    } else {
      const [cls, label] = periodBadge(m);
      const teams = el('span', 'teams');
      const scored = m.period && m.period !== 'not_started';
      teams.append(
        el('span', 'tn', teamName(m.home)),
        el('span', 'ts', scored ? `${m.home_score}–${m.visit_score}` : 'vs'),
        el('span', 'tn', teamName(m.visit)),
      );
      a.append(teams, el('span', `badge ${cls}`, label),
        el('span', 'sub muted', [m.start_date, m.stadium].filter(Boolean).join(' · ')));
    }
    li.append(a);
    return li;
  });
  $('matches').replaceChildren(...list);
}

function openPicker() {
  stopWatch();
  document.title = 'matchstream — matches';
  setConn('idle', '');
  show('picker');
  refreshPicker();
  clearInterval(pickerTimer);
  pickerTimer = setInterval(refreshPicker, 5000);
}

// ---------------------------------------------------------------- routing

function route() {
  const m = /^#\/match\/(.+)$/.exec(location.hash);
  if (m) {
    const mid = decodeURIComponent(m[1]);
    if (watchedMatch() !== mid) {
      clearInterval(pickerTimer);
      openMatch(mid);
    }
  } else {
    openPicker();
  }
}

window.addEventListener('hashchange', route);
// Back online: don't wait for the backoff timer.
window.addEventListener('online', reconnectNow);
route();
