//! `rpc:call/4` and `erpc:call/4` to this node: OTP 25 sends a
//! `SPAWN_REQUEST` for `erpc:execute_call(Ref, M, F, A)`. The functions
//! served are the application's [`RpcHandler`] (set with
//! [`Node::set_rpc_handler`]); any other function gets the error a BEAM
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
use crate::node::Node;
use crate::process::PID_ID_MASK;
use crate::term::{Atom, Pid, Ref, Term};

/// The application's functions for `rpc:call(Node, M, F, A)`: called with
/// `M`, `F` and the argument list `A` as sent, it gives the result, or
/// `None` for a function the application does not have (the caller then
/// gets `undef`). It runs in the connection's reader: it must not block.
pub trait RpcHandler: Fn(&Term, &Term, &Term) -> Option<Term> + Send + Sync + 'static {}

impl<F: Fn(&Term, &Term, &Term) -> Option<Term> + Send + Sync + 'static> RpcHandler for F {}

/// Answers one `SPAWN_REQUEST` from `peer`.
pub(crate) fn spawn_request(
    node: &Node,
    peer: &Atom,
    req_id: Ref,
    from: Pid,
    mfa: Term,
    opts: Term,
    args: Term,
) {
    let is_exec = matches!(mfa.as_tuple(), Some([m, f, Term::Int(4)]) if m.is_atom("erpc") && f.is_atom("execute_call"));
    let opts = opts.as_list().unwrap_or(&[]);
    let monitor = opts.iter().any(|o| {
        o.is_atom("monitor") || matches!(o.as_tuple(), Some([m, _]) if m.is_atom("monitor"))
    });
    let link = opts.iter().any(|o| o.is_atom("link"));
    let args = args.as_list().unwrap_or(&[]).to_vec();
    if !is_exec || args.len() != 4 {
        crate::warn_bad_input!(%peer, mfa = %mfa.display(200), "spawn request refused: only erpc:execute_call/4 is served");
        node.send_frame(
            peer,
            frame::spawn_reply(&req_id, &from, 0, &Term::static_atom("notsup")),
            false,
        );
        return;
    }
    let (r, m, f, a) = (&args[0], &args[1], &args[2], &args[3]);
    let result = match node.rpc_handler().and_then(|handler| handler(m, f, a)) {
        Some(value) => Term::tuple(vec![r.clone(), Term::static_atom("return"), value]),
        None => {
            crate::warn_bad_input!(%peer, module = %m.display(100), function = %f.display(100), args = %a.display(100), "rpc refused: function not served here (undef)");
            undef(r, m, f, a)
        }
    };
    // The "process": a fresh pid that exits at once with the result.
    let pid = Pid {
        node: node.name().clone(),
        id: (req_id.ids.first().copied().unwrap_or(1) & PID_ID_MASK).max(1),
        serial: 0,
        creation: node.creation(),
    };
    let mut flags = 0;
    if link {
        flags |= frame::SPAWN_REPLY_LINK;
    }
    if monitor {
        flags |= frame::SPAWN_REPLY_MONITOR;
    }
    node.send_frame(
        peer,
        frame::spawn_reply(&req_id, &from, flags, &Term::pid(pid.clone())),
        false,
    );
    if monitor {
        node.send_frame(
            peer,
            frame::monitor_exit(&Term::pid(pid.clone()), &from, &req_id, &result),
            false,
        );
    }
    if link {
        node.send_frame(peer, frame::exit(&pid, &from, &result), false);
    }
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
