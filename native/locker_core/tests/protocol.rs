//! The typed protocol layer over a toy term type: decoding every request
//! and log entry, the lease-length and token rules, every reply's shape,
//! and `Engine::handle`.

use locker_core::protocol::{
    millis, tag_token, Decode, DecodeError, Encode, Expected, Integer, Name, Op, Refusal, Reply,
    Request, WireTerm, FOREVER_MS,
};
use locker_core::{Engine, LogEntry, Wake};

#[derive(Clone, Debug, PartialEq)]
enum T {
    Atom(String),
    Int(i128),
    Float(f64),
    Tuple(Vec<T>),
    Bin(Vec<u8>),
}

fn a(s: &str) -> T {
    T::Atom(s.into())
}

fn t(items: Vec<T>) -> T {
    T::Tuple(items)
}

impl WireTerm for T {
    fn is_atom(&self, name: Name) -> bool {
        matches!(self, T::Atom(x) if x == name.as_str())
    }
    fn integer(&self) -> Option<Integer> {
        match self {
            T::Int(i) if *i < 0 && *i >= i64::MIN as i128 => Some(Integer::Negative),
            T::Int(i) if *i >= 0 && *i <= u64::MAX as i128 => Some(Integer::Unsigned(*i as u64)),
            T::Int(_) => Some(Integer::Huge),
            _ => None,
        }
    }
    fn float(&self) -> Option<f64> {
        match self {
            T::Float(f) => Some(*f),
            _ => None,
        }
    }
    fn with_tuple<R>(&self, f: impl FnOnce(&[Self]) -> R) -> Option<R> {
        match self {
            T::Tuple(items) => Some(f(items)),
            _ => None,
        }
    }
}

/// Keys, values and tags are the terms themselves.
struct Same;

impl Decode<T> for Same {
    type Key = String;
    type Value = String;
    type Tag = String;
    fn key(&self, t: &T) -> String {
        format!("{t:?}")
    }
    fn value(&self, t: &T) -> String {
        format!("{t:?}")
    }
    fn tag(&self, t: &T) -> String {
        format!("{t:?}")
    }
}

impl Encode for Same {
    type Term = T;
    type Key = String;
    type Value = String;
    fn atom(&self, name: Name) -> T {
        a(name.as_str())
    }
    fn tuple(&self, items: &[T]) -> T {
        T::Tuple(items.to_vec())
    }
    fn uint(&self, n: u64) -> T {
        T::Int(n as i128)
    }
    fn key(&self, k: &String) -> T {
        T::Bin(k.as_bytes().to_vec())
    }
    fn value(&self, v: &String) -> T {
        T::Bin(v.as_bytes().to_vec())
    }
}

type Req = Request<String, String, String>;

fn decode(req: T) -> Result<Option<Req>, DecodeError> {
    Request::decode_tuple(&req, &Same)
}

fn s(t: &T) -> String {
    format!("{t:?}")
}

#[test]
fn lease_lengths() {
    let cases = [
        (T::Int(-5), Some(0)),
        (T::Int(0), Some(0)),
        (T::Int(100), Some(100)),
        (T::Int(u64::MAX as i128), Some(u64::MAX)),
        (T::Int(u64::MAX as i128 + 1), Some(FOREVER_MS)),
        (T::Int(i64::MIN as i128 - 1), Some(FOREVER_MS)),
        (T::Float(1.9), Some(1)),
        (T::Float(-0.0), Some(0)),
        (T::Float(-3.0), Some(0)),
        (T::Float(f64::NAN), Some(0)),
        (T::Float(1e300), Some((u64::MAX as f64 / 2.0) as u64)),
        (a("infinity"), Some(FOREVER_MS)),
        (a("x"), None),
        (T::Bin(b"1".to_vec()), None),
        (t(vec![]), None),
    ];
    for (term, want) in cases {
        assert_eq!(millis(&term), want, "{term:?}");
    }
}

#[test]
fn token_tags() {
    let tok = |n: T| t(vec![a("$locker_token"), a("ref"), n]);
    assert_eq!(tag_token(&tok(T::Int(7))), 7);
    assert_eq!(tag_token(&tok(T::Int(u64::MAX as i128))), u64::MAX);
    assert_eq!(tag_token(&tok(T::Int(-7))), 0);
    assert_eq!(tag_token(&tok(T::Int(1 << 70))), 0);
    assert_eq!(tag_token(&tok(T::Float(7.0))), 0);
    assert_eq!(tag_token(&t(vec![a("other"), a("ref"), T::Int(7)])), 0);
    assert_eq!(tag_token(&t(vec![a("$locker_token"), T::Int(7)])), 0);
    assert_eq!(tag_token(&a("$locker_token")), 0);
}

#[test]
fn every_request_decodes() {
    let tag = t(vec![a("$locker_token"), a("r"), T::Int(9)]);
    let (k, v) = (T::Bin(b"k".to_vec()), T::Int(1));
    assert_eq!(
        decode(t(vec![
            a("get_write_lock"),
            k.clone(),
            v.clone(),
            tag.clone()
        ])),
        Ok(Some(Request::GetWriteLock {
            key: s(&k),
            expected: Expected::Value(s(&v)),
            tag: s(&tag),
            token: 9
        }))
    );
    assert_eq!(
        decode(t(vec![
            a("get_write_lock"),
            k.clone(),
            a("not_found"),
            a("t")
        ])),
        Ok(Some(Request::GetWriteLock {
            key: s(&k),
            expected: Expected::ValueOrAbsent(s(&a("not_found"))),
            tag: s(&a("t")),
            token: 0
        }))
    );
    assert_eq!(
        decode(t(vec![a("release_write_lock"), tag.clone()])),
        Ok(Some(Request::ReleaseWriteLock { tag: s(&tag) }))
    );
    for (op, want) in [("write", true), ("extend_lease", false)] {
        let r = decode(t(vec![a(op), tag.clone(), k.clone(), v.clone(), T::Int(5)]));
        let (tag, key, value) = (s(&tag), s(&k), s(&v));
        let expected = if want {
            Request::Write {
                tag,
                key,
                value,
                lease_ms: 5,
                token: 9,
            }
        } else {
            Request::ExtendLease {
                tag,
                key,
                value,
                lease_ms: 5,
                token: 9,
            }
        };
        assert_eq!(r, Ok(Some(expected)));
    }
    assert_eq!(
        decode(t(vec![a("update"), a("t"), k.clone(), v.clone()])),
        Ok(Some(Request::Update {
            tag: s(&a("t")),
            key: s(&k),
            value: s(&v)
        }))
    );
    assert_eq!(
        decode(t(vec![a("release"), k.clone(), v.clone(), tag.clone()])),
        Ok(Some(Request::Release {
            key: s(&k),
            value: s(&v),
            tag: s(&tag),
            token: 9
        }))
    );
    let mut w = decode(t(vec![a("wait_for"), k.clone(), a("infinity")]))
        .unwrap()
        .unwrap();
    w.set_waiter(4);
    assert_eq!(
        w,
        Request::WaitFor {
            key: s(&k),
            timeout_ms: FOREVER_MS,
            waiter: 4
        }
    );
    assert_eq!(
        decode(t(vec![a("wait_for_release"), k.clone(), T::Int(3)])),
        Ok(Some(Request::WaitForRelease {
            key: s(&k),
            timeout_ms: 3,
            waiter: 0
        }))
    );
}

#[test]
fn bad_requests() {
    assert_eq!(
        decode(t(vec![a("write"), a("t"), a("k"), a("v")])),
        Err(DecodeError::Unknown)
    );
    assert_eq!(
        decode(t(vec![a("write"), a("t"), a("k"), a("v"), a("soon")])),
        Err(DecodeError::BadArg)
    );
    assert_eq!(
        decode(t(vec![a("wait_for"), a("k"), T::Bin(vec![])])),
        Err(DecodeError::BadArg)
    );
    assert_eq!(decode(t(vec![a("set_w"), T::Int(2)])), Ok(None));
    assert_eq!(decode(t(vec![])), Ok(None));
    assert_eq!(decode(a("get_debug_state")), Ok(None));
    assert_eq!(decode(t(vec![T::Int(1), a("x")])), Ok(None));
    for op in Op::ALL {
        assert_eq!(Op::of(&a(op.name().as_str())), Some(op));
        let short =
            Request::<String, String, String>::decode(op, &vec![a("x"); op.arity() - 1], &Same);
        assert_eq!(short, Err(DecodeError::Unknown), "{op:?}");
    }
}

#[test]
fn replies() {
    let e = &Same;
    let err = |r: T| t(vec![a("error"), r]);
    let cases: Vec<(Reply<String>, T)> = vec![
        (Reply::Ok, a("ok")),
        (
            Reply::Value("v".into()),
            t(vec![a("ok"), T::Bin(b"v".to_vec())]),
        ),
        (Reply::Released, t(vec![a("ok"), a("released")])),
        (Reply::Pending, a("pending")),
        (
            Reply::Refused(Refusal::AlreadyLocked),
            err(a("already_locked")),
        ),
        (
            Reply::Refused(Refusal::NotExpectedValue),
            err(a("not_expected_value")),
        ),
        (Reply::Refused(Refusal::NoPromise), err(a("no_promise"))),
        (Reply::Refused(Refusal::NotOwner), err(a("not_owner"))),
        (Reply::Refused(Refusal::NotFound), err(a("not_found"))),
        (
            Reply::Refused(Refusal::StaleToken(12)),
            err(t(vec![a("stale_token"), T::Int(12)])),
        ),
    ];
    for (reply, want) in cases {
        assert_eq!(reply.encode(e), want, "{reply:?}");
    }
    assert_eq!(
        Wake::Value(3, "v".to_string()).into_reply(),
        (3, Reply::Value("v".into()))
    );
    assert_eq!(
        Wake::<String>::Released(4).into_reply(),
        (4, Reply::Released)
    );
}

#[test]
fn log_entries_round_trip() {
    let entries = [
        LogEntry::Write {
            key: "k".to_string(),
            value: "v".to_string(),
            lease_ms: 7,
        },
        LogEntry::ExtendLease {
            key: "k".into(),
            value: "v".into(),
            lease_ms: FOREVER_MS,
        },
        LogEntry::Update {
            key: "k".into(),
            value: "w".into(),
        },
        LogEntry::Release { key: "k".into() },
    ];
    /// Decodes a binary back to its text.
    struct Text;
    impl Decode<T> for Text {
        type Key = String;
        type Value = String;
        type Tag = String;
        fn key(&self, t: &T) -> String {
            match t {
                T::Bin(b) => String::from_utf8(b.clone()).unwrap(),
                _ => panic!("{t:?}"),
            }
        }
        fn value(&self, t: &T) -> String {
            self.key(t)
        }
        fn tag(&self, t: &T) -> String {
            self.key(t)
        }
    }
    for e in entries {
        let term = e.encode(&Same);
        assert_eq!(LogEntry::decode(&term, &Text), Some(e));
    }
    assert_eq!(
        s(&LogEntry::<String, String>::Release { key: "k".into() }.encode(&Same)),
        s(&t(vec![a("release"), T::Bin(b"k".to_vec())]))
    );
    for bad in [
        t(vec![a("write"), T::Bin(vec![]), T::Bin(vec![])]),
        t(vec![a("write"), T::Bin(vec![]), T::Bin(vec![]), a("x")]),
        t(vec![a("wait_for"), T::Bin(vec![]), T::Int(1)]),
        t(vec![a("other"), T::Bin(vec![])]),
        t(vec![]),
        a("release"),
    ] {
        assert_eq!(LogEntry::decode(&bad, &Text), None, "{bad:?}");
    }
}

#[test]
fn handle_serves_a_lock_round() {
    let mut e: Engine<String, String, String> = Engine::new(Default::default());
    let now = 1_000_000;
    let req = |r: T| decode(r).unwrap().unwrap();
    let (k, v, tag) = (T::Bin(b"k".to_vec()), T::Int(1), a("tag"));
    let mut w = req(t(vec![a("wait_for"), k.clone(), T::Int(1000)]));
    w.set_waiter(5);
    assert_eq!(e.handle(w, now).reply, Reply::Pending);
    let lock = t(vec![
        a("get_write_lock"),
        k.clone(),
        a("not_found"),
        tag.clone(),
    ]);
    assert_eq!(e.handle(req(lock.clone()), now).reply, Reply::Ok);
    assert_eq!(
        e.handle(req(lock), now).reply,
        Reply::Refused(Refusal::AlreadyLocked)
    );
    let write = t(vec![
        a("write"),
        tag.clone(),
        k.clone(),
        v.clone(),
        T::Int(50),
    ]);
    let h = e.handle(req(write), now);
    assert_eq!(h.reply, Reply::Ok);
    assert_eq!(h.wakes, vec![Wake::Value(5, s(&v))]);
    let update = t(vec![a("update"), a("other"), k.clone(), T::Int(2)]);
    assert_eq!(
        e.handle(req(update), now).reply,
        Reply::Refused(Refusal::NoPromise)
    );
    let release = |value: T| t(vec![a("release"), k.clone(), value, a("t2")]);
    assert_eq!(
        e.handle(req(release(T::Int(3))), now).reply,
        Reply::Refused(Refusal::NotOwner)
    );
    assert_eq!(e.handle(req(release(v.clone())), now).reply, Reply::Ok);
    assert_eq!(
        e.handle(req(release(v.clone())), now).reply,
        Reply::Refused(Refusal::NotFound)
    );
    let mut wr = req(t(vec![a("wait_for_release"), k.clone(), T::Int(10)]));
    wr.set_waiter(6);
    assert_eq!(e.handle(wr, now).reply, Reply::Released);
    let stale = t(vec![
        a("get_write_lock"),
        k.clone(),
        a("not_found"),
        t(vec![a("$locker_token"), a("r"), T::Int(1)]),
    ]);
    e.set_token_floor(100);
    assert_eq!(
        e.handle(req(stale), now).reply,
        Reply::Refused(Refusal::StaleToken(100))
    );
    assert_eq!(
        e.handle(req(t(vec![a("release_write_lock"), tag])), now)
            .reply,
        Reply::Ok
    );
}

#[test]
fn one_round_requests_decode_and_are_served() {
    let tok = t(vec![a("$locker_token"), a("r"), T::Int(77)]);
    let (k, v, v2) = (a("k"), T::Int(1), T::Int(2));
    assert_eq!(
        decode(t(vec![
            a("cond_write"),
            tok.clone(),
            k.clone(),
            v.clone(),
            T::Int(50)
        ])),
        Ok(Some(Request::CondWrite {
            tag: s(&tok),
            key: s(&k),
            value: s(&v),
            lease_ms: 50,
            token: 77
        }))
    );
    assert_eq!(
        decode(t(vec![
            a("cond_update"),
            a("t"),
            k.clone(),
            v.clone(),
            v2.clone()
        ])),
        Ok(Some(Request::CondUpdate {
            tag: s(&a("t")),
            key: s(&k),
            value: s(&v),
            new_value: s(&v2)
        }))
    );
    assert_eq!(
        decode(t(vec![
            a("cond_extend"),
            a("t"),
            k.clone(),
            v.clone(),
            a("infinity")
        ])),
        Ok(Some(Request::CondExtend {
            tag: s(&a("t")),
            key: s(&k),
            value: s(&v),
            lease_ms: FOREVER_MS
        }))
    );
    assert_eq!(
        decode(t(vec![a("cond_release"), a("t"), k.clone(), v.clone()])),
        Ok(Some(Request::CondRelease {
            tag: s(&a("t")),
            key: s(&k),
            value: s(&v)
        }))
    );
    assert_eq!(
        decode(t(vec![a("undo"), a("t"), k.clone()])),
        Ok(Some(Request::Undo {
            tag: s(&a("t")),
            key: s(&k)
        }))
    );
    // Malformed: refused whole (nothing reaches the engine).
    for bad in [
        t(vec![
            a("cond_write"),
            a("t"),
            k.clone(),
            v.clone(),
            a("soon"),
        ]),
        t(vec![
            a("cond_extend"),
            a("t"),
            k.clone(),
            v.clone(),
            T::Bin(vec![]),
        ]),
    ] {
        assert_eq!(decode(bad), Err(DecodeError::BadArg));
    }
    for bad in [
        t(vec![a("cond_write"), a("t"), k.clone(), v.clone()]),
        t(vec![a("cond_update"), a("t"), k.clone(), v.clone()]),
        t(vec![a("cond_release"), a("t"), k.clone()]),
        t(vec![a("undo"), a("t")]),
        t(vec![a("undo"), a("t"), k.clone(), v.clone()]),
    ] {
        assert_eq!(decode(bad), Err(DecodeError::Unknown));
    }
    // Served through Engine::handle.
    let mut e: Engine<String, String, String> = Engine::new(Default::default());
    let now = 1_000_000;
    let req = |r: T| decode(r).unwrap().unwrap();
    let write = t(vec![
        a("cond_write"),
        tok.clone(),
        k.clone(),
        v.clone(),
        T::Int(50),
    ]);
    assert_eq!(e.handle(req(write.clone()), now).reply, Reply::Ok);
    assert_eq!(
        e.handle(req(write), now).reply,
        Reply::Refused(Refusal::NotExpectedValue)
    );
    let update = t(vec![
        a("cond_update"),
        a("u"),
        k.clone(),
        v.clone(),
        v2.clone(),
    ]);
    assert_eq!(e.handle(req(update), now).reply, Reply::Ok);
    assert_eq!(
        e.handle(req(t(vec![a("undo"), a("u"), k.clone()])), now)
            .reply,
        Reply::Ok
    );
    let release = t(vec![a("cond_release"), a("r2"), k.clone(), v.clone()]);
    assert_eq!(e.handle(req(release), now).reply, Reply::Ok);
    let stale = t(vec![
        a("cond_write"),
        t(vec![a("$locker_token"), a("r"), T::Int(1)]),
        k.clone(),
        v,
        T::Int(50),
    ]);
    assert_eq!(
        e.handle(req(stale), now).reply,
        Reply::Refused(Refusal::StaleToken(77))
    );
}
