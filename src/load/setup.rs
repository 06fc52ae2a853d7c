//! Before a run: what it drives (a replayed script, numbered events, raw payloads, or nothing:
//! someone else drives the match), the matches it creates for that, and where its watchers
//! connect.

use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::drive::{self, Feed, Planned, Target};
use super::watch::{Endpoint, Protocol};
use super::LoadArgs;
use crate::domain::{EventKind, MatchScript};
use crate::feed::http_client::{HttpClient as Client, Url};

/// What to publish, where, and to which feeds.
pub(super) struct Driving {
    /// Says what drives the match, for the report.
    pub(super) mode: String,
    /// The events to post, in order, with their times.
    pub(super) plan: Vec<Planned>,
    /// The watched matches.
    pub(super) feeds: Vec<Feed>,
    /// Where to post; `None` when someone else drives the match.
    pub(super) target: Option<Target>,
}

/// How long a match created on the first server may take to be known on the others.
const CLUSTER_SPREAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Works out the feeds and the publisher from the flags; creates the matches.
pub(super) fn driving(args: &LoadArgs, run_index: usize) -> io::Result<Driving> {
    if args.raw.enabled {
        return raw(args);
    }
    if args.replay.is_none() && args.every_ms.is_none() {
        return watch_only(args);
    }
    admin(args, run_index)
}

/// `--raw`: numbered empty payloads posted to `--publish`.
fn raw(args: &LoadArgs) -> io::Result<Driving> {
    let every = Duration::from_millis(args.every_ms.unwrap_or(100));
    let plan: Vec<Planned> = (1..=args.events)
        .map(|k| Planned {
            at: every * (k as u32 - 1),
            kind: EventKind::Comment,
            data: json!({}),
            minute: None,
        })
        .collect();
    let url = Url::parse(args.raw.publish.as_deref().unwrap_or_default())?;
    let feed = Feed::new(args.raw.subscribe.clone().unwrap_or_default(), &plan);
    Ok(Driving {
        mode: "raw".into(),
        plan,
        feeds: vec![feed],
        target: Some(Target::Raw { url }),
    })
}

/// `--match ID` alone: watch a match someone else drives.
fn watch_only(args: &LoadArgs) -> io::Result<Driving> {
    let id = args.match_id.clone().unwrap_or_default();
    if args.protocol == Protocol::Tcp {
        return Err(io::Error::other(
            "--protocol tcp needs --replay or --every-ms: line-protocol blocks carry no event \
             numbers, so the harness must know what was published",
        ));
    }
    Ok(Driving {
        mode: "watch".into(),
        plan: Vec::new(),
        feeds: vec![Feed::new(id, &[])],
        target: None,
    })
}

/// `--replay SCRIPT` or `--every-ms T`: create fresh matches through the admin API (run
/// `run_index` gets its own) and drive them.
fn admin(args: &LoadArgs, run_index: usize) -> io::Result<Driving> {
    let token = args.admin_token.clone().ok_or_else(|| {
        io::Error::other("--replay / --every-ms need --admin-token to create and drive the match")
    })?;
    let script = load_script(args.replay.as_deref().unwrap_or("sample"))?;
    let (mode, plan) = schedule(args, &script);
    let matches = args.matches.max(1);
    let ids = drive::match_ids(&script, matches * (run_index + 1));
    let ids = &ids[matches * run_index..];
    if let Some(want) = &args.match_id {
        if matches == 1 && run_index == 0 && want != &ids[0].0 {
            return Err(io::Error::other(format!(
                "the script plays match {}, not --match {want}",
                ids[0].0
            )));
        }
    }
    let feeds: Vec<Feed> = ids
        .iter()
        .map(|(id, _)| Feed::new(id.clone(), &plan))
        .collect();
    let dates: Vec<String> = ids.iter().map(|(_, d)| d.clone()).collect();
    let servers = args
        .server
        .iter()
        .map(|s| tls_url(args, s))
        .collect::<io::Result<Vec<_>>>()?;
    let admin_servers = match args.admin_server.is_empty() {
        true => servers.clone(),
        false => admin_urls(args)?,
    };
    drive::setup(&admin_servers[0], &token, &script, &feeds, &dates)
        .map_err(|e| io::Error::other(format!("setting up the match: {e}")))?;
    wait_until_known(&servers, &feeds)?;
    Ok(Driving {
        mode,
        plan,
        feeds,
        target: Some(Target::Admin {
            servers: admin_servers,
            token,
        }),
    })
}

/// The events to post and the mode line: numbered comments every `--every-ms`, or the
/// script at `--speed`.
fn schedule(args: &LoadArgs, script: &MatchScript) -> (String, Vec<Planned>) {
    match args.every_ms {
        Some(ms) => (
            format!("every {ms} ms, {} events", args.events),
            drive::numbered_plan(script, Duration::from_millis(ms), args.events),
        ),
        None => (
            format!(
                "replay {} at speed {}",
                args.replay.as_deref().unwrap_or("sample"),
                args.speed
            ),
            drive::script_plan(script, args.speed),
        ),
    }
}

/// In a cluster the other nodes learn of the matches through Redis: waits until each knows
/// every match, at most [`CLUSTER_SPREAD_TIMEOUT`].
fn wait_until_known(servers: &[Url], feeds: &[Feed]) -> io::Result<()> {
    for server in &servers[1..] {
        let mut c = Client::for_url(server, None);
        let deadline = Instant::now() + CLUSTER_SPREAD_TIMEOUT;
        for feed in feeds {
            let path = format!("/1/match/{}", feed.id);
            while !c.request("GET", &path, None).is_ok_and(|r| r.status == 200) {
                if Instant::now() >= deadline {
                    return Err(io::Error::other(format!(
                        "{}: match {} not known there 10 s after creating it on {}",
                        server.host, feed.id, servers[0].host
                    )));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    Ok(())
}

/// `--server` URL `s`, with the `--tls` client settings when given.
pub(super) fn tls_url(args: &LoadArgs, s: &str) -> io::Result<Url> {
    let mut url = Url::parse(s)?;
    if let Some(tls) = args.tls_client()? {
        url.tls = true;
        url.tls_config = Some(tls.config);
    }
    Ok(url)
}

/// The `--admin-server` URLs: `https://` ones speak TLS with the harness's client settings.
fn admin_urls(args: &LoadArgs) -> io::Result<Vec<Url>> {
    args.admin_server
        .iter()
        .map(|s| match Url::parse(s)? {
            url if url.tls => tls_url(args, s),
            url => Ok(url),
        })
        .collect()
}

fn load_script(spec: &str) -> io::Result<MatchScript> {
    if spec == "sample" {
        return Ok(MatchScript::sample());
    }
    let text = std::fs::read_to_string(PathBuf::from(spec))
        .map_err(|e| io::Error::other(format!("{spec}: {e}")))?;
    MatchScript::parse(&text).map_err(|e| io::Error::other(format!("{spec}: {e}")))
}

/// Where the watchers connect: the servers and the path.
pub(super) fn watch_target(args: &LoadArgs) -> io::Result<(Vec<Endpoint>, String)> {
    let endpoint = |u: Url| Endpoint {
        addr: u.addr,
        host: u.host,
    };
    if args.raw.enabled {
        let u = Url::parse(args.raw.subscribe.as_deref().unwrap_or_default())?;
        let path = u.path.clone();
        return Ok((vec![endpoint(u)], path));
    }
    match args.protocol {
        Protocol::Ws | Protocol::Sse => {
            let servers = args
                .server
                .iter()
                .map(|s| Url::parse(s).map(endpoint))
                .collect::<io::Result<Vec<_>>>()?;
            Ok((servers, args.path.clone()))
        }
        Protocol::Tcp => {
            let server = tls_url(args, args.primary_server())?;
            if let Some(t) = &args.tuning.tcp_server {
                let (addr, host) = super::server_addr(t)?;
                return Ok((vec![Endpoint { addr, host }], String::new()));
            }
            let mut c = Client::for_url(&server, None);
            let r = c.request("GET", "/1/checkin", None)?;
            let port = serde_json::from_str::<Value>(&r.body)
                .ok()
                .and_then(|v| v.get("port")?.as_u64())
                .ok_or_else(|| {
                    io::Error::other("GET /1/checkin gave no port: pass --tcp-server")
                })?;
            let addr = std::net::SocketAddr::new(server.addr.ip(), port as u16);
            Ok((
                vec![Endpoint {
                    addr,
                    host: addr.to_string(),
                }],
                String::new(),
            ))
        }
    }
}
