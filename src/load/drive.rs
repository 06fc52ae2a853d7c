//! Driving the watched matches: creating the teams and matches through the admin API, then
//! posting events on a schedule (a replayed script at a speed, or numbered comments every
//! T ms), or, in `--raw` mode, posting numbered payloads to any publish URL.
//!
//! Every post records its send time (nanoseconds since the run's origin) just before the
//! request goes out, in the match's [`Feed`]; watchers read it to compute fan-out latency.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::domain::{match_id, EventKind, MatchScript};
use crate::feed::http_client::{HttpClient as Client, Url};

/// `base` of a feed whose starting number is not known (a passive run).
pub const UNKNOWN: u64 = u64::MAX;

/// One event the publisher posts.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// Time from the start of publishing until this event is due.
    pub at: Duration,
    /// Its kind.
    pub kind: EventKind,
    /// Its data.
    pub data: Value,
    /// Its match minute (sent as `minute` when the script gives one).
    pub minute: Option<u8>,
}

/// The events of `script` with its pauses divided by `speed`.
pub fn script_plan(script: &MatchScript, speed: f64) -> Vec<Planned> {
    let speed = if speed > 0.0 { speed } else { 1.0 };
    let mut at = Duration::ZERO;
    let mut out = Vec::new();
    for step in &script.steps {
        match step {
            crate::domain::Step::Sleep { sleep_ms } => {
                at += Duration::from_secs_f64(*sleep_ms as f64 / 1000.0 / speed)
            }
            crate::domain::Step::Event {
                event,
                data,
                minute,
            } => out.push(Planned {
                at,
                kind: *event,
                data: data.clone(),
                minute: *minute,
            }),
        }
    }
    out
}

/// `start` (with the script's lineups), `count` comments `{"text": "#K"}`, then `stop`, one
/// every `every`.
pub fn numbered_plan(script: &MatchScript, every: Duration, count: usize) -> Vec<Planned> {
    let start = script
        .events()
        .find(|(k, _)| *k == EventKind::Start)
        .map(|(_, d)| d.clone())
        .unwrap_or_else(|| json!({}));
    let mut out = vec![Planned {
        at: Duration::ZERO,
        kind: EventKind::Start,
        data: start,
        minute: None,
    }];
    for k in 1..=count {
        out.push(Planned {
            at: every * k as u32,
            kind: EventKind::Comment,
            data: json!({ "text": format!("#{k}") }),
            minute: None,
        });
    }
    out.push(Planned {
        at: every * (count as u32 + 1),
        kind: EventKind::Stop,
        data: json!({}),
        minute: None,
    });
    out
}

/// What the watchers of one match need from the publisher.
#[derive(Debug)]
pub struct Feed {
    /// The match id (or the raw subscribe URL's path).
    pub id: String,
    /// The match's `seq` before the first post ([`UNKNOWN`] in a passive run).
    pub base: AtomicU64,
    /// Send time of the event numbered `base + 1 + i`, ns since the origin (0 = not sent).
    pub sent_ns: Box<[AtomicU64]>,
    /// The last event's number once posted (0 = not known yet).
    pub final_seq: AtomicU64,
    /// The kinds to be posted, in order (the TCP line protocol is checked against them).
    pub kinds: Vec<EventKind>,
}

impl Feed {
    /// A feed for `id` that will carry `plan`.
    pub fn new(id: String, plan: &[Planned]) -> Feed {
        Feed {
            id,
            base: AtomicU64::new(UNKNOWN),
            sent_ns: plan.iter().map(|_| AtomicU64::new(0)).collect(),
            final_seq: AtomicU64::new(0),
            kinds: plan.iter().map(|p| p.kind).collect(),
        }
    }

    /// The send time of event `seq`, if it was posted by this run.
    pub fn sent_at(&self, seq: u64) -> Option<u64> {
        let base = self.base.load(Ordering::Acquire);
        if base == UNKNOWN || seq <= base {
            return None;
        }
        let t = self
            .sent_ns
            .get((seq - base - 1) as usize)?
            .load(Ordering::Acquire);
        (t != 0).then_some(t)
    }
}

/// The ids of `count` matches played from `script`: the script's own match, then the same
/// teams one day later each.
pub fn match_ids(script: &MatchScript, count: usize) -> Vec<(String, String)> {
    (0..count)
        .map(|k| {
            let date = add_days(&script.start_date, k as i64).unwrap_or(script.start_date.clone());
            (match_id(&script.home.id, &script.visit.id, &date), date)
        })
        .collect()
}

/// `YYYY-MM-DD` plus `days`.
pub fn add_days(date: &str, days: i64) -> Option<String> {
    let mut it = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (it.next()??, it.next()??, it.next()??);
    let (y, m, d) = civil_from_days(days_from_civil(y, m, d) + days);
    Some(format!("{y:04}-{m:02}-{d:02}"))
}

// Howard Hinnant's days_from_civil / civil_from_days.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn expect(resp: &crate::feed::http_client::Response, ok: &[u16], what: &str) -> io::Result<()> {
    if ok.contains(&resp.status) {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{what}: HTTP {} {}",
            resp.status,
            resp.text().trim()
        )))
    }
}

/// Creates the teams and the matches of `feeds` (a match that exists already is deleted and
/// created again: the harness owns its matches) and sets each feed's `base`.
pub fn setup(
    server: &Url,
    token: &str,
    script: &MatchScript,
    feeds: &[Feed],
    dates: &[String],
) -> io::Result<()> {
    let mut c = Client::for_url(server, Some(token.to_string()));
    for t in [&script.home, &script.visit] {
        let body = json!({ "name": t.name, "division": t.division }).to_string();
        let r = c.request("PUT", &format!("/1/team/{}", t.id), Some(&body))?;
        expect(&r, &[200, 201, 204], &format!("PUT /1/team/{}", t.id))?;
    }
    for (feed, date) in feeds.iter().zip(dates) {
        let body = json!({
            "home": script.home.id, "visit": script.visit.id,
            "start_date": date, "stadium": script.stadium,
        })
        .to_string();
        let mut r = c.request("POST", "/1/matches", Some(&body))?;
        if r.status == 409 {
            let d = c.request("DELETE", &format!("/1/match/{}", feed.id), None)?;
            expect(
                &d,
                &[200, 202, 204],
                &format!("DELETE /1/match/{} (it existed)", feed.id),
            )?;
            r = c.request("POST", "/1/matches", Some(&body))?;
        }
        expect(&r, &[200, 201], "POST /1/matches")?;
        let m = c.request("GET", &format!("/1/match/{}", feed.id), None)?;
        expect(&m, &[200], &format!("GET /1/match/{}", feed.id))?;
        let seq = serde_json::from_str::<Value>(&m.body)
            .ok()
            .and_then(|v| v.get("seq").and_then(Value::as_u64))
            .unwrap_or(0);
        feed.base.store(seq, Ordering::Release);
    }
    Ok(())
}

/// What the publisher did.
#[derive(Debug, Default, Clone)]
pub struct Published {
    /// Posts acknowledged.
    pub posts: u64,
    /// Time from sending each post to its acknowledgement, µs.
    pub ack_us: Vec<u64>,
    /// When publishing started and ended, ns since the origin.
    pub started_ns: u64,
    /// See `started_ns`.
    pub ended_ns: u64,
    /// Posts sent again after a failure (connection refused or reset, 503, a timeout).
    pub retries: u64,
    /// Posts whose answer was lost but which the server had applied (found by the match's
    /// `seq`, or a 409 to the retry carrying `"seq"`): not posted a second time.
    pub recovered: u64,
    /// Times the publisher moved to the next server.
    pub failovers: u64,
}

/// How long the publisher keeps trying one event before the run fails.
pub const POST_GIVE_UP: Duration = Duration::from_secs(120);

/// Where the publisher posts.
#[derive(Debug, Clone)]
pub enum Target {
    /// The matchstream admin API: `POST /1/match/{id}/events`.
    Admin {
        /// The servers (posts go to the first one until it fails, then the next).
        servers: Vec<Url>,
        /// The admin token.
        token: String,
    },
    /// `--raw`: POST `{"n":K,"run":R}` to this URL.
    Raw {
        /// The publish URL.
        url: Url,
    },
}

/// Posts `plan` to every feed on schedule; sets each feed's send times and final number.
/// Against the admin API each post carries its expected `seq`, and a failed post (refused,
/// reset, timed out, 503) is retried with backoff on the next server, after checking the
/// match's `seq` there: each planned event is posted exactly once.
pub fn publish(
    target: &Target,
    plan: &[Planned],
    feeds: &[Feed],
    origin: Instant,
) -> io::Result<Published> {
    let mut clients: Vec<Client> = match target {
        Target::Admin { servers, token } => servers
            .iter()
            .map(|u| Client::for_url(u, Some(token.clone())))
            .collect(),
        Target::Raw { url } => vec![Client::for_url(url, None)],
    };
    let mut current = 0usize;
    let run_id = origin.elapsed().as_nanos() as u64 ^ u64::from(std::process::id());
    let start = Instant::now();
    let mut out = Published {
        started_ns: origin.elapsed().as_nanos() as u64,
        ..Published::default()
    };
    for feed in feeds {
        if matches!(target, Target::Raw { .. }) {
            feed.base.store(0, Ordering::Release);
        }
    }
    for (i, p) in plan.iter().enumerate() {
        if let Some(wait) = (start + p.at).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        for feed in feeds {
            let base = feed.base.load(Ordering::Acquire);
            let want = base + i as u64 + 1;
            match target {
                Target::Admin { .. } => {
                    let path = format!("/1/match/{}/events", feed.id);
                    let mut body = json!({ "kind": p.kind, "data": p.data, "seq": want });
                    if let Some(minute) = p.minute {
                        body["minute"] = json!(minute);
                    }
                    let body = body.to_string();
                    let what = format!("POST {path} ({}, seq {want})", p.kind);
                    post_once(
                        &mut clients,
                        &mut current,
                        &path,
                        &body,
                        want,
                        &what,
                        |at| feed.sent_ns[i].store(at, Ordering::Release),
                        origin,
                        &mut out,
                    )?;
                }
                Target::Raw { url } => {
                    let body = json!({ "n": want, "run": run_id }).to_string();
                    let sent = Instant::now();
                    feed.sent_ns[i]
                        .store(origin.elapsed().as_nanos().max(1) as u64, Ordering::Release);
                    let r = clients[0].request("POST", &url.path, Some(&body))?;
                    out.ack_us.push(sent.elapsed().as_micros() as u64);
                    expect(&r, &[200, 201, 202, 204], &format!("POST {}", url.path))?;
                }
            }
            out.posts += 1;
        }
    }
    for feed in feeds {
        let base = feed.base.load(Ordering::Acquire);
        feed.final_seq
            .store(base + plan.len() as u64, Ordering::Release);
    }
    out.ended_ns = origin.elapsed().as_nanos() as u64;
    Ok(out)
}

/// The `seq` a JSON body names.
fn body_seq(r: &crate::feed::http_client::Response) -> Option<u64> {
    serde_json::from_str::<Value>(&r.body)
        .ok()
        .and_then(|v| v.get("seq").and_then(Value::as_u64))
}

/// Posts one event that must become number `want`, retrying over the servers until it is in
/// (at most [`POST_GIVE_UP`]). `sent` records each attempt's send time.
#[allow(clippy::too_many_arguments)]
fn post_once(
    clients: &mut [Client],
    current: &mut usize,
    path: &str,
    body: &str,
    want: u64,
    what: &str,
    sent: impl Fn(u64),
    origin: Instant,
    out: &mut Published,
) -> io::Result<()> {
    let deadline = Instant::now() + POST_GIVE_UP;
    let seed = super::seed(want);
    // Whether an earlier attempt may have been applied without our hearing of it.
    let mut uncertain = false;
    let mut last_error = String::new();
    for attempt in 0u32.. {
        if attempt > 0 {
            if Instant::now() >= deadline {
                return Err(io::Error::other(format!(
                    "{what}: gave up after {attempt} attempts over {:?}: {last_error}",
                    POST_GIVE_UP
                )));
            }
            std::thread::sleep(super::backoff(attempt - 1, seed));
            out.retries += 1;
            if clients.len() > 1 {
                *current = (*current + 1) % clients.len();
                out.failovers += 1;
            }
            // The answer to an earlier attempt was lost: was it applied after all?
            if uncertain {
                let mid_path = path.trim_end_matches("/events");
                if let Ok(r) = clients[*current].request("GET", mid_path, None) {
                    if r.status == 200 && body_seq(&r).is_some_and(|s| s >= want) {
                        out.recovered += 1;
                        return Ok(());
                    }
                }
            }
        }
        let t = Instant::now();
        sent(origin.elapsed().as_nanos().max(1) as u64);
        match clients[*current].request("POST", path, Some(body)) {
            Ok(r) if r.status == 201 => {
                out.ack_us.push(t.elapsed().as_micros() as u64);
                let seq = body_seq(&r);
                if seq != Some(want) {
                    return Err(io::Error::other(format!(
                        "{what}: got seq {seq:?}, expected {want}: someone else posts to this match"
                    )));
                }
                return Ok(());
            }
            Ok(r) if r.status == 409 && uncertain && body_seq(&r).is_some_and(|s| s >= want) => {
                out.recovered += 1;
                return Ok(());
            }
            Ok(r) if r.status == 503 || r.status == 500 || r.status == 502 => {
                // A full write queue (503 + Retry-After) refused it before writing anything.
                uncertain |= !r.text().contains("too many writes queued");
                last_error = format!("HTTP {} {}", r.status, r.text().trim());
            }
            Ok(r) => {
                return Err(io::Error::other(format!(
                    "{what}: HTTP {} {}",
                    r.status,
                    r.text().trim()
                )))
            }
            Err(e) => {
                uncertain = true;
                last_error = e.to_string();
            }
        }
    }
    unreachable!("the loop returns")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_add_across_months_and_years() {
        assert_eq!(add_days("2011-09-10", 0).unwrap(), "2011-09-10");
        assert_eq!(add_days("2011-09-30", 1).unwrap(), "2011-10-01");
        assert_eq!(add_days("2011-12-31", 1).unwrap(), "2012-01-01");
        assert_eq!(add_days("2012-02-28", 1).unwrap(), "2012-02-29");
        assert_eq!(add_days("2012-02-28", 366).unwrap(), "2013-02-28");
    }

    #[test]
    fn plans_follow_the_script_and_the_speed() {
        let s = MatchScript::sample();
        let plan = script_plan(&s, 1000.0);
        assert_eq!(plan.len(), s.events().count());
        assert_eq!(plan[0].kind, EventKind::Start);
        assert!(plan.windows(2).all(|w| w[0].at <= w[1].at));
        let n = numbered_plan(&s, Duration::from_millis(10), 3);
        let kinds: Vec<_> = n.iter().map(|p| p.kind).collect();
        use EventKind::*;
        assert_eq!(kinds, [Start, Comment, Comment, Comment, Stop]);
        assert_eq!(n[4].at, Duration::from_millis(40));
    }

    #[test]
    fn feeds_know_send_times_only_for_their_own_posts() {
        let f = Feed::new(
            "m".into(),
            &numbered_plan(&MatchScript::sample(), Duration::ZERO, 1),
        );
        assert_eq!(f.sent_at(1), None);
        f.base.store(5, Ordering::Release);
        f.sent_ns[0].store(42, Ordering::Release);
        assert_eq!(
            (f.sent_at(5), f.sent_at(6), f.sent_at(7)),
            (None, Some(42), None)
        );
        assert_eq!(
            match_ids(&MatchScript::sample(), 2)[1].0,
            "elp-tig-2011-09-11"
        );
    }
}
