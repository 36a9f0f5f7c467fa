//! The scenarios of `tests/coordinator_scenarios.txt` (shared with the
//! Erlang coordinator's eunit test) run against
//! `locker_core::coordinator::TwoPhase`.

use locker_core::coordinator::{Outcome, Step, TwoPhase, Vote};

const TABLE: &str = include_str!("../../../tests/coordinator_scenarios.txt");

fn vote(s: &str) -> Vote {
    match s {
        "ok" => Vote::Ok,
        "refused" => Vote::Refused,
        "missing" => Vote::Missing,
        _ => match s.strip_prefix("stale:") {
            Some(f) => Vote::StaleToken(f.parse().unwrap()),
            None => panic!("bad vote {s}"),
        },
    }
}

fn list(s: &str) -> Vec<&str> {
    s.split(',').filter(|x| !x.is_empty()).collect()
}

#[test]
fn every_scenario() {
    let mut ran = 0;
    for line in TABLE.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, rest) = line.split_once(':').unwrap();
        let (args, expected) = rest.split_once("->").unwrap();
        let mut w = 0;
        let mut masters = 0;
        let mut votes = Vec::new();
        let mut at = 1u64;
        let mut late = Vec::new();
        let mut commits = Vec::new();
        for kv in args.split_whitespace() {
            let (k, v) = kv.split_once('=').unwrap();
            match k {
                "w" => w = v.parse().unwrap(),
                "masters" => masters = v.parse().unwrap(),
                "votes" => votes = list(v),
                "at" => at = v.parse().unwrap(),
                "late" => late = list(v),
                "commits" => commits = list(v),
                _ => panic!("{name}: unknown key {k}"),
            }
        }
        let mut op = TwoPhase::new(w, masters, 0);
        let timeout = votes.last() == Some(&"timeout");
        if timeout {
            votes.pop();
        }
        for (i, v) in votes.iter().enumerate() {
            assert!(!op.phase_one_decided(), "{name}: decided before vote {i}");
            op.vote(vote(v));
        }
        assert_eq!(
            op.phase_one_decided(),
            !timeout,
            "{name}: decided after the votes"
        );
        let step = op.after_phase_one(at * 1_000);
        for v in &late {
            op.late_vote(vote(v));
        }
        for c in &commits {
            let (who, ok) = c.split_once(':').unwrap();
            op.commit(who == "m", ok == "ok");
        }
        let exp: Vec<&str> = expected.split_whitespace().collect();
        let retry = exp
            .iter()
            .find_map(|x| x.strip_prefix("retry="))
            .map(|f| f.parse::<u64>().unwrap());
        match exp[0] {
            "ok" => {
                assert_eq!(step, Step::PhaseTwo, "{name}");
                let n = |i: usize| exp[i].parse::<usize>().unwrap();
                assert_eq!(
                    op.outcome(),
                    Outcome::Ok {
                        w: n(1),
                        votes: n(2),
                        commits: n(3)
                    },
                    "{name}"
                );
            }
            "no_quorum" => {
                assert_eq!(step, Step::PhaseTwo, "{name}");
                assert_eq!(
                    op.outcome(),
                    Outcome::NoQuorum { retry_above: retry },
                    "{name}"
                );
            }
            "abort" => {
                assert_eq!(step, Step::Abort, "{name}");
                assert!(commits.is_empty(), "{name}: commits without phase two");
                assert_eq!(
                    op.outcome(),
                    Outcome::NoQuorum { retry_above: retry },
                    "{name}"
                );
            }
            other => panic!("{name}: unknown outcome {other}"),
        }
        ran += 1;
    }
    assert!(ran >= 20, "only {ran} scenarios ran");
}
