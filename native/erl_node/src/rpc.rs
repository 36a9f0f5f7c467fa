//! `rpc:call/4` and `erpc:call/4` to this node: OTP 25 sends a
//! `SPAWN_REQUEST` for `erpc:execute_call(Ref, M, F, A)`. The functions
//! served are the application's [`RpcHandler`] (set with
//! [`crate::Node::set_rpc_handler`]); any other function gets the error a BEAM
//! node without it would give (`undef`), and a spawn of anything but
//! `erpc:execute_call/4` is refused with `notsup`. No process is really
//! spawned: the reply, and the monitor exit carrying the result, are sent
//! at once.
//!
//! ```no_run
//! use erl_node::{Node, Term};
//!
//! // `rpc:call(Node, echo, echo, [X])` answers X.
//! fn serve_echo(node: &Node) -> Result<(), String> {
//!     node.set_rpc_handler(|m: &Term, f: &Term, args: &Term| match args.as_list() {
//!         Some([x]) if m.is_atom("echo") && f.is_atom("echo") => Some(x.clone()),
//!         _ => None,
//!     })
//! }
//! ```

use crate::frame;
use crate::process::PID_ID_MASK;
use crate::term::{Atom, Pid, Ref, Term};

/// The application's functions for `rpc:call(Node, M, F, A)`: called with
/// `M`, `F` and the argument list `A` as sent, it gives the result, or
/// `None` for a function the application does not have (the caller then
/// gets `undef`). It runs in the connection's reader: it must not block.
pub trait RpcHandler: Fn(&Term, &Term, &Term) -> Option<Term> + Send + Sync + 'static {}

impl<F: Fn(&Term, &Term, &Term) -> Option<Term> + Send + Sync + 'static> RpcHandler for F {}

/// A `SPAWN_REQUEST`'s operands.
pub(crate) struct SpawnRequest {
    /// Request id (also the monitor reference when monitoring).
    pub req_id: Ref,
    /// Requesting process.
    pub from: Pid,
    /// `{M, F, A}`.
    pub mfa: Term,
    /// Spawn options.
    pub opts: Term,
    /// Argument list.
    pub args: Term,
}

/// The frames that answer one `SPAWN_REQUEST` from `peer` to the node
/// `node` (of this `creation`), whose application serves `handler`.
pub(crate) fn answer(
    handler: Option<&dyn RpcHandler>,
    node: &Atom,
    creation: u32,
    peer: &Atom,
    req: SpawnRequest,
) -> Vec<Vec<u8>> {
    let SpawnRequest {
        req_id,
        from,
        mfa,
        opts,
        args,
    } = req;
    let is_exec = matches!(mfa.as_tuple(), Some([m, f, Term::Int(4)]) if m.is_atom("erpc") && f.is_atom("execute_call"));
    let opts = opts.as_list().unwrap_or(&[]);
    let monitor = opts.iter().any(|o| {
        o.is_atom("monitor") || matches!(o.as_tuple(), Some([m, _]) if m.is_atom("monitor"))
    });
    let link = opts.iter().any(|o| o.is_atom("link"));
    let args = args.as_list().unwrap_or(&[]);
    let (true, [r, m, f, a]) = (is_exec, args) else {
        crate::warn_bad_input!(%peer, mfa = %mfa.display(200), "spawn request refused: only erpc:execute_call/4 is served");
        return vec![frame::spawn_reply(
            &req_id,
            &from,
            0,
            &Term::static_atom("notsup"),
        )];
    };
    let result = match handler.and_then(|handler| handler(m, f, a)) {
        Some(value) => Term::tuple(vec![r.clone(), Term::static_atom("return"), value]),
        None => {
            crate::warn_bad_input!(%peer, module = %m.display(100), function = %f.display(100), args = %a.display(100), "rpc refused: function not served here (undef)");
            undef(r, m, f, a)
        }
    };
    // The "process": a fresh pid that exits at once with the result.
    let pid = Pid {
        node: node.clone(),
        id: (req_id.ids.first().copied().unwrap_or(1) & PID_ID_MASK).max(1),
        serial: 0,
        creation,
    };
    let mut flags = 0;
    if link {
        flags |= frame::SPAWN_REPLY_LINK;
    }
    if monitor {
        flags |= frame::SPAWN_REPLY_MONITOR;
    }
    let mut frames = vec![frame::spawn_reply(
        &req_id,
        &from,
        flags,
        &Term::pid(pid.clone()),
    )];
    if monitor {
        frames.push(frame::monitor_exit(
            &Term::pid(pid.clone()),
            &from,
            &req_id,
            &result,
        ));
    }
    if link {
        frames.push(frame::exit(&pid, &from, &result));
    }
    frames
}

/// `{Ref, error, undef, [{M, F, A, []}]}`: what `erpc:execute_call/4`
/// exits with when the function does not exist.
fn undef(r: &Term, m: &Term, f: &Term, a: &Term) -> Term {
    Term::tuple(vec![
        r.clone(),
        Term::static_atom("error"),
        Term::atom("undef"),
        Term::List(vec![Term::tuple(vec![
            m.clone(),
            f.clone(),
            a.clone(),
            Term::NIL,
        ])]),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{parse, Control, LENGTH_BYTES, SPAWN_REPLY_MONITOR};

    fn request(mfa: Term, args: Vec<Term>) -> SpawnRequest {
        let peer = Atom::new("p@h");
        SpawnRequest {
            req_id: Ref::new(peer.clone(), 1, &[7, 8, 9]),
            from: Pid {
                node: peer,
                id: 3,
                serial: 0,
                creation: 1,
            },
            mfa,
            opts: Term::List(vec![Term::atom("monitor")]),
            args: Term::List(args),
        }
    }

    fn execute_call(m: &str, f: &str, a: Vec<Term>) -> SpawnRequest {
        let mfa = crate::tuple![Term::atom("erpc"), Term::atom("execute_call"), 4i64];
        let r = Term::atom("r");
        request(mfa, vec![r, Term::atom(m), Term::atom(f), Term::List(a)])
    }

    fn parsed(frames: Vec<Vec<u8>>) -> Vec<Control> {
        frames
            .iter()
            .map(|f| parse(&f[LENGTH_BYTES..]).expect("a frame"))
            .collect()
    }

    /// The monitor exit's reason: what `erpc:execute_call/4` gives back.
    fn result_of(frames: Vec<Vec<u8>>) -> Term {
        match &parsed(frames)[..] {
            [Control::SpawnReply { flags, .. }, Control::MonitorExit { reason, .. }] => {
                assert_eq!(*flags, SPAWN_REPLY_MONITOR);
                reason.clone()
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_handler_answers_and_the_rest_is_undef() {
        let echo = |m: &Term, f: &Term, a: &Term| match a.as_list() {
            Some([x]) if m.is_atom("m") && f.is_atom("echo") => Some(x.clone()),
            _ => None,
        };
        let me = Atom::new("me@h");
        let peer = Atom::new("p@h");
        let served = answer(
            Some(&echo),
            &me,
            1,
            &peer,
            execute_call("m", "echo", vec![Term::Int(5)]),
        );
        let r = Term::atom("r");
        assert_eq!(
            result_of(served),
            crate::tuple![r.clone(), Term::atom("return"), 5i64]
        );
        for handler in [Some(&echo as &dyn RpcHandler), None] {
            let refused = answer(handler, &me, 1, &peer, execute_call("m", "nope", vec![]));
            let undef = crate::tuple![
                r.clone(),
                Term::atom("error"),
                Term::atom("undef"),
                Term::List(vec![crate::tuple![
                    Term::atom("m"),
                    Term::atom("nope"),
                    Term::NIL,
                    Term::NIL
                ]])
            ];
            assert_eq!(result_of(refused), undef);
        }
    }

    #[test]
    fn other_spawns_are_notsup() {
        let me = Atom::new("me@h");
        let peer = Atom::new("p@h");
        let mfa = crate::tuple![Term::atom("m"), Term::atom("f"), 0i64];
        let frames = answer(None, &me, 1, &peer, request(mfa, vec![]));
        match &parsed(frames)[..] {
            [Control::SpawnReply { flags, result, .. }] => {
                assert_eq!((*flags, result), (0, &Term::atom("notsup")));
            }
            other => panic!("{other:?}"),
        }
    }
}
