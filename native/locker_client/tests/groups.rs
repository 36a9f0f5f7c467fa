//! Cluster mode's hash agrees with `locker_groups.erl`: both check the
//! vectors of `tests/group_vectors.txt` (the key's bytes and its group).

use locker_client::erl_node::term::{Atom, Float};
use locker_client::groups::{key_bytes, pick};
use locker_client::Term;

fn key(name: &str) -> Term {
    let int = Term::Int;
    let atom = Term::atom;
    match name {
        "atom_a" => atom("a"),
        "atom_utf8" => Term::Atom(Atom::new("clé")),
        "int_0" => int(0),
        "int_255" => int(255),
        "int_256" => int(256),
        "int_neg" => int(-1),
        "int_big" => int(1 << 40),
        "int_neg_big" => int(-(1 << 40)),
        "bin_empty" => Term::binary(b""),
        "bin_hello" => Term::binary(b"hello"),
        "tuple_user" => Term::tuple(vec![atom("user"), int(42)]),
        "tuple_nested" => Term::tuple(vec![
            atom("invoice"),
            Term::tuple(vec![int(2026), int(12)]),
            Term::binary(b"eu"),
        ]),
        "list_empty" => Term::List(vec![]),
        "list_atoms" => Term::List(vec![atom("a"), atom("b"), atom("c")]),
        "list_bytes" => Term::List(vec![int(1), int(2), int(3)]),
        "list_mixed" => Term::List(vec![int(1), int(300), atom("a")]),
        "float_pi" => Term::Float(Float::new(3.25)),
        "name_bin" => Term::tuple(vec![atom("name"), Term::binary(b"worker-17")]),
        k if k.starts_with("key_") => Term::tuple(vec![atom("key"), int(k[4..].parse().unwrap())]),
        other => panic!("unknown vector {other}"),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn rust_and_erlang_route_keys_alike() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/group_vectors.txt");
    let text = std::fs::read_to_string(path).expect("tests/group_vectors.txt");
    let mut n = 0;
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let f: Vec<&str> = line.split('\t').collect();
        let (name, bytes, ids, group) = (f[0], f[1], f[2], f[3]);
        let k = key(name);
        assert_eq!(hex(&key_bytes(&k)), bytes, "{name}: bytes");
        let ids: Vec<u64> = ids.split(',').map(|i| i.parse().unwrap()).collect();
        let want: u64 = group.parse().unwrap();
        assert_eq!(ids[pick(&ids, &k).unwrap()], want, "{name}: group");
        n += 1;
    }
    assert!(n >= 20);
}

#[test]
fn adding_a_group_moves_only_its_share() {
    let keys: Vec<Term> = (0..3000)
        .map(|i| Term::tuple(vec![Term::atom("k"), Term::Int(i)]))
        .collect();
    let three = [1u64, 2, 3];
    let four = [1u64, 2, 3, 4];
    let mut moved = 0;
    for k in &keys {
        let before = three[pick(&three, k).unwrap()];
        let after = four[pick(&four, k).unwrap()];
        if before != after {
            assert_eq!(after, 4, "a key moved between old groups");
            moved += 1;
        }
    }
    // About a quarter of the keys move, all to the new group.
    assert!(moved > 500 && moved < 1000, "{moved} of 3000 moved");
}
