//! `matchstream replay`: plays a match script through the admin API (the seed's
//! fake_watcher, the other way round): creates the teams and the match, then posts each
//! event after the script's pauses divided by `--speed`.

use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde_json::json;

use crate::domain::script::{MatchScript, Step};
use crate::feed::http_client::{HttpClient, Url};

/// Flags of `matchstream replay`.
#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// The match script (JSON); `sample` plays the bundled sample match.
    pub script: PathBuf,
    /// The server, `http://HOST:PORT` (or `https://HOST:PORT` with `--ca`).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// The CA certificate(s) (PEM) an `https://` server's certificate must chain to.
    #[arg(long, value_name = "PEM")]
    pub ca: Option<PathBuf>,
    /// Speed-up factor for the script's pauses (10 = ten times faster).
    #[arg(long, value_name = "X", default_value_t = 1.0)]
    pub speed: f64,
    /// The admin bearer token.
    #[arg(
        long,
        env = "MATCHSTREAM_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub admin_token: String,
    /// Print nothing but errors.
    #[arg(long)]
    pub quiet: bool,
}

/// Loads a script from a path (`sample` = the bundled one).
pub fn load_script(path: &PathBuf) -> io::Result<MatchScript> {
    if path.as_os_str() == "sample" {
        return Ok(MatchScript::sample());
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    MatchScript::parse(&text).map_err(|e| io::Error::other(format!("{}: {e}", path.display())))
}

fn expect(what: &str, response: crate::feed::http_client::Response, ok: &[u16]) -> io::Result<()> {
    if ok.contains(&response.status) {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{what}: HTTP {} {}",
            response.status, response.body
        )))
    }
}

/// Creates the script's teams and match (an existing match is fine); returns its id.
pub fn create_match(client: &mut HttpClient, script: &MatchScript) -> io::Result<String> {
    for team in [&script.home, &script.visit] {
        let body = json!({"name": team.name, "division": team.division}).to_string();
        let r = client.request("PUT", &format!("/1/team/{}", team.id), Some(&body))?;
        expect(&format!("PUT /1/team/{}", team.id), r, &[200, 201])?;
    }
    let body = json!({
        "home": script.home.id, "visit": script.visit.id,
        "start_date": script.start_date, "stadium": script.stadium,
    })
    .to_string();
    let r = client.request("POST", "/1/matches", Some(&body))?;
    expect("POST /1/matches", r, &[201, 409])?;
    Ok(script.match_id())
}

/// Runs `matchstream replay`; returns the exit status.
pub fn run(args: ReplayArgs) -> io::Result<i32> {
    if args.speed.is_nan() || args.speed <= 0.0 {
        return Err(io::Error::other("--speed must be above 0"));
    }
    let script = load_script(&args.script)?;
    let mut client = HttpClient::new(&args.server, Some(args.admin_token.clone()))?;
    match (&args.ca, Url::parse(&args.server)?.tls) {
        (Some(ca), true) => client = client.with_tls(crate::feed::tls::client_config(ca)?),
        (None, true) => {
            return Err(io::Error::other(format!(
                "{}: give the CA its certificate chains to (--ca PEM)",
                args.server
            )))
        }
        (Some(_), false) => return Err(io::Error::other("--ca needs an https:// --server")),
        (None, false) => {}
    }
    let mid = create_match(&mut client, &script)?;
    let total = script.events().count();
    let mut posted = 0;
    for step in &script.steps {
        match step {
            Step::Sleep { sleep_ms } => std::thread::sleep(Duration::from_secs_f64(
                *sleep_ms as f64 / 1000.0 / args.speed,
            )),
            Step::Event {
                event,
                data,
                minute,
            } => {
                let mut body = json!({"kind": event, "data": data});
                if let Some(minute) = minute {
                    body["minute"] = json!(minute);
                }
                let body = body.to_string();
                let r = client.request("POST", &format!("/1/match/{mid}/events"), Some(&body))?;
                let status = r.status;
                expect(&format!("event {}", event.as_str()), r, &[201])?;
                posted += 1;
                if !args.quiet {
                    eprint!(
                        "\r{mid}: {posted}/{total} events ({} → {status})   ",
                        event.as_str()
                    );
                    let _ = io::stderr().flush();
                }
            }
        }
    }
    if !args.quiet {
        eprintln!("\n{mid}: done, {posted} events posted");
    }
    Ok(0)
}
