//! Tests of the fold: every kind, every refusal, the sample match and replay.

use super::*;
use crate::domain::Team;
use serde_json::json;

pub(super) fn new_match() -> Match {
    let h = Team::new("elp", "Estudiantes", "Primera A").unwrap();
    let v = Team::new("tig", "Tigre", "Primera A").unwrap();
    Match::new(&h, &v, "2011-09-10", "Unknown Stadium").unwrap()
}

pub(super) fn started() -> Match {
    let mut m = new_match();
    let data = json!({
        "home_players": [[25, "Albil"], [18, "Fernandez"], [9, "Boselli"]],
        "visit_players": [[7, "Luna"], [6, "Martinez"], [10, "Morales"]],
    });
    m.apply(EventKind::Start, &data, 100).unwrap();
    m
}

fn ok(m: &mut Match, kind: EventKind, data: Value) -> Value {
    let seq = m.seq;
    let out = m.apply(kind, &data, 1_000 + seq as i64).unwrap();
    assert_eq!(m.seq, seq + 1);
    out
}

/// Applies an event that must be refused; checks that nothing changed.
fn refused(m: &mut Match, kind: EventKind, data: Value) -> Rejection {
    let before = m.clone();
    let err = m.apply(kind, &data, 9_999).unwrap_err();
    assert_eq!(*m, before, "a refused {kind} changed the match");
    err
}

fn not_on_field(team: &str, number: u32) -> Rejection {
    Rejection::NotOnField {
        team: team.into(),
        number,
    }
}

#[test]
fn start_sets_lineups_scores_and_period() {
    let m = started();
    assert_eq!(m.period, Period::First);
    assert_eq!(m.period_start, Some(100));
    assert_eq!((m.home_score, m.visit_score), (0, 0));
    assert_eq!(m.home_players[0], (25, "Albil".to_string()));
    assert_eq!(m.visit_players.len(), 3);
    assert_eq!((m.seq, m.last_ts), (1, 100));
}

#[test]
fn start_without_lineups_stores_empty_ones() {
    let mut m = new_match();
    let out = ok(&mut m, EventKind::Start, json!({"note": "x"}));
    assert_eq!(
        out,
        json!({"note": "x", "home_players": [], "visit_players": []})
    );
    assert!(m.home_players.is_empty());
}

#[test]
fn start_refusals() {
    let mut m = new_match();
    let bad = json!({"home_players": [[1, "A"], [2]]});
    assert!(matches!(
        refused(&mut m, EventKind::Start, bad),
        Rejection::InvalidField {
            field: "home_players",
            ..
        }
    ));
    let bad = json!({"visit_players": 3});
    assert!(matches!(
        refused(&mut m, EventKind::Start, bad),
        Rejection::InvalidField {
            field: "visit_players",
            ..
        }
    ));
    let dup = json!({"home_players": [[1, "A"], [1, "B"]]});
    assert_eq!(
        refused(&mut m, EventKind::Start, dup),
        Rejection::DuplicateNumber {
            field: "home_players",
            number: 1
        }
    );
    let mut m = started();
    assert_eq!(
        refused(&mut m, EventKind::Start, json!({})),
        Rejection::AlreadyStarted
    );
}

#[test]
fn data_must_be_an_object() {
    let mut m = started();
    for data in [json!(null), json!([1]), json!("goal"), json!(3)] {
        assert_eq!(
            refused(&mut m, EventKind::Shot, data),
            Rejection::DataNotObject
        );
    }
}

#[test]
fn nothing_but_start_or_comment_before_start() {
    for kind in EventKind::ALL {
        let mut m = new_match();
        match kind {
            EventKind::Start | EventKind::Comment => {
                ok(&mut m, kind, json!({}));
            }
            _ => assert_eq!(
                refused(&mut m, kind, json!({})),
                Rejection::NotStarted(kind)
            ),
        }
    }
}

#[test]
fn comments_are_allowed_any_time_and_stored_as_given() {
    let mut m = new_match();
    let data = json!({"text": "hello", "player": "anyone", "team": "nobody"});
    assert_eq!(ok(&mut m, EventKind::Comment, data.clone()), data);
    assert_eq!(m.period, Period::NotStarted);
    let mut m = started();
    ok(&mut m, EventKind::Stop, json!({}));
    assert_eq!(ok(&mut m, EventKind::Comment, data.clone()), data);
    assert_eq!(m.period, Period::Ended);
}

#[test]
fn periods_move_forward() {
    let mut m = started();
    ok(&mut m, EventKind::Halftime, json!({}));
    assert_eq!((m.period, m.period_start), (Period::Halftime, None));
    ok(&mut m, EventKind::Continue, json!({}));
    assert_eq!(m.period, Period::Last);
    assert_eq!(m.period_start, Some(m.last_ts));
    ok(&mut m, EventKind::Penalties, json!({}));
    assert_eq!(m.period, Period::Penalties);
    assert_eq!(m.period_start, Some(m.last_ts));
    ok(&mut m, EventKind::Stop, json!({}));
    assert_eq!((m.period, m.period_start), (Period::Ended, None));
    assert!(m.is_ended());
}

#[test]
fn stop_is_allowed_from_every_running_period() {
    let paths: [&[EventKind]; 4] = [
        &[],
        &[EventKind::Halftime],
        &[EventKind::Halftime, EventKind::Continue],
        &[
            EventKind::Halftime,
            EventKind::Continue,
            EventKind::Penalties,
        ],
    ];
    for path in paths {
        let mut m = started();
        for k in path {
            ok(&mut m, *k, json!({}));
        }
        ok(&mut m, EventKind::Stop, json!({}));
        assert_eq!(m.period, Period::Ended);
    }
}

#[test]
fn out_of_order_periods_are_refused() {
    let wrong = |kind, period| Rejection::WrongPeriod { kind, period };
    let mut m = started();
    assert_eq!(
        refused(&mut m, EventKind::Continue, json!({})),
        wrong(EventKind::Continue, "first")
    );
    assert_eq!(
        refused(&mut m, EventKind::Penalties, json!({})),
        wrong(EventKind::Penalties, "first")
    );
    ok(&mut m, EventKind::Halftime, json!({}));
    assert_eq!(
        refused(&mut m, EventKind::Halftime, json!({})),
        wrong(EventKind::Halftime, "halftime")
    );
    ok(&mut m, EventKind::Continue, json!({}));
    assert_eq!(
        refused(&mut m, EventKind::Halftime, json!({})),
        wrong(EventKind::Halftime, "last")
    );
}

#[test]
fn nothing_but_comment_after_stop() {
    let mut m = started();
    ok(&mut m, EventKind::Stop, json!({}));
    for kind in EventKind::ALL {
        match kind {
            EventKind::Comment => {}
            EventKind::Start => {
                assert_eq!(refused(&mut m, kind, json!({})), Rejection::AlreadyStarted)
            }
            _ => assert_eq!(refused(&mut m, kind, json!({})), Rejection::Ended(kind)),
        }
    }
}

#[test]
fn goal_scores_for_team_and_names_the_player() {
    let mut m = started();
    let out = ok(&mut m, EventKind::Goal, json!({"team": "tig", "player": 7}));
    assert_eq!(out, json!({"team": "tig", "player": [7, "Luna"]}));
    assert_eq!((m.home_score, m.visit_score), (0, 1));
    ok(&mut m, EventKind::Goal, json!({"team": "elp"}));
    assert_eq!((m.home_score, m.visit_score), (1, 1));
}

#[test]
fn own_goal_names_the_players_own_team() {
    let mut m = started();
    let data = json!({"team": "elp", "player": 7, "player_team": "tig"});
    let out = ok(&mut m, EventKind::Goal, data);
    assert_eq!(
        out,
        json!({"team": "elp", "player": [7, "Luna"], "player_team": "tig"})
    );
    assert_eq!((m.home_score, m.visit_score), (1, 0));
    // elp has no #7: looked up on tig's lineup only.
    let data = json!({"team": "tig", "player": 7, "player_team": "elp"});
    assert_eq!(
        refused(&mut m, EventKind::Goal, data),
        not_on_field("elp", 7)
    );
}

#[test]
fn goal_refusals() {
    let mut m = started();
    assert_eq!(
        refused(&mut m, EventKind::Goal, json!({"player": 7})),
        Rejection::MissingField("team")
    );
    assert_eq!(
        refused(&mut m, EventKind::Goal, json!({"team": "boc"})),
        Rejection::UnknownTeam("boc".into())
    );
    assert_eq!(
        refused(
            &mut m,
            EventKind::Goal,
            json!({"team": "tig", "player_team": "riv"})
        ),
        Rejection::UnknownTeam("riv".into())
    );
    assert_eq!(
        refused(
            &mut m,
            EventKind::Goal,
            json!({"team": "tig", "player": 99})
        ),
        not_on_field("tig", 99)
    );
    assert!(matches!(
        refused(&mut m, EventKind::Goal, json!({"team": 3})),
        Rejection::InvalidField { field: "team", .. }
    ));
    assert!(matches!(
        refused(
            &mut m,
            EventKind::Goal,
            json!({"team": "tig", "player": "Luna"})
        ),
        Rejection::InvalidField {
            field: "player",
            ..
        }
    ));
}

#[test]
fn named_player_off_the_lineup_is_kept_as_given() {
    let mut m = started();
    let out = ok(
        &mut m,
        EventKind::Goal,
        json!({"team": "tig", "player": [99, "Nobody"]}),
    );
    assert_eq!(out["player"], json!([99, "Nobody"]));
    // On the lineup, the lineup's name wins.
    let out = ok(
        &mut m,
        EventKind::Shot,
        json!({"team": "tig", "player": [7, "L."]}),
    );
    assert_eq!(out["player"], json!([7, "Luna"]));
}

#[test]
fn yellow_card_validates_only() {
    let mut m = started();
    let out = ok(
        &mut m,
        EventKind::Card,
        json!({"card": "yellow", "team": "elp", "player": 9}),
    );
    assert_eq!(
        out,
        json!({"card": "yellow", "team": "elp", "player": [9, "Boselli"]})
    );
    assert_eq!(m.home_players.len(), 3);
}

#[test]
fn red_card_sends_the_player_off() {
    let mut m = started();
    let out = ok(
        &mut m,
        EventKind::Card,
        json!({"card": "red", "team": "elp", "player": 25}),
    );
    assert_eq!(out["player"], json!([25, "Albil"]));
    assert!(m.home_players.iter().all(|p| p.0 != 25));
    assert_eq!(m.home_players.len(), 2);
    // Gone: a second red card for him is refused, and so is naming him by number.
    let again = json!({"card": "red", "team": "elp", "player": [25, "Albil"]});
    assert_eq!(
        refused(&mut m, EventKind::Card, again),
        not_on_field("elp", 25)
    );
    let shot = json!({"team": "elp", "player": 25});
    assert_eq!(
        refused(&mut m, EventKind::Shot, shot),
        not_on_field("elp", 25)
    );
}

#[test]
fn card_refusals() {
    let mut m = started();
    let cases = [
        (
            json!({"card": "red", "team": "tig", "player": 25}),
            not_on_field("tig", 25),
        ),
        (
            json!({"card": "blue", "team": "tig", "player": 7}),
            Rejection::InvalidCard("blue".into()),
        ),
        (
            json!({"card": 1, "team": "tig", "player": 7}),
            Rejection::InvalidCard("1".into()),
        ),
        (
            json!({"team": "tig", "player": 7}),
            Rejection::MissingField("card"),
        ),
        (
            json!({"card": "red", "team": "tig"}),
            Rejection::MissingField("player"),
        ),
        (
            json!({"card": "yellow", "player": 7}),
            Rejection::MissingField("team"),
        ),
        (
            json!({"card": "red", "team": "xyz", "player": 7}),
            Rejection::UnknownTeam("xyz".into()),
        ),
    ];
    for (data, want) in cases {
        assert_eq!(refused(&mut m, EventKind::Card, data), want);
    }
}

#[test]
fn substitution_swaps_players() {
    let mut m = started();
    let data = json!({"team": "elp", "player_in": [21, "Silva"], "player_out": 18});
    let out = ok(&mut m, EventKind::Substitution, data);
    assert_eq!(
        out,
        json!({"team": "elp", "player_in": [21, "Silva"], "player_out": [18, "Fernandez"]})
    );
    assert_eq!(m.home_players[1], (21, "Silva".to_string()));
    let data = json!({"team": "tig", "player_in": 22, "player_out": [6, "Martinez"]});
    let out = ok(&mut m, EventKind::Substitution, data);
    assert_eq!(out["player_in"], json!([22, ""]));
    assert_eq!(m.visit_players[1], (22, String::new()));
}

#[test]
fn substitution_refusals() {
    let mut m = started();
    let cases = [
        (
            json!({"team": "elp", "player_in": 21, "player_out": 7}),
            not_on_field("elp", 7),
        ),
        (
            json!({"team": "elp", "player_in": [9, "X"], "player_out": 18}),
            Rejection::AlreadyOnField {
                team: "elp".into(),
                number: 9,
            },
        ),
        (
            json!({"team": "elp", "player_out": 18}),
            Rejection::MissingField("player_in"),
        ),
        (
            json!({"team": "elp", "player_in": 21}),
            Rejection::MissingField("player_out"),
        ),
        (
            json!({"player_in": 21, "player_out": 18}),
            Rejection::MissingField("team"),
        ),
        (
            json!({"team": "x", "player_in": 21, "player_out": 18}),
            Rejection::UnknownTeam("x".into()),
        ),
    ];
    for (data, want) in cases {
        assert_eq!(refused(&mut m, EventKind::Substitution, data), want);
    }
    let bad = json!({"team": "elp", "player_in": [21], "player_out": 18});
    assert!(matches!(
        refused(&mut m, EventKind::Substitution, bad),
        Rejection::InvalidField {
            field: "player_in",
            ..
        }
    ));
}

const PLAY_KINDS: [EventKind; 9] = [
    EventKind::Shot,
    EventKind::Save,
    EventKind::Corner,
    EventKind::Goalkick,
    EventKind::Offside,
    EventKind::Foul,
    EventKind::Penalty,
    EventKind::Freekick,
    EventKind::Throwin,
];

#[test]
fn play_events_normalize_team_and_player() {
    for kind in PLAY_KINDS {
        let mut m = started();
        let before = (m.home_score, m.visit_score, m.home_players.clone());
        let out = ok(&mut m, kind, json!({"team": "tig", "player": 10, "x": 1}));
        assert_eq!(
            out,
            json!({"team": "tig", "player": [10, "Morales"], "x": 1})
        );
        assert_eq!(ok(&mut m, kind, json!({})), json!({}));
        assert_eq!(
            ok(&mut m, kind, json!({"team": "elp"})),
            json!({"team": "elp"})
        );
        assert_eq!(
            before,
            (m.home_score, m.visit_score, m.home_players.clone())
        );
    }
}

#[test]
fn play_event_refusals() {
    for kind in PLAY_KINDS {
        let mut m = started();
        assert_eq!(
            refused(&mut m, kind, json!({"player": 10})),
            Rejection::MissingField("team")
        );
        assert_eq!(
            refused(&mut m, kind, json!({"team": "riv", "player": 10})),
            Rejection::UnknownTeam("riv".into())
        );
        assert_eq!(
            refused(&mut m, kind, json!({"team": "elp", "player": 10})),
            not_on_field("elp", 10)
        );
        assert!(matches!(
            refused(&mut m, kind, json!({"team": "elp", "player": -1})),
            Rejection::InvalidField {
                field: "player",
                ..
            }
        ));
    }
}

#[test]
fn rejections_read_well() {
    assert_eq!(
        Rejection::UnknownTeam("boc".into()).to_string(),
        "unknown team: boc"
    );
    assert_eq!(
        not_on_field("elp", 25).to_string(),
        "player 25 of elp is not on the field"
    );
    assert_eq!(
        Rejection::Ended(EventKind::Goal).to_string(),
        "match has ended: only comments may follow stop, got goal"
    );
    assert_eq!(
        Rejection::WrongPeriod {
            kind: EventKind::Continue,
            period: "first"
        }
        .to_string(),
        "continue is not allowed during period first"
    );
}

#[path = "fold_replay_tests.rs"]
mod replay;
