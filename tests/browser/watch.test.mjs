// The watcher's page, in a real browser: Debian's headless chromium driven by playwright-core.
//
// Starts the real `matchstream serve` (env MATCHSTREAM_BIN, default target/release/matchstream),
// plays the sample match fixtures/elp-tig-2011-09-10.json through the admin API, and asserts
// what a person sees on the page: the score, the period, the feed lines, the lineups, the
// connection indicator — also across a server restart in the middle of the match, and over
// https:// + wss:// with a throw-away CA (benches/tls_certs.sh).
// Screenshots go to target/browser-artifacts/.
//
//   bash tests/browser.sh            # installs chromium + playwright-core, then runs this
//   node --test tests/browser/       # when both are installed
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { chromium } from 'playwright-core';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const BIN = process.env.MATCHSTREAM_BIN || path.join(ROOT, 'target', 'release', 'matchstream');
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const ARTIFACTS = path.join(ROOT, 'target', 'browser-artifacts');
const TOKEN = 'browser-test-token';

const SCRIPT = JSON.parse(readFileSync(path.join(ROOT, 'fixtures', 'elp-tig-2011-09-10.json'), 'utf8'));
const MID = `${SCRIPT.home.id}-${SCRIPT.visit.id}-${SCRIPT.start_date}`; // elp-tig-2011-09-10
// Each with the match minute the script gives it (posted as `minute`).
const EVENTS = SCRIPT.steps.filter((s) => s.event)
  .map((s) => ({ kind: s.event, data: s.data ?? {}, ...(s.minute === undefined ? {} : { minute: s.minute }) }));
const HALFTIME = EVENTS.findIndex((e) => e.kind === 'halftime') + 1; // events up to and including halftime

mkdirSync(ARTIFACTS, { recursive: true });

// ------------------------------------------------------------------ cleanup of everything we start

const cleanups = [];
after(async () => {
  for (const fn of cleanups.reverse()) {
    try { await fn(); } catch (_) { /* best effort */ }
  }
});
const children = new Set();
process.on('exit', () => { for (const c of children) { try { c.kill('SIGKILL'); } catch (_) { /* gone */ } } });

function tempDir(prefix) {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

// ------------------------------------------------------------------ the server

async function startServer({ dataDir, port = 0, tls = null }) {
  assert.ok(existsSync(BIN), `matchstream binary not found at ${BIN} (build it: cargo build --release, or set MATCHSTREAM_BIN)`);
  const args = ['serve', '--listen', `127.0.0.1:${port}`, '--tcp-listen', '127.0.0.1:0',
    '--data-dir', dataDir, '--admin-token', TOKEN, '--workers', '2'];
  if (tls) args.push('--tls-cert', tls.cert, '--tls-key', tls.key);
  const proc = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' } });
  children.add(proc);
  let log = '';
  const exited = new Promise((resolve) => proc.once('exit', (code, signal) => { children.delete(proc); resolve({ code, signal }); }));
  const ready = new Promise((resolve, reject) => {
    let out = '';
    proc.stdout.on('data', (chunk) => {
      out += chunk;
      log += chunk;
      const m = /matchstream listening http=([\d.]+):(\d+)/.exec(out);
      if (m) resolve(Number(m[2]));
    });
    proc.stderr.on('data', (chunk) => { log += chunk; });
    exited.then(({ code, signal }) => reject(new Error(`server exited (${code ?? signal}) before it was ready:\n${log}`)));
  });
  const boundPort = await withTimeout(ready, 15000, () => `server not ready in 15 s:\n${log}`);
  const srv = {
    proc,
    port: boundPort,
    base: tls ? `https://localhost:${boundPort}` : `http://127.0.0.1:${boundPort}`,
    log: () => log,
    exited,
    async stop(signal = 'SIGTERM') {
      if (proc.exitCode !== null || proc.signalCode !== null) return exited;
      proc.kill(signal);
      const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
      const res = await exited;
      clearTimeout(timer);
      return res;
    },
  };
  cleanups.push(() => srv.stop('SIGKILL'));
  return srv;
}

async function withTimeout(promise, ms, message) {
  let timer;
  const timeout = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(message())), ms); });
  try { return await Promise.race([promise, timeout]); } finally { clearTimeout(timer); }
}

async function admin(srv, method, url, body) {
  const res = await fetch(srv.base + url, {
    method,
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(5000),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${url} → ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

async function createMatch(srv) {
  for (const t of [SCRIPT.home, SCRIPT.visit]) {
    await admin(srv, 'PUT', `/1/team/${t.id}`, { name: t.name, division: t.division });
  }
  const created = await admin(srv, 'POST', '/1/matches', {
    home: SCRIPT.home.id, visit: SCRIPT.visit.id, start_date: SCRIPT.start_date, stadium: SCRIPT.stadium,
  });
  assert.equal(created.id, MID);
}

// Posts events[from..to) in order, a few ms apart (the sample match, fast-forwarded).
async function postEvents(srv, from, to, gapMs = 15) {
  for (let i = from; i < to; i++) {
    const ack = await admin(srv, 'POST', `/1/match/${MID}/events`, EVENTS[i]);
    assert.equal(ack.seq, i + 1, `event ${i + 1} (${EVENTS[i].kind}) got seq ${ack.seq}`);
    if (gapMs) await sleep(gapMs);
  }
}

// ------------------------------------------------------------------ the browser

async function openBrowser(viewport = { width: 1280, height: 900 }, { insecure = false } = {}) {
  const profile = tempDir('matchstream-chromium-');
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport,
    ignoreHTTPSErrors: insecure, // the test's own CA, not installed in the browser
    timeout: 30000,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  cleanups.push(() => context.close());
  context.setDefaultTimeout(10000);
  const page = context.pages()[0] || await context.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error' && !/WebSocket|ERR_CONNECTION_REFUSED|Failed to load resource/.test(m.text())) problems.push(`console: ${m.text()}`); });
  return { context, page, problems };
}

// Polls until what the page shows satisfies `check`; fails with what it showed last.
async function until(what, read, check, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try { last = await read(); } catch (e) { last = `<${e.message.split('\n')[0]}>`; }
    if (check(last)) return last;
    if (Date.now() > deadline) assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}; the page showed: ${JSON.stringify(last)}`);
    await sleep(100);
  }
}

const text = (page, selector) => page.locator(selector).innerText();
const feedLines = (page) => page.locator('#feed li').allInnerTexts();
const feedSeqs = (page) => page.locator('#feed li').evaluateAll((lis) => lis.map((li) => Number(li.dataset.seq)));

async function expectText(page, selector, expected, timeoutMs) {
  const ok = expected instanceof RegExp ? (t) => expected.test(t) : (t) => t.trim() === expected;
  return until(`${selector} to show ${expected}`, () => text(page, selector), ok, timeoutMs);
}

function shot(page, name) {
  return page.screenshot({ path: path.join(ARTIFACTS, name), fullPage: true, animations: 'disabled' });
}

// What a person must see once the sample match is over (every check on visible text).
async function expectFinal(page) {
  await expectText(page, '#score', '1–3');
  await expectText(page, '#clock', 'FT');
  await expectText(page, '#period', 'Full time');
  await expectText(page, '#conn', 'Ended');
  await expectText(page, '#scoreline', /Estudiantes de La Plata[\s\S]*1–3[\s\S]*Tigre/);

  const lines = await until('all 31 feed lines', () => feedLines(page), (l) => l.length === EVENTS.length);
  const has = (re) => assert.ok(lines.some((l) => re.test(l)), `no feed line matches ${re}:\n${lines.join('\n')}`);
  has(/^\d+'\s+Red card — Estudiantes de La Plata, #25 Albil$/);
  has(/^58'\s+Own goal — Tigre's #7 Luna, for Estudiantes de La Plata\s+1–3$/);
  has(/^5'\s+Goal — Tigre, #7 Luna\s+0–1$/);
  has(/Substitution — Estudiantes de La Plata: ⇄ #21 Silva for #18 Fernandez$/);
  has(/Substitution — Tigre: ⇄ #24 Carrasco for #9 Maggiolo$/);
  has(/^HT\s+Half-time — Estudiantes de La Plata 0–3 Tigre$/);
  has(/^FT\s+Full time — Estudiantes de La Plata 1–3 Tigre$/);

  // Nothing missed, nothing twice: one line per event, seq 1..31, newest first.
  const seqs = await feedSeqs(page);
  assert.deepEqual(seqs, EVENTS.map((_, i) => EVENTS.length - i), 'feed lines are seq 31..1, once each');

  // Lineups with the red card and the substitutions applied.
  const home = await text(page, '#home-lineup');
  const visit = await text(page, '#visit-lineup');
  assert.doesNotMatch(home, /Albil/, 'sent-off Albil left the home lineup');
  for (const gone of ['Gonzalez', 'Veron']) assert.doesNotMatch(home, new RegExp(gone), `${gone} was substituted`);
  for (const on of ['Silva', 'Galvan', 'Benitez', 'Mercado', 'Boselli']) assert.match(home, new RegExp(on));
  assert.equal(await page.locator('#home-lineup li').count(), 10, 'ten men for Estudiantes');
  for (const gone of ['Martinez', 'Diaz', 'Maggiolo']) assert.doesNotMatch(visit, new RegExp(gone));
  for (const on of ['Pio', 'Rodales', 'Carrasco', 'Luna', 'Garcia']) assert.match(visit, new RegExp(on));
  assert.equal(await page.locator('#visit-lineup li').count(), 11);
  assert.equal(await page.locator('#home-lineup li', { hasText: 'Silva' }).locator('.tag.in').innerText(), 'IN');
}

async function noHorizontalScroll(page) {
  const [scroll, inner] = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
  assert.ok(scroll <= inner, `page scrolls sideways: ${scroll} > ${inner}`);
}

// ------------------------------------------------------------------ tests

test('a person picks the sample match and follows it live to the final 1–3', { timeout: 90000 }, async () => {
  const srv = await startServer({ dataDir: tempDir('matchstream-data-') });
  await createMatch(srv);
  const { context, page, problems } = await openBrowser();

  await page.goto(srv.base + '/');
  const link = page.getByRole('link', { name: /Estudiantes de La Plata.*Tigre/ });
  await link.waitFor();
  assert.match(await link.innerText(), /Not started/i);
  await link.click();

  await expectText(page, '#conn', 'Live');
  await expectText(page, '#period', 'Not started');
  await expectText(page, '#scoreline', /Estudiantes de La Plata[\s\S]*Tigre/);

  // Chromium offers permessage-deflate and the server takes it: the rest of the match comes
  // in compressed frames (the page cannot tell, which is the point).
  const metrics = await (await fetch(srv.base + '/metrics')).text();
  assert.match(metrics, /^matchstream_deflate_websockets(\{[^}]*\})? 1$/m, 'one deflate WebSocket');

  // The first goal arrives live, replayed in milliseconds: the page shows the minute the
  // feed gave it (5'), not the wall-clock time since kick-off (0'), and so does the clock.
  await postEvents(srv, 0, 2);
  await expectText(page, '#score', '0–1');
  await expectText(page, '#period', '1st half');
  await expectText(page, '#clock', /^5'$/);
  await until('the first goal line', () => feedLines(page), (l) => /^5'\s+Goal — Tigre, #7 Luna\s+0–1$/.test(l[0]));

  // Red card: Albil leaves the lineup at once.
  await postEvents(srv, 2, 4);
  await until('Albil off the home lineup', () => text(page, '#home-lineup'), (t) => !/Albil/.test(t) && /Mercado/.test(t));

  // The rest of the match, fast.
  await postEvents(srv, 4, HALFTIME);
  await expectText(page, '#clock', 'HT');
  await expectText(page, '#score', '0–3');
  await postEvents(srv, HALFTIME, EVENTS.length);
  await expectFinal(page);
  await shot(page, 'final-desktop.png');

  // Same page on a phone: readable, nothing sideways.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.emulateMedia({ colorScheme: 'dark' }); // and the dark theme
  await noHorizontalScroll(page);
  await shot(page, 'final-phone.png');

  // Someone opening the page after the final whistle sees the same story.
  const late = await context.newPage();
  await late.goto(`${srv.base}/#/match/${MID}`);
  await expectFinal(late);
  await late.close();

  // The match list now says it is over.
  await page.goto(srv.base + '/');
  await until('the list to show the final', () => link.innerText(), (t) => /1–3/.test(t) && /FT/.test(t));

  assert.deepEqual(problems, []);
  await srv.stop();
});

test('the page rides out a server restart mid-match: reconnects, resumes, no line twice', { timeout: 90000 }, async () => {
  const dataDir = tempDir('matchstream-data-');
  let srv = await startServer({ dataDir });
  const port = srv.port;
  await createMatch(srv);
  await postEvents(srv, 0, HALFTIME, 0);

  const { page, problems } = await openBrowser({ width: 1024, height: 800 });
  await page.goto(`${srv.base}/#/match/${MID}`);
  await expectText(page, '#conn', 'Live');
  await expectText(page, '#score', '0–3');
  await expectText(page, '#clock', 'HT');
  await until(`${HALFTIME} feed lines`, () => feedLines(page), (l) => l.length === HALFTIME);

  // The server goes away (SIGTERM: close 1001 to every watcher).
  const { code, signal } = await srv.stop('SIGTERM');
  assert.ok(code === 0 || signal === 'SIGTERM', `server stopped (${code ?? signal})`);
  await expectText(page, '#conn', /Reconnecting \(attempt \d+\)/, 5000);
  await expectText(page, '#conn', /Reconnecting \(attempt ([2-9]|\d\d)\)/, 8000); // it keeps trying, backing off
  await expectText(page, '#score', '0–3'); // what was shown stays on screen
  await shot(page, 'reconnecting.png');

  // Back on the same port and data: the second half starts before the page is back...
  srv = await startServer({ dataDir, port });
  await postEvents(srv, HALFTIME, HALFTIME + 3, 0); // continue, own goal, substitution
  await expectText(page, '#conn', 'Live', 15000);
  await expectText(page, '#score', '1–3');
  await expectText(page, '#period', '2nd half');
  await until('the missed lines, once', () => feedSeqs(page), (s) => s.length === HALFTIME + 3 && s[0] === HALFTIME + 3);

  // ...and the rest arrives live.
  await postEvents(srv, HALFTIME + 3, EVENTS.length);
  await expectFinal(page);
  const lines = await feedLines(page);
  assert.equal(lines.length, EVENTS.length, 'one line per event');
  await shot(page, 'after-restart.png');

  assert.deepEqual(problems, []);
  await srv.stop();
});

test('a cancelled match and an unknown match say so on the page', { timeout: 60000 }, async () => {
  const srv = await startServer({ dataDir: tempDir('matchstream-data-') });
  await createMatch(srv);
  await postEvents(srv, 0, 2, 0);
  const { page, problems } = await openBrowser({ width: 800, height: 700 });

  await page.goto(`${srv.base}/#/match/no-such-match`);
  await expectText(page, '#problem-text', /was not found/);

  await page.goto(`${srv.base}/#/match/${MID}`);
  await expectText(page, '#conn', 'Live');
  await expectText(page, '#score', '0–1');
  await admin(srv, 'DELETE', `/1/match/${MID}`);
  await expectText(page, '#problem-text', 'This match was cancelled.');
  await expectText(page, '#conn', 'Cancelled');

  assert.deepEqual(problems, []);
  await srv.stop();
});

test('an EventSource follows the match across a server restart: every event once, then it stops', { timeout: 90000 }, async () => {
  const dataDir = tempDir('matchstream-data-');
  let srv = await startServer({ dataDir });
  const port = srv.port;
  await createMatch(srv);
  await postEvents(srv, 0, 3, 0);

  const { page, problems } = await openBrowser({ width: 800, height: 600 });
  await page.goto(srv.base + '/healthz'); // any page of the server's origin
  await page.evaluate((mid) => {
    window.sse = { events: [], statuses: [], opens: 0, errors: 0 };
    const es = new EventSource(`/1/match/${mid}/events`);
    window.es = es;
    es.addEventListener('open', () => { window.sse.opens += 1; });
    es.addEventListener('error', () => { window.sse.errors += 1; });
    es.addEventListener('status', (e) => window.sse.statuses.push(JSON.parse(e.data).seq));
    es.addEventListener('event', (e) => {
      const m = JSON.parse(e.data);
      window.sse.events.push([Number(e.lastEventId), m.seq, m.kind]);
    });
  }, MID);
  const state = () => page.evaluate(() => ({ ...window.sse, ready: window.es.readyState }));
  await until('the status at seq 3', state, (s) => s.statuses.length === 1 && s.statuses[0] === 3);
  await postEvents(srv, 3, HALFTIME, 0);
  await until('the events to half-time', state, (s) => s.events.length === HALFTIME - 3);

  // The server goes away; the EventSource keeps trying (retry: 1000) with its Last-Event-ID.
  await srv.stop('SIGTERM');
  await until('the EventSource to notice', state, (s) => s.errors >= 1);
  srv = await startServer({ dataDir, port });
  await postEvents(srv, HALFTIME, HALFTIME + 3, 0); // posted before it is back
  await until('the reconnect and the missed events', state, (s) => s.opens >= 2 && s.events.length === HALFTIME, 15000);
  await postEvents(srv, HALFTIME + 3, EVENTS.length);

  // After `stop` the server ends the stream; the reconnect with the last id gets 204, and
  // the EventSource stops for good (readyState CLOSED).
  const end = await until('stop, then a closed EventSource', state,
    (s) => s.events.length === EVENTS.length - 3 && s.ready === 2, 15000);
  const want = EVENTS.slice(3).map((e, i) => [i + 4, i + 4, e.kind]);
  assert.deepEqual(end.events, want, 'events 4..31, each once, in order, id = seq');
  assert.ok(end.statuses.length >= 2 && end.statuses[1] >= HALFTIME, `a status on each connect: ${end.statuses}`);

  assert.deepEqual(problems.filter((p) => !/EventSource|text\/event-stream/.test(p)), []);
  await srv.stop();
});

test('the page works over https:// and wss:// (TLS with the server\'s own certificate)', { timeout: 60000 }, async () => {
  const pki = tempDir('matchstream-pki-');
  execFileSync('bash', [path.join(ROOT, 'benches', 'tls_certs.sh'), pki], { stdio: 'ignore' });
  // The test's own fetches (admin API) trust that CA too.
  process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';
  const srv = await startServer({
    dataDir: tempDir('matchstream-data-'),
    tls: { cert: path.join(pki, 'cert.pem'), key: path.join(pki, 'key.pem') },
  });
  assert.match(srv.base, /^https:/);
  await createMatch(srv);
  const { page, problems } = await openBrowser({ width: 1024, height: 800 }, { insecure: true });
  const sockets = [];
  page.on('websocket', (ws) => sockets.push(ws.url()));
  await page.goto(`${srv.base}/#/match/${MID}`);
  await expectText(page, '#conn', 'Live');
  assert.ok(sockets.length >= 1 && sockets.every((u) => u.startsWith('wss://')), `the page picked wss://: ${sockets}`);
  await postEvents(srv, 0, 2);
  await expectText(page, '#score', '0–1');
  await until('the first goal line', () => feedLines(page), (l) => /Goal — Tigre, #7 Luna/.test(l[0]));
  await shot(page, 'https.png');
  assert.deepEqual(problems, []);
  await srv.stop();
});
