//! Whole-match tests of the fold: the sample match, and replaying stored history.

use super::super::*;
use super::{new_match, started};
use crate::domain::MatchScript;
use proptest::prelude::*;
use serde_json::json;

#[test]
fn the_sample_match_folds_to_one_three() {
    let script = MatchScript::sample();
    let home = script.home.clone();
    let visit = script.visit.clone();
    let mut m = Match::new(&home, &visit, &script.start_date, &script.stadium).unwrap();
    let mut n = 0;
    for (i, (kind, data)) in script.events().enumerate() {
        m.apply(kind, data, i as i64 * 10).unwrap();
        n += 1;
    }
    assert_eq!(m.seq, n);
    assert_eq!((m.home_score, m.visit_score), (1, 3));
    assert_eq!(m.period, Period::Ended);
    assert_eq!(m.period_start, None);
    let home_numbers: Vec<u32> = m.home_players.iter().map(|p| p.0).collect();
    assert!(!home_numbers.contains(&25), "red-carded Albil is gone");
    assert_eq!(m.home_players.len(), 10);
    assert_eq!(m.visit_players.len(), 11);
    for (number, name) in [(21, "Silva"), (22, "Galvan"), (23, "Benitez")] {
        assert!(m.home_players.contains(&(number, name.to_string())));
    }
    for gone in [18, 19, 11] {
        assert!(!home_numbers.contains(&gone));
    }
    for (number, name) in [(22, "Pio"), (23, "Rodales"), (24, "Carrasco")] {
        assert!(m.visit_players.contains(&(number, name.to_string())));
    }
    assert!(m.visit_players.iter().all(|p| ![6, 15, 9].contains(&p.0)));
}

/// A random event against a started match: kind, team side, player index, variants.
fn arb_event() -> impl Strategy<Value = (usize, bool, usize, u8)> {
    (
        0..EventKind::ALL.len(),
        any::<bool>(),
        0usize..14,
        any::<u8>(),
    )
}

fn build_data(m: &Match, kind: EventKind, home: bool, idx: usize, v: u8) -> Value {
    let (team, other) = if home {
        (&m.home, &m.visit)
    } else {
        (&m.visit, &m.home)
    };
    let lineup = if home {
        &m.home_players
    } else {
        &m.visit_players
    };
    let number = lineup.get(idx).map_or(idx as u32 + 40, |p| p.0);
    let player = if v & 1 == 0 {
        json!(number)
    } else {
        json!([number, "Someone"])
    };
    match kind {
        EventKind::Start => json!({
            "home_players": [[1, "A"], [2, "B"], [3, "C"]],
            "visit_players": [[1, "X"], [4, "Y"]],
        }),
        EventKind::Goal if v & 2 != 0 => {
            json!({"team": other, "player": player, "player_team": team})
        }
        EventKind::Card => {
            json!({"team": team, "player": player, "card": if v & 4 == 0 { "yellow" } else { "red" }})
        }
        EventKind::Substitution => {
            json!({"team": team, "player_out": player, "player_in": [50 + u32::from(v % 8), "New"]})
        }
        EventKind::Comment => json!({"text": "c"}),
        _ => json!({"team": team, "player": player}),
    }
}

proptest! {
    #[test]
    fn replaying_stored_history_rebuilds_the_state(
        kick_off in any::<bool>(),
        events in prop::collection::vec(arb_event(), 0..80),
    ) {
        let mut live = if kick_off { started() } else { new_match() };
        let mut history = Vec::new();
        for (i, (k, home, idx, v)) in events.into_iter().enumerate() {
            let kind = EventKind::ALL[k];
            let data = build_data(&live, kind, home, idx, v);
            let ts = 1_000 + i as i64;
            if let Ok(stored) = live.apply(kind, &data, ts) {
                history.push((kind, stored, ts));
            }
        }
        let mut replayed = new_match();
        if kick_off {
            replayed = started();
        }
        for (kind, stored, ts) in &history {
            let again = replayed.apply(*kind, stored, *ts).unwrap();
            prop_assert_eq!(&again, stored, "normalization is idempotent");
        }
        prop_assert_eq!(replayed, live);
    }
}
