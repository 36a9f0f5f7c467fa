//! Distribution frames after the handshake: a 4-byte length, then either
//! nothing (a tick) or the pass-through tag `112`, a control message and an
//! optional payload, each a versioned external term.
//!
//! [`Control`] covers the operations a node sees from OTP 25 with the
//! flags of [`crate::handshake::local_flags`] (no atom cache, no
//! fragments). Parsing never fails on an unknown operation: it becomes
//! [`Control::Other`] and is logged by the caller.
//!
//! ```
//! use erl_node::frame::{self, Control, LENGTH_BYTES};
//! use erl_node::term::{Atom, Pid, Term};
//!
//! let me = Pid { node: Atom::new("a@h"), id: 1, serial: 0, creation: 1 };
//! let f = frame::reg_send(&me, &Term::atom("server"), &Term::atom("hello"));
//! // The length, then the body that `parse` reads.
//! assert_eq!(f[..LENGTH_BYTES], ((f.len() - LENGTH_BYTES) as u32).to_be_bytes());
//! match frame::parse(&f[LENGTH_BYTES..]) {
//!     Ok(Control::RegSend { from, to, msg }) => {
//!         assert_eq!((from, to, msg), (me, Term::atom("server"), Term::atom("hello")));
//!     }
//!     other => panic!("{other:?}"),
//! }
//! ```

use crate::codec::{self, tag, DecodeError};
use crate::term::{Atom, Pid, Ref, Term};

/// The pass-through tag that starts every non-tick frame.
pub const PASS_THROUGH: u8 = 112;

/// The bytes of a frame's length, before its body.
pub const LENGTH_BYTES: usize = 4;

/// The operation codes of control messages (the first element of the
/// control tuple), by their names in OTP's distribution protocol
/// documentation.
pub mod op {
    /// `{1, FromPid, ToPid}`.
    pub const LINK: i64 = 1;
    /// `{2, Unused, ToPid}`, message.
    pub const SEND: i64 = 2;
    /// `{3, FromPid, ToPid, Reason}`.
    pub const EXIT: i64 = 3;
    /// `{4, FromPid, ToPid}`.
    pub const UNLINK: i64 = 4;
    /// `{5}` (obsolete).
    pub const NODE_LINK: i64 = 5;
    /// `{6, FromPid, Unused, ToName}`, message.
    pub const REG_SEND: i64 = 6;
    /// `{7, FromPid, ToPid}`.
    pub const GROUP_LEADER: i64 = 7;
    /// `{8, FromPid, ToPid, Reason}`.
    pub const EXIT2: i64 = 8;
    /// `{12, Unused, ToPid, TraceToken}`, message.
    pub const SEND_TT: i64 = 12;
    /// `{13, FromPid, ToPid, TraceToken, Reason}`.
    pub const EXIT_TT: i64 = 13;
    /// `{16, FromPid, Unused, ToName, TraceToken}`, message.
    pub const REG_SEND_TT: i64 = 16;
    /// `{18, FromPid, ToPid, TraceToken, Reason}`.
    pub const EXIT2_TT: i64 = 18;
    /// `{19, FromPid, ToProc, Ref}`.
    pub const MONITOR_P: i64 = 19;
    /// `{20, FromPid, ToProc, Ref}`.
    pub const DEMONITOR_P: i64 = 20;
    /// `{21, FromProc, ToPid, Ref, Reason}`.
    pub const MONITOR_P_EXIT: i64 = 21;
    /// `{22, FromPid, ToPid}`, message.
    pub const SEND_SENDER: i64 = 22;
    /// `{23, FromPid, ToPid, TraceToken}`, message.
    pub const SEND_SENDER_TT: i64 = 23;
    /// `{24, FromPid, ToPid}`, reason.
    pub const PAYLOAD_EXIT: i64 = 24;
    /// `{25, FromPid, ToPid, TraceToken}`, reason.
    pub const PAYLOAD_EXIT_TT: i64 = 25;
    /// `{26, FromPid, ToPid}`, reason.
    pub const PAYLOAD_EXIT2: i64 = 26;
    /// `{27, FromPid, ToPid, TraceToken}`, reason.
    pub const PAYLOAD_EXIT2_TT: i64 = 27;
    /// `{28, FromProc, ToPid, Ref}`, reason.
    pub const PAYLOAD_MONITOR_P_EXIT: i64 = 28;
    /// `{29, ReqId, From, GroupLeader, {M, F, A}, OptList}`, argument list.
    pub const SPAWN_REQUEST: i64 = 29;
    /// `{30, ReqId, From, GroupLeader, {M, F, A}, OptList, Token}`, argument list.
    pub const SPAWN_REQUEST_TT: i64 = 30;
    /// `{31, ReqId, To, Flags, Result}`.
    pub const SPAWN_REPLY: i64 = 31;
    /// `{32, ReqId, To, Flags, Result, Token}`.
    pub const SPAWN_REPLY_TT: i64 = 32;
    /// `{33, FromPid, Alias}`, message.
    pub const ALIAS_SEND: i64 = 33;
    /// `{34, FromPid, Alias, Token}`, message.
    pub const ALIAS_SEND_TT: i64 = 34;
    /// `{35, Id, FromPid, ToPid}`.
    pub const UNLINK_ID: i64 = 35;
    /// `{36, Id, FromPid, ToPid}`.
    pub const UNLINK_ID_ACK: i64 = 36;
}

/// `SPAWN_REPLY` flag: the new process is linked to the requester.
pub const SPAWN_REPLY_LINK: i64 = 1;
/// `SPAWN_REPLY` flag: the new process is monitored by the requester.
pub const SPAWN_REPLY_MONITOR: i64 = 2;

/// The operation of [`FrameError::Shape`] when the control message is not
/// a tuple starting with an integer.
pub const NO_OPERATION: i64 = -1;

/// A distribution operation with its operands.
#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    /// `LINK` (1).
    Link {
        /// Linking process.
        from: Pid,
        /// Linked process (ours).
        to: Pid,
    },
    /// `SEND` (2), `SEND_TT` (12), `SEND_SENDER` (22), `SEND_SENDER_TT` (23).
    Send {
        /// Destination (ours).
        to: Pid,
        /// Sender, when the operation carries one.
        from: Option<Pid>,
        /// The message.
        msg: Term,
    },
    /// `EXIT` (3), `EXIT2` (8), their `_TT` and `PAYLOAD_` forms.
    Exit {
        /// The exiting or killing process.
        from: Pid,
        /// The target (ours).
        to: Pid,
        /// Exit reason.
        reason: Term,
        /// True for a link exit (`EXIT`), false for `exit/2` (`EXIT2`).
        link: bool,
    },
    /// `UNLINK` (4).
    Unlink {
        /// Unlinking process.
        from: Pid,
        /// Our process.
        to: Pid,
    },
    /// `REG_SEND` (6), `REG_SEND_TT` (16).
    RegSend {
        /// Sender.
        from: Pid,
        /// Registered name (ours).
        to: Term,
        /// The message.
        msg: Term,
    },
    /// `MONITOR_P` (19).
    Monitor {
        /// Monitoring process.
        from: Pid,
        /// Monitored process: a pid or a registered name.
        to: Term,
        /// Monitor reference.
        reference: Ref,
    },
    /// `DEMONITOR_P` (20).
    Demonitor {
        /// Monitoring process.
        from: Pid,
        /// Monitored process: a pid or a name.
        to: Term,
        /// Monitor reference.
        reference: Ref,
    },
    /// `MONITOR_P_EXIT` (21) and `PAYLOAD_MONITOR_P_EXIT` (28).
    MonitorExit {
        /// The monitored process (pid or name).
        from: Term,
        /// Our monitoring process.
        to: Pid,
        /// Monitor reference.
        reference: Ref,
        /// Exit reason.
        reason: Term,
    },
    /// `SPAWN_REQUEST` (29) and `SPAWN_REQUEST_TT` (30).
    SpawnRequest {
        /// Request id (also the monitor reference when monitoring).
        req_id: Ref,
        /// Requesting process.
        from: Pid,
        /// `{M, F, A}`.
        mfa: Term,
        /// Spawn options.
        opts: Term,
        /// Argument list.
        args: Term,
    },
    /// `SPAWN_REPLY` (31) and `SPAWN_REPLY_TT` (32).
    SpawnReply {
        /// Request id.
        req_id: Ref,
        /// Our requesting process.
        to: Pid,
        /// Flags ([`SPAWN_REPLY_LINK`], [`SPAWN_REPLY_MONITOR`]).
        flags: i64,
        /// The new pid or an error atom.
        result: Term,
    },
    /// `ALIAS_SEND` (33), `ALIAS_SEND_TT` (34).
    AliasSend {
        /// Sender.
        from: Pid,
        /// Alias.
        alias: Ref,
        /// The message.
        msg: Term,
    },
    /// `UNLINK_ID` (35).
    UnlinkId {
        /// Unlink id.
        id: Term,
        /// Unlinking process.
        from: Pid,
        /// Our process.
        to: Pid,
    },
    /// `UNLINK_ID_ACK` (36).
    UnlinkIdAck {
        /// Unlink id.
        id: Term,
        /// Acknowledging process.
        from: Pid,
        /// Our process.
        to: Pid,
    },
    /// Anything else (group leader, node link, unknown operations).
    Other(i64),
}

/// Why a frame's body is not a distribution message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The first byte is not [`PASS_THROUGH`] (atom cache headers and
    /// fragments are never negotiated).
    BadTag(u8),
    /// A term does not decode.
    Term(DecodeError),
    /// The control message has the wrong shape for its operation (given;
    /// [`NO_OPERATION`] when it has none).
    Shape(i64),
    /// The body is empty.
    Empty,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}
impl std::error::Error for FrameError {}

impl From<DecodeError> for FrameError {
    fn from(e: DecodeError) -> Self {
        FrameError::Term(e)
    }
}

fn pid(t: &Term) -> Option<Pid> {
    t.as_pid().cloned()
}
fn reference(t: &Term) -> Option<Ref> {
    t.as_ref_term().cloned()
}

/// Parses the body of a non-tick frame (everything after the length).
pub fn parse(body: &[u8]) -> Result<Control, FrameError> {
    let (&tag, rest) = body.split_first().ok_or(FrameError::Empty)?;
    if tag != PASS_THROUGH {
        return Err(FrameError::BadTag(tag));
    }
    if let Some(parsed) = parse_frequent(rest) {
        return parsed;
    }
    parse_any(rest)
}

/// [`parse`] without its fast path for frequent operations: the reference
/// the fast path must agree with (tests and fuzzing compare them).
pub fn parse_generic(body: &[u8]) -> Result<Control, FrameError> {
    let (&tag, rest) = body.split_first().ok_or(FrameError::Empty)?;
    if tag != PASS_THROUGH {
        return Err(FrameError::BadTag(tag));
    }
    parse_any(rest)
}

/// The operations every `gen_server:call` brings (`MONITOR_P`, `REG_SEND`
/// or `SEND_SENDER`, `DEMONITOR_P`), read field by field without building
/// the control tuple. `None` when the control message is anything else or
/// has another shape: [`parse_any`] then decides, so both paths give the
/// same result.
fn parse_frequent(rest: &[u8]) -> Option<Result<Control, FrameError>> {
    let mut c = codec::Cursor::new(rest);
    c.version()?;
    let arity = c.tuple()?;
    let op = c.int()?;
    let ctrl = match (op, arity) {
        (op::MONITOR_P, 4) | (op::DEMONITOR_P, 4) => {
            let (from, to, reference) = (c.pid()?, c.term()?, c.reference()?);
            return Some(Ok(monitor_op(op, from, to, reference)));
        }
        (op::REG_SEND, 4) => {
            let from = c.pid()?;
            let _unused = c.term()?;
            let to = c.term()?;
            Dest::Name { from, to }
        }
        (op::SEND_SENDER, 3) => {
            let from = c.pid()?;
            let to = c.pid()?;
            Dest::Pid {
                from: Some(from),
                to,
            }
        }
        (op::SEND, 3) => {
            let _unused = c.term()?;
            let to = c.pid()?;
            Dest::Pid { from: None, to }
        }
        _ => return None,
    };
    // A pid that looks like the generic path's placeholder is refused
    // there: let it decide.
    let (Dest::Name { from: p, .. } | Dest::Pid { to: p, .. }) = &ctrl;
    if is_dummy(p) {
        return None;
    }
    let msg = match codec::decode(&rest[c.pos()..]) {
        Ok(msg) => msg,
        Err(e) => return Some(Err(e.into())),
    };
    Some(Ok(match ctrl {
        Dest::Name { from, to } => Control::RegSend { from, to, msg },
        Dest::Pid { from, to } => Control::Send { to, from, msg },
    }))
}

/// `MONITOR_P` or `DEMONITOR_P` with its operands.
fn monitor_op(code: i64, from: Pid, to: Term, reference: Ref) -> Control {
    if code == op::MONITOR_P {
        Control::Monitor {
            from,
            to,
            reference,
        }
    } else {
        Control::Demonitor {
            from,
            to,
            reference,
        }
    }
}

/// Where a message of [`parse_frequent`] goes.
enum Dest {
    Name { from: Pid, to: Term },
    Pid { from: Option<Pid>, to: Pid },
}

/// Parses any control message: decodes it whole, then reads its operands.
fn parse_any(rest: &[u8]) -> Result<Control, FrameError> {
    let (ctrl, used) = codec::decode_prefix(rest)?;
    let rest = &rest[used..];
    let payload = || -> Result<Term, FrameError> { Ok(codec::decode(rest)?) };
    let items = ctrl.as_tuple().ok_or(FrameError::Shape(NO_OPERATION))?;
    let code = items
        .first()
        .and_then(Term::as_int)
        .ok_or(FrameError::Shape(NO_OPERATION))?;
    let e = |i: usize| items.get(i);
    let opt_pid = |i: usize| items.get(i).and_then(pid);
    let opt_ref = |i: usize| items.get(i).and_then(reference);
    let shape = FrameError::Shape(code);
    let parsed = (|| -> Option<Result<Control, FrameError>> {
        Some(match (code, items.len()) {
            (op::LINK, 3) => Ok(Control::Link {
                from: pid(e(1)?)?,
                to: pid(e(2)?)?,
            }),
            (op::SEND, 3) | (op::SEND_TT, 4) => payload().map(|msg| Control::Send {
                to: opt_pid(2).unwrap_or_else(dummy_pid),
                from: None,
                msg,
            }),
            (op::SEND_SENDER, 3) | (op::SEND_SENDER_TT, 4) => payload().map(|msg| Control::Send {
                to: opt_pid(2).unwrap_or_else(dummy_pid),
                from: opt_pid(1),
                msg,
            }),
            (op::EXIT, 4) | (op::EXIT2, 4) => Ok(Control::Exit {
                from: pid(e(1)?)?,
                to: pid(e(2)?)?,
                reason: e(3)?.clone(),
                link: code == op::EXIT,
            }),
            (op::EXIT_TT, 5) | (op::EXIT2_TT, 5) => Ok(Control::Exit {
                from: pid(e(1)?)?,
                to: pid(e(2)?)?,
                reason: e(4)?.clone(),
                link: code == op::EXIT_TT,
            }),
            (op::PAYLOAD_EXIT, 3)
            | (op::PAYLOAD_EXIT_TT, 4)
            | (op::PAYLOAD_EXIT2, 3)
            | (op::PAYLOAD_EXIT2_TT, 4) => payload().map(|reason| Control::Exit {
                from: opt_pid(1).unwrap_or_else(dummy_pid),
                to: opt_pid(2).unwrap_or_else(dummy_pid),
                reason,
                link: code == op::PAYLOAD_EXIT || code == op::PAYLOAD_EXIT_TT,
            }),
            (op::UNLINK, 3) => Ok(Control::Unlink {
                from: pid(e(1)?)?,
                to: pid(e(2)?)?,
            }),
            (op::REG_SEND, 4) | (op::REG_SEND_TT, 5) => payload().map(|msg| Control::RegSend {
                from: opt_pid(1).unwrap_or_else(dummy_pid),
                to: items.get(3).cloned().unwrap_or(Term::NIL),
                msg,
            }),
            (op::MONITOR_P, 4) | (op::DEMONITOR_P, 4) => {
                let (from, to, reference) = (pid(e(1)?)?, e(2)?.clone(), reference(e(3)?)?);
                Ok(monitor_op(code, from, to, reference))
            }
            (op::MONITOR_P_EXIT, 5) => Ok(Control::MonitorExit {
                from: e(1)?.clone(),
                to: pid(e(2)?)?,
                reference: reference(e(3)?)?,
                reason: e(4)?.clone(),
            }),
            (op::PAYLOAD_MONITOR_P_EXIT, 4) => payload().map(|reason| Control::MonitorExit {
                from: e(1).cloned().unwrap_or(Term::NIL),
                to: opt_pid(2).unwrap_or_else(dummy_pid),
                reference: opt_ref(3).unwrap_or_else(dummy_ref),
                reason,
            }),
            (op::SPAWN_REQUEST, 6) | (op::SPAWN_REQUEST_TT, 7) => {
                payload().map(|args| Control::SpawnRequest {
                    req_id: opt_ref(1).unwrap_or_else(dummy_ref),
                    from: opt_pid(2).unwrap_or_else(dummy_pid),
                    mfa: e(4).cloned().unwrap_or(Term::NIL),
                    opts: e(5).cloned().unwrap_or(Term::NIL),
                    args,
                })
            }
            (op::SPAWN_REPLY, 5) | (op::SPAWN_REPLY_TT, 6) => Ok(Control::SpawnReply {
                req_id: reference(e(1)?)?,
                to: pid(e(2)?)?,
                flags: e(3)?.as_int()?,
                result: e(4)?.clone(),
            }),
            (op::ALIAS_SEND, 3) | (op::ALIAS_SEND_TT, 4) => {
                payload().map(|msg| Control::AliasSend {
                    from: opt_pid(1).unwrap_or_else(dummy_pid),
                    alias: opt_ref(2).unwrap_or_else(dummy_ref),
                    msg,
                })
            }
            (op::UNLINK_ID, 4) | (op::UNLINK_ID_ACK, 4) => {
                let (id, from, to) = (e(1)?.clone(), pid(e(2)?)?, pid(e(3)?)?);
                Ok(if code == op::UNLINK_ID {
                    Control::UnlinkId { id, from, to }
                } else {
                    Control::UnlinkIdAck { id, from, to }
                })
            }
            (op::NODE_LINK, _) | (op::GROUP_LEADER, _) => Ok(Control::Other(code)),
            // A known operation with the wrong number of operands.
            (op::LINK..=op::UNLINK_ID_ACK, _) => return None,
            _ => Ok(Control::Other(code)),
        })
    })();
    let parsed = parsed.ok_or(shape.clone())??;
    // Operations whose operand must be a pid but was not: refuse.
    match &parsed {
        Control::Send { to, .. } | Control::RegSend { from: to, .. } if is_dummy(to) => Err(shape),
        Control::SpawnRequest { from, .. } if is_dummy(from) => Err(shape),
        _ => Ok(parsed),
    }
}

fn dummy_pid() -> Pid {
    Pid {
        node: Atom::new(""),
        id: u32::MAX,
        serial: u32::MAX,
        creation: u32::MAX,
    }
}

fn dummy_ref() -> Ref {
    Ref::new(Atom::new(""), u32::MAX, &[u32::MAX])
}

fn is_dummy(p: &Pid) -> bool {
    p.id == u32::MAX && p.creation == u32::MAX && p.node.as_str().is_empty()
}

/// Builds a full frame (length included) for a control message and an
/// optional payload.
pub fn build(ctrl: &Term, payload: Option<&Term>) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(&[0; LENGTH_BYTES]);
    out.push(PASS_THROUGH);
    codec::encode_versioned(ctrl, &mut out);
    if let Some(p) = payload {
        codec::encode_versioned(p, &mut out);
    }
    finish(out)
}

/// `SEND` of `msg` to `to`.
pub fn send(to: &Pid, msg: &Term) -> Vec<u8> {
    let mut out = send_head(to);
    codec::encode_versioned(msg, &mut out);
    finish(out)
}

/// `SEND` of the pair `{tag, reply}` to `to`: a `gen_server` reply,
/// encoded without building the pair.
pub fn send_reply(to: &Pid, tag: &Term, reply: &Term) -> Vec<u8> {
    let mut out = send_head(to);
    out.extend_from_slice(&[tag::VERSION, tag::SMALL_TUPLE_EXT, 2]);
    codec::encode(tag, &mut out);
    codec::encode(reply, &mut out);
    finish(out)
}

/// A frame's length placeholder, tag and `SEND` control `{2, '', To}`.
fn send_head(to: &Pid) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(&[0; LENGTH_BYTES]);
    out.extend_from_slice(&[
        PASS_THROUGH,
        tag::VERSION,
        tag::SMALL_TUPLE_EXT,
        3,
        tag::SMALL_INTEGER_EXT,
        op::SEND as u8,
        tag::SMALL_ATOM_UTF8_EXT,
        0, // ''
    ]);
    codec::encode_pid(to, &mut out);
    out
}

/// Writes the length of a frame built after a placeholder of
/// [`LENGTH_BYTES`].
fn finish(mut out: Vec<u8>) -> Vec<u8> {
    let len = (out.len() - LENGTH_BYTES) as u32;
    out[..LENGTH_BYTES].copy_from_slice(&len.to_be_bytes());
    out
}

/// `REG_SEND` of `msg` from `from` to the name `to`.
pub fn reg_send(from: &Pid, to: &Term, msg: &Term) -> Vec<u8> {
    build(
        &Term::tuple(vec![
            Term::Int(op::REG_SEND),
            Term::pid(from.clone()),
            Term::static_atom(""),
            to.clone(),
        ]),
        Some(msg),
    )
}

/// `MONITOR_P` from our `from` of `to` (a pid or a name).
pub fn monitor(from: &Pid, to: &Term, reference: &Ref) -> Vec<u8> {
    build(
        &Term::tuple(vec![
            Term::Int(op::MONITOR_P),
            Term::pid(from.clone()),
            to.clone(),
            Term::reference(reference.clone()),
        ]),
        None,
    )
}

/// `DEMONITOR_P`.
pub fn demonitor(from: &Pid, to: &Term, reference: &Ref) -> Vec<u8> {
    build(
        &Term::tuple(vec![
            Term::Int(op::DEMONITOR_P),
            Term::pid(from.clone()),
            to.clone(),
            Term::reference(reference.clone()),
        ]),
        None,
    )
}

/// `MONITOR_P_EXIT`: the monitored `from` (pid or name) is gone.
pub fn monitor_exit(from: &Term, to: &Pid, reference: &Ref, reason: &Term) -> Vec<u8> {
    build(
        &Term::tuple(vec![
            Term::Int(op::MONITOR_P_EXIT),
            from.clone(),
            Term::pid(to.clone()),
            Term::reference(reference.clone()),
            reason.clone(),
        ]),
        None,
    )
}

/// `EXIT` (a linked process of ours exited, or a link target is missing).
pub fn exit(from: &Pid, to: &Pid, reason: &Term) -> Vec<u8> {
    build(
        &Term::tuple(vec![
            Term::Int(op::EXIT),
            Term::pid(from.clone()),
            Term::pid(to.clone()),
            reason.clone(),
        ]),
        None,
    )
}

/// `UNLINK_ID_ACK`.
pub fn unlink_id_ack(id: &Term, from: &Pid, to: &Pid) -> Vec<u8> {
    build(
        &Term::tuple(vec![
            Term::Int(op::UNLINK_ID_ACK),
            id.clone(),
            Term::pid(from.clone()),
            Term::pid(to.clone()),
        ]),
        None,
    )
}

/// `SPAWN_REQUEST` from our `from` for `{M, F, A}` with `opts` and `args`.
pub fn spawn_request(req_id: &Ref, from: &Pid, mfa: &Term, opts: &Term, args: &Term) -> Vec<u8> {
    build(
        &Term::tuple(vec![
            Term::Int(op::SPAWN_REQUEST),
            Term::reference(req_id.clone()),
            Term::pid(from.clone()),
            Term::pid(from.clone()),
            mfa.clone(),
            opts.clone(),
        ]),
        Some(args),
    )
}

/// `SPAWN_REPLY` to `to`: `result` is the new pid or an error atom.
pub fn spawn_reply(req_id: &Ref, to: &Pid, flags: i64, result: &Term) -> Vec<u8> {
    build(
        &Term::tuple(vec![
            Term::Int(op::SPAWN_REPLY),
            Term::reference(req_id.clone()),
            Term::pid(to.clone()),
            Term::Int(flags),
            result.clone(),
        ]),
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(id: u32) -> Pid {
        Pid {
            node: Atom::new("x@h"),
            id,
            serial: 0,
            creation: 1,
        }
    }

    /// The fast path for frequent operations gives what the generic
    /// path gives, for their usual shapes, odd operands and broken bytes.
    #[test]
    fn fast_path_agrees_with_generic() {
        let r = Ref::new(Atom::new("x@h"), 1, &[1, 2, 3]);
        let name = Term::atom("server");
        let pid = Term::pid(p(3));
        let odd = [Term::Int(1), Term::atom("x"), Term::NIL, Term::Int(-70000)];
        let mut ctrls = vec![];
        for (to, from) in [(&name, &pid), (&pid, &pid)] {
            for code in [op::MONITOR_P, op::DEMONITOR_P] {
                ctrls.push(Term::tuple(vec![
                    Term::Int(code),
                    from.clone(),
                    to.clone(),
                    Term::reference(r.clone()),
                ]));
            }
        }
        for o in &odd {
            ctrls.push(Term::tuple(vec![
                Term::Int(op::MONITOR_P),
                o.clone(),
                name.clone(),
                Term::reference(r.clone()),
            ]));
            ctrls.push(Term::tuple(vec![
                Term::Int(op::DEMONITOR_P),
                pid.clone(),
                name.clone(),
                o.clone(),
            ]));
            ctrls.push(Term::tuple(vec![
                Term::Int(op::REG_SEND),
                o.clone(),
                Term::atom(""),
                name.clone(),
            ]));
            ctrls.push(Term::tuple(vec![
                Term::Int(op::REG_SEND),
                pid.clone(),
                o.clone(),
                o.clone(),
            ]));
            ctrls.push(Term::tuple(vec![
                Term::Int(op::SEND_SENDER),
                pid.clone(),
                o.clone(),
            ]));
            ctrls.push(Term::tuple(vec![
                Term::Int(op::SEND_SENDER),
                o.clone(),
                pid.clone(),
            ]));
            ctrls.push(Term::tuple(vec![
                Term::Int(op::SEND),
                o.clone(),
                pid.clone(),
            ]));
            ctrls.push(Term::tuple(vec![Term::Int(op::SEND), o.clone(), o.clone()]));
        }
        ctrls.push(Term::tuple(vec![
            Term::Int(op::REG_SEND),
            pid.clone(),
            Term::atom(""),
            name.clone(),
        ]));
        ctrls.push(Term::tuple(vec![
            Term::Int(op::REG_SEND),
            pid.clone(),
            Term::atom(""),
            name.clone(),
            Term::Int(1),
        ]));
        ctrls.push(Term::tuple(vec![
            Term::Int(op::MONITOR_P),
            pid.clone(),
            name.clone(),
        ]));
        for ctrl in &ctrls {
            for payload in [Some(Term::atom("m")), None] {
                let mut body = vec![PASS_THROUGH];
                codec::encode_versioned(ctrl, &mut body);
                if let Some(m) = &payload {
                    codec::encode_versioned(m, &mut body);
                }
                for cut in [body.len(), body.len() - 1, body.len() / 2, 3] {
                    let b = &body[..cut];
                    assert_eq!(parse(b), parse_generic(b), "{ctrl:?} {payload:?} cut {cut}");
                }
            }
        }
    }

    #[test]
    fn direct_builders_match_build() {
        let to = p(9);
        let msg = Term::tuple(vec![Term::atom("a"), Term::Int(300)]);
        let ctrl = Term::tuple(vec![
            Term::Int(op::SEND),
            Term::atom(""),
            Term::pid(to.clone()),
        ]);
        assert_eq!(send(&to, &msg), build(&ctrl, Some(&msg)));
        let tag = Term::List(vec![
            Term::atom("alias"),
            Term::reference(Ref::new(Atom::new("x@h"), 1, &[1, 2, 3])),
        ]);
        let pair = Term::tuple(vec![tag.clone(), Term::atom("ok")]);
        assert_eq!(
            send_reply(&to, &tag, &Term::atom("ok")),
            build(&ctrl, Some(&pair))
        );
    }

    #[test]
    fn builds_parse_back() {
        let r = Ref::new(Atom::new("x@h"), 1, &[1, 2, 3]);
        let f = send(&p(1), &Term::atom("hi"));
        assert_eq!(
            parse(&f[4..]).unwrap(),
            Control::Send {
                to: p(1),
                from: None,
                msg: Term::atom("hi")
            }
        );
        let f = reg_send(&p(1), &Term::atom("server"), &Term::Int(5));
        assert!(matches!(parse(&f[4..]).unwrap(), Control::RegSend { .. }));
        let f = monitor_exit(&Term::atom("x"), &p(2), &r, &Term::atom("noproc"));
        assert!(matches!(
            parse(&f[4..]).unwrap(),
            Control::MonitorExit { .. }
        ));
        let f = spawn_request(&r, &p(1), &Term::NIL, &Term::NIL, &Term::NIL);
        assert!(matches!(
            parse(&f[4..]).unwrap(),
            Control::SpawnRequest { .. }
        ));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse(&[]).is_err());
        assert!(parse(&[68, 1, 2]).is_err());
        assert!(parse(&[112, 131, 104, 1, 97, 2]).is_err()); // SEND without operands
        assert!(parse(&[112, 131, 97, 2]).is_err()); // not a tuple
        let f = send(&p(1), &Term::atom("hi"));
        assert!(parse(&f[4..f.len() - 1]).is_err()); // truncated payload
        assert_eq!(
            parse(&build(&Term::tuple(vec![Term::Int(99)]), None)[4..]).unwrap(),
            Control::Other(99)
        );
    }
}
