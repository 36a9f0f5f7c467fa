//! `frame`: erl_node's distribution frame parser (`frame::parse`, the body
//! after the 4-byte length) and the builders it pairs with.
//!
//! Invariants (see fuzz/README.md):
//! - `parse` never panics, and gives what `parse_generic` (no fast path)
//!   gives;
//! - it accepts only bodies that start with the pass-through tag 112 and
//!   whose control message is a tuple starting with an integer;
//! - the pid operands erl_node acts on are real pids (no placeholder pid
//!   reaches `Send`, `RegSend` or `SpawnRequest`);
//! - re-encoding what parsed (control and payload, canonically) parses to
//!   the same `Control`;
//! - frames built by `frame::send`, `reg_send`, `monitor`, `demonitor`,
//!   `monitor_exit`, `exit`, `unlink_id_ack`, `spawn_request` and
//!   `spawn_reply` around any decodable term carry a correct length and
//!   parse back to what was built.

#![no_main]

use libfuzzer_sys::fuzz_target;
use erl_node::codec;
use erl_node::frame::{self, Control, PASS_THROUGH};
use erl_node::term::{Atom, Pid, Ref, Term};

fn is_placeholder(p: &Pid) -> bool {
    p.id == u32::MAX && p.creation == u32::MAX && p.node.as_str().is_empty()
}

fn pid(id: u32) -> Pid {
    Pid {
        node: Atom::new("fuzz@host"),
        id,
        serial: 0,
        creation: 7,
    }
}

fn parse_built(f: &[u8]) -> Control {
    assert!(f.len() >= 5);
    let len = u32::from_be_bytes([f[0], f[1], f[2], f[3]]) as usize;
    assert_eq!(len, f.len() - 4, "frame length");
    frame::parse(&f[4..]).expect("a built frame does not parse")
}

fn builders(t: &Term) {
    let (a, b) = (pid(1), pid(2));
    let r = Ref::new(Atom::new("fuzz@host"), 7, &[1, 2, 3]);
    assert_eq!(
        parse_built(&frame::send(&a, t)),
        Control::Send {
            to: a.clone(),
            from: None,
            msg: t.clone()
        }
    );
    assert_eq!(
        parse_built(&frame::reg_send(&a, &Term::atom("locker"), t)),
        Control::RegSend {
            from: a.clone(),
            to: Term::atom("locker"),
            msg: t.clone()
        }
    );
    assert_eq!(
        parse_built(&frame::monitor(&a, t, &r)),
        Control::Monitor {
            from: a.clone(),
            to: t.clone(),
            reference: r.clone()
        }
    );
    assert_eq!(
        parse_built(&frame::demonitor(&a, t, &r)),
        Control::Demonitor {
            from: a.clone(),
            to: t.clone(),
            reference: r.clone()
        }
    );
    assert_eq!(
        parse_built(&frame::monitor_exit(t, &b, &r, t)),
        Control::MonitorExit {
            from: t.clone(),
            to: b.clone(),
            reference: r.clone(),
            reason: t.clone()
        }
    );
    assert_eq!(
        parse_built(&frame::exit(&a, &b, t)),
        Control::Exit {
            from: a.clone(),
            to: b.clone(),
            reason: t.clone(),
            link: true
        }
    );
    assert_eq!(
        parse_built(&frame::unlink_id_ack(t, &a, &b)),
        Control::UnlinkIdAck {
            id: t.clone(),
            from: a.clone(),
            to: b.clone()
        }
    );
    assert_eq!(
        parse_built(&frame::spawn_request(&r, &a, t, &Term::NIL, t)),
        Control::SpawnRequest {
            req_id: r.clone(),
            from: a.clone(),
            mfa: t.clone(),
            opts: Term::NIL,
            args: t.clone()
        }
    );
    assert_eq!(
        parse_built(&frame::spawn_reply(&r, &b, 2, t)),
        Control::SpawnReply {
            req_id: r.clone(),
            to: b.clone(),
            flags: 2,
            result: t.clone()
        }
    );
}

fuzz_target!(|data: &[u8]| {
    let parsed = frame::parse(data);
    assert_eq!(parsed, frame::parse_generic(data), "fast path differs");
    if let Ok(ctrl) = &parsed {
        assert_eq!(data.first(), Some(&PASS_THROUGH));
        let (c, used) = codec::decode_prefix(&data[1..]).expect("parsed but control undecodable");
        let items = c.as_tuple().expect("control is not a tuple");
        assert!(items.first().and_then(Term::as_int).is_some());
        match ctrl {
            Control::Send { to, .. } => assert!(!is_placeholder(to), "Send to a placeholder"),
            Control::RegSend { from, .. } => assert!(!is_placeholder(from)),
            Control::SpawnRequest { from, .. } => assert!(!is_placeholder(from)),
            _ => {}
        }
        // Re-encode canonically: same parse.
        let rest = &data[1 + used..];
        let payload = if rest.is_empty() {
            None
        } else {
            codec::decode(rest).ok()
        };
        if rest.is_empty() || payload.is_some() {
            let rebuilt = frame::build(&c, payload.as_ref());
            let again = frame::parse(&rebuilt[4..]);
            assert_eq!(
                again.as_ref(),
                Ok(ctrl),
                "re-encoded frame parses differently"
            );
        }
    }
    // Builders around whatever term this input starts with.
    if let Some((&first, rest)) = data.split_first() {
        if first == 131 {
            if let Ok((t, _)) = codec::decode_prefix(data) {
                builders(&t);
            }
        } else if first == PASS_THROUGH && rest.first() == Some(&131) {
            if let Ok((t, _)) = codec::decode_prefix(rest) {
                builders(&t);
            }
        }
    }
});
