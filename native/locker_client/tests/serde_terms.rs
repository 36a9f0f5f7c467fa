//! Rust values to Erlang terms and back through serde.

use std::collections::BTreeMap;

use locker_client::{from_term, to_term, Error, RawTerm, Term};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
enum Shape {
    Empty,
    Circle(f64),
    Rect(u32, u32),
    Named { label: String, sides: u8 },
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Job {
    id: u64,
    owner: Option<String>,
    tags: Vec<String>,
    shape: Shape,
    ok: bool,
    weights: BTreeMap<String, i32>,
    pair: (i8, char),
}

fn round_trip<T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(v: T) {
    let t = to_term(&v).unwrap();
    let back: T = from_term(&t).unwrap();
    assert_eq!(back, v, "via {t}");
}

#[test]
fn values_round_trip() {
    round_trip(0u8);
    round_trip(-5i64);
    round_trip(u64::MAX);
    round_trip(i128::MIN);
    round_trip(u128::MAX);
    round_trip(1.5f64);
    round_trip(String::from("héllo"));
    round_trip(vec![1u32, 2, 3]);
    round_trip(Some(3u8));
    round_trip(None::<u8>);
    round_trip(());
    round_trip((1u8, String::from("x"), true));
    for shape in [
        Shape::Empty,
        Shape::Circle(2.0),
        Shape::Rect(3, 4),
        Shape::Named {
            label: "tri".into(),
            sides: 3,
        },
    ] {
        round_trip(shape);
    }
    round_trip(Job {
        id: 42,
        owner: Some("web-1".into()),
        tags: vec!["a".into(), "b".into()],
        shape: Shape::Rect(1, 2),
        ok: true,
        weights: [("x".to_string(), -1), ("y".to_string(), 2)].into(),
        pair: (-3, 'é'),
    });
}

#[test]
fn terms_look_like_erlang_code_writes_them() {
    assert_eq!(to_term(&true).unwrap(), Term::atom("true"));
    assert_eq!(to_term(&None::<u8>).unwrap(), Term::atom("undefined"));
    assert_eq!(to_term("job").unwrap(), Term::binary(b"job"));
    assert_eq!(to_term(&Shape::Empty).unwrap(), Term::atom("Empty"));
    assert_eq!(
        to_term(&Shape::Circle(1.0)).unwrap(),
        Term::tuple(vec![Term::atom("Circle"), Term::Float(erl_float(1.0))])
    );
    assert_eq!(
        to_term(&Shape::Rect(1, 2)).unwrap(),
        Term::tuple(vec![Term::atom("Rect"), Term::Int(1), Term::Int(2)])
    );
    assert_eq!(
        to_term(&vec![1, 2]).unwrap(),
        Term::List(vec![Term::Int(1), Term::Int(2)])
    );
    #[derive(Serialize)]
    struct P {
        x: i32,
    }
    assert_eq!(
        to_term(&P { x: 1 }).unwrap(),
        Term::map(vec![(Term::atom("x"), Term::Int(1))])
    );
}

fn erl_float(f: f64) -> erl_node::term::Float {
    erl_node::term::Float::new(f)
}

#[test]
fn erlang_forms_decode() {
    // An Elixir `nil`, atoms for strings and enum variants, binary keys.
    assert_eq!(from_term::<Option<u8>>(&Term::atom("nil")).unwrap(), None);
    assert_eq!(from_term::<String>(&Term::atom("ok")).unwrap(), "ok");
    assert_eq!(
        from_term::<Shape>(&Term::binary(b"Empty")).unwrap(),
        Shape::Empty
    );
    #[derive(Deserialize, Debug, PartialEq)]
    struct P {
        x: i32,
    }
    assert_eq!(
        from_term::<P>(&Term::map(vec![(Term::binary(b"x"), Term::Int(1))])).unwrap(),
        P { x: 1 }
    );
    // A list of bytes from a binary.
    assert_eq!(
        from_term::<Vec<u8>>(&Term::binary(&[1, 2])).unwrap(),
        vec![1, 2]
    );
}

#[test]
fn mismatches_are_errors_not_panics() {
    let e = from_term::<u8>(&Term::Int(256)).unwrap_err();
    assert!(matches!(e, Error::Decode(_)), "{e}");
    assert!(from_term::<bool>(&Term::atom("yes")).is_err());
    assert!(from_term::<String>(&Term::binary(&[0xff, 0xfe])).is_err());
    assert!(from_term::<Shape>(&Term::atom("Hexagon")).is_err());
    assert!(from_term::<Shape>(&Term::tuple(vec![Term::atom("Circle")])).is_err());
    assert!(matches!(to_term(&f64::NAN), Err(Error::Encode(_))));
    // A pid has no Rust type but RawTerm.
    let pid = Term::pid(locker_client::Pid {
        node: locker_client::Atom::new("a@h"),
        id: 1,
        serial: 0,
        creation: 1,
    });
    assert!(from_term::<String>(&pid).is_err());
    assert_eq!(from_term::<RawTerm>(&pid).unwrap(), RawTerm(pid.clone()));
}

#[test]
fn raw_terms_pass_inside_other_values() {
    let pid = Term::pid(locker_client::Pid {
        node: locker_client::Atom::new("a@h"),
        id: 7,
        serial: 0,
        creation: 3,
    });
    let v = (RawTerm(pid.clone()), 5u8);
    let t = to_term(&v).unwrap();
    assert_eq!(t, Term::tuple(vec![pid.clone(), Term::Int(5)]));
    let back: (RawTerm, u8) = from_term(&t).unwrap();
    assert_eq!(back, v);
}
