//! The registered `locker` process: the server side of the locker wire
//! protocol (`docs/protocol.md`), with the same replies as the
//! BEAM node's `locker_server`, over [`locker_core::Engine`].
//!
//! One task owns the engine; calls are answered in arrival order. It arms
//! one timer, to the moment [`locker_core::Schedule`] says something is
//! next due (the lease and promise sweeps and the log push on their
//! intervals, a waiter's answer: a `wait_for_release` waiter is woken at
//! its lease's expiry to the millisecond), or this shell reconnects its
//! cluster, whichever comes first. The plain messages `expire_leases`,
//! `expire_locks` and `push_trans_log` run the tasks by hand, and
//! `{'$locker_debug', pause_timers}` holds them (as the BEAM server).
//!
//! Keys and values are stored encoded ([`crate::stored`]): byte equality
//! is `=:=`, and a 16-byte binary key or a pid value fits in the entry
//! without an allocation. They are decoded back where a term goes out
//! (replies, the pushed log, `get_debug_state`, dirty reads); promise tags
//! stay terms.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use locker_core::protocol::{self, DecodeError, Handled, Reply, Request};
use locker_core::{clock, Config, Engine, Intervals, LeaseMap, LogEntry, Schedule, Task, Wake};
use tokio::sync::watch;

use erl_node::node::Node;
use erl_node::process::{Mailbox, Signal};
use erl_node::term::{Atom, Pid, Term};
use erl_node::warn_bad_input;

use crate::membership::{self as mb, Configuration};
use crate::metrics::{Kind, LockerMetrics};
use crate::stored::{StoreCodec, Stored};
use crate::wire::Wire;
use locker_core::membership::Epoch;
use locker_core::membership::{self as rules, Install, Mode};
use locker_terms::EpochTerm;

/// The lease map shared with readers outside the `locker` task (rpc), and
/// the codec of its keys and values.
struct Store {
    /// The leases.
    leases: Arc<LeaseMap<Stored, Stored>>,
    /// How they are encoded.
    codec: StoreCodec,
}

/// Leases, promises and waiters handled per sweep step.
const SWEEP_BUDGET: usize = 1000;
/// Log entries per `trans_log` cast.
const PUSH_CHUNK: usize = 10_000;
/// Signals handled after one arrives, from what is already queued, before
/// the timers are polled again.
const DRAIN_BATCH: usize = 64;
/// How often the store's sizes go to the metrics, at most.
const GAUGES_EVERY: Duration = Duration::from_millis(20);
/// How often masters and replicas not connected are connected again.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

/// How the `locker` process starts.
#[derive(Clone, Debug)]
pub struct LockerConfig {
    /// Write quorum.
    pub w: i64,
    /// Masters.
    pub masters: Vec<Atom>,
    /// Replicas.
    pub replicas: Vec<Atom>,
    /// Lease sweep interval.
    pub lease_expire: Duration,
    /// Promise sweep interval.
    pub lock_expire: Duration,
    /// Log push interval.
    pub push: Duration,
    /// How long an unused promise holds its key.
    pub promise_ttl: Duration,
    /// Safe mode: refuse promises on unknown keys this long after start.
    pub restart_abstain: Duration,
}

type From = (Pid, Term);

/// The process state.
pub struct Locker {
    node: Node,
    metrics: Arc<LockerMetrics>,
    mb: Mailbox,
    engine: Engine<Stored, Stored, Term>,
    codec: StoreCodec,
    masters: Vec<Term>,
    replicas: Vec<Term>,
    w: Term,
    waiters: HashMap<u64, From>,
    next_id: u64,
    /// When the periodic tasks are due (with the engine's wake-ups).
    schedule: Schedule,
    /// The one timer: when it fires (`None`: not armed).
    timer_at: Option<tokio::time::Instant>,
    /// When the cluster is next reconnected (monotonic µs).
    reconnect_at: u64,
    sweeping: bool,
    /// The engine's count of log entries dropped at its limit, last seen.
    log_dropped: u64,
    /// The configuration's epoch, how it was set, and during a transition
    /// the previous masters and W (see `crate::membership`).
    epoch: Epoch,
    mode: Mode,
    joint: Option<(Vec<Term>, i64)>,
    /// Until when a lease stored under an epoch before the current one may
    /// live (the longest lease held when this node took the current one).
    horizon_at: u64,
    /// Epochs whose change was aborted (latest first, at most
    /// `ABORTED_KEPT`): never taken afterwards, whatever the order in
    /// which the install and the abort arrive.
    aborted: Vec<Epoch>,
    /// When this node last asked its masters for a newer configuration.
    pulled_at: Option<Instant>,
}

/// How many aborted epochs a node remembers.
const ABORTED_KEPT: usize = 32;
/// A node asks its masters for a newer configuration at most this often.
const PULL_EVERY: Duration = Duration::from_secs(1);
/// How long it waits for their answers.
const PULL_TIMEOUT: Duration = Duration::from_secs(5);

/// Atoms used in replies.
mod a {
    use erl_node::term::Term;
    pub const OK: Term = Term::static_atom("ok");
    pub const ERROR: Term = Term::static_atom("error");
    pub const NOT_FOUND: Term = Term::static_atom("not_found");
}

/// `{error, {unknown_request, Request}}`, with a bounded log line.
fn unknown(req: &Term, from: &From) -> Term {
    warn_bad_input!(request = %req.display(300), from = ?from.0, "unknown request");
    Term::tuple(vec![
        a::ERROR,
        Term::tuple(vec![Term::static_atom("unknown_request"), req.clone()]),
    ])
}

/// `{error, badarg}`, with a bounded log line.
fn badarg(req: &Term) -> Term {
    warn_bad_input!(request = %req.display(300), "bad arguments");
    Term::tuple(vec![a::ERROR, Term::static_atom("badarg")])
}

/// A lease or timeout length as every locker store reads it (see
/// [`locker_core::protocol::millis`]).
pub fn millis(t: &Term) -> Option<u64> {
    protocol::millis(Wire::of(t))
}

pub use crate::wire::u64_term;

/// The kind of a call, for the metrics.
fn kind_of(req: &Term) -> Kind {
    let name = match req {
        Term::Tuple(t) => t.first().and_then(Term::as_atom),
        Term::Atom(a) => Some(a),
        _ => None,
    };
    name.map_or(Kind::Unknown, |n| Kind::of_call(n.as_str()))
}

fn ordset(list: &[Term]) -> Vec<Term> {
    let mut v = list.to_vec();
    v.sort_by(erlang_atom_order);
    v.dedup();
    v
}

/// Atoms sort by text as in Erlang; other terms after them, in any stable order.
fn erlang_atom_order(x: &Term, y: &Term) -> std::cmp::Ordering {
    match (x, y) {
        (Term::Atom(p), Term::Atom(q)) => p.cmp(q),
        (Term::Atom(_), _) => std::cmp::Ordering::Less,
        (_, Term::Atom(_)) => std::cmp::Ordering::Greater,
        _ => x.cmp(y),
    }
}

impl Locker {
    /// Registers `locker` on `node`, serves `locker:dirty_read/1` to
    /// `rpc:call`, and builds the process; it counts its requests in
    /// `metrics`.
    pub fn new(
        node: &Node,
        cfg: LockerConfig,
        metrics: Arc<LockerMetrics>,
    ) -> Result<Self, String> {
        let mb = node.spawn(Some("locker"))?;
        let engine = Engine::new(Config {
            promise_ttl: locker_core::ms(cfg.promise_ttl.as_millis() as u64),
            ..Config::default()
        });
        let mut engine = engine;
        // Fencing tokens follow the wall clock in microseconds: a store that
        // starts empty refuses tokens issued before it started (as the NIF).
        let wall_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        engine.set_token_floor(wall_us);
        if !cfg.restart_abstain.is_zero() {
            engine.set_abstain_until(clock::now() + cfg.restart_abstain.as_micros() as u64);
        }
        let codec = StoreCodec::new();
        let store = Store {
            leases: engine.leases().clone(),
            codec: codec.clone(),
        };
        let rpc_metrics = metrics.clone();
        node.set_rpc_handler(move |m: &Term, f: &Term, args: &Term| {
            let started = Instant::now();
            let value = rpc(&store, m, f, args);
            rpc_metrics.request(Kind::Rpc, started.elapsed().as_nanos() as u64);
            value
        })?;
        let micros = |d: Duration| d.as_micros().try_into().unwrap_or(u64::MAX);
        let schedule = Schedule::new(
            Intervals {
                expire_leases: micros(cfg.lease_expire),
                expire_locks: micros(cfg.lock_expire),
                push_trans_log: micros(cfg.push),
            },
            clock::now(),
        );
        let mut l = Locker {
            node: node.clone(),
            metrics,
            mb,
            engine,
            codec,
            masters: Vec::new(),
            replicas: Vec::new(),
            w: Term::Int(cfg.w),
            waiters: HashMap::new(),
            next_id: 0,
            schedule,
            timer_at: None,
            reconnect_at: clock::now(),
            sweeping: false,
            log_dropped: 0,
            epoch: Epoch::initial(),
            mode: Mode::Legacy,
            joint: None,
            horizon_at: clock::now(),
            aborted: Vec::new(),
            pulled_at: None,
        };
        let m: Vec<Term> = cfg.masters.iter().cloned().map(Term::Atom).collect();
        let r: Vec<Term> = cfg.replicas.iter().cloned().map(Term::Atom).collect();
        l.set_meta(&m, &r);
        Ok(l)
    }

    fn is_master(&self) -> bool {
        let me = Term::Atom(self.node.name().clone());
        self.voters().contains(&me)
    }

    /// Every master that votes: the masters and, during a transition, the
    /// previous ones.
    fn voters(&self) -> Vec<Term> {
        let mut v = self.masters.clone();
        if let Some((old, _)) = &self.joint {
            v.extend(old.iter().filter(|n| !self.masters.contains(n)).cloned());
        }
        v
    }

    /// Replicas to push to: none unless this node is a master.
    fn push_targets(&self) -> Vec<Atom> {
        if !self.is_master() {
            return Vec::new();
        }
        // Never to a master (a node listed among both): masters hold
        // promises, and a log replayed there would bypass them.
        let voters = self.voters();
        self.replicas
            .iter()
            .filter(|r| !voters.contains(r))
            .filter_map(|r| r.as_atom())
            .filter(|r| *r != self.node.name())
            .cloned()
            .collect()
    }

    fn set_meta(&mut self, masters: &[Term], replicas: &[Term]) {
        self.masters = ordset(masters);
        self.replicas = ordset(replicas);
        let log = !self.push_targets().is_empty();
        self.engine.set_log_enabled(log);
    }

    /// Masters and replicas this node knows (for reconnecting).
    fn cluster(&self) -> Vec<Atom> {
        self.voters()
            .iter()
            .chain(self.replicas.iter())
            .filter_map(|t| t.as_atom().cloned())
            .filter(|n| n != self.node.name())
            .collect()
    }

    /// Serves until `stop` turns true; then answers what already arrived
    /// and pushes the log one last time.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut gauges_at = Instant::now();
        self.arm();
        loop {
            let timer = self.timer_at;
            tokio::select! {
                biased;
                sig = self.mb.recv() => match sig {
                    Some(sig) => {
                        self.signal(sig);
                        // Drain what is already queued without re-polling the timer.
                        for _ in 0..DRAIN_BATCH {
                            match self.mb.try_recv() {
                                Some(s) => self.signal(s),
                                None => break,
                            }
                        }
                    }
                    None => break,
                },
                _ = stop.changed() => break,
                _ = std::future::ready(()), if self.sweeping => self.sweep(),
                _ = sleep_until(timer), if timer.is_some() => {
                    self.timer_at = None;
                    self.tick();
                }
            }
            if gauges_at.elapsed() >= GAUGES_EVERY {
                self.update_gauges();
                gauges_at = Instant::now();
            }
        }
        // Graceful stop: answer everything already received, push the log.
        while let Some(sig) = self.mb.try_recv() {
            self.signal(sig);
        }
        self.push();
        tracing::info!("locker stopped: in-flight calls answered, log pushed");
    }

    fn update_gauges(&self) {
        let s = self.engine.summary();
        let mut g = self.metrics.gauges.lock();
        g.leases = s.leases as u64;
        g.promises = s.promises as u64;
        g.waiters = s.waiters as u64;
        g.log = s.log as u64;
    }

    fn reconnect(&self) {
        for n in self.cluster() {
            if !self.node.is_connected(&n) {
                self.node.connect(&n);
            }
        }
    }

    fn reply(&self, from: &From, reply: Term) {
        self.node.send_reply(&from.0, &from.1, reply);
    }

    /// Handles one signal.
    fn signal(&mut self, sig: Signal) {
        let Signal::Message { msg, .. } = sig else {
            return; // exits and downs mean nothing to the server
        };
        let msg = match msg.into_gen_call() {
            Ok((pid, tag, req)) => {
                let from = (pid, tag);
                let started = Instant::now();
                let kind = kind_of(&req);
                if let Some(reply) = self.call(&req, &from) {
                    self.reply(&from, reply);
                }
                self.metrics
                    .request(kind, started.elapsed().as_nanos() as u64);
                return;
            }
            Err(msg) => msg,
        };
        match &msg {
            Term::Tuple(t) if t.len() == 3 && t[0].is_atom("$gen_call") => {
                warn_bad_input!(from = %t[1].display(200), "call with a malformed From dropped");
            }
            Term::Tuple(t) if t.len() == 2 && t[0].is_atom("$gen_cast") => self.cast(&t[1]),
            Term::Atom(x) if x.as_str() == "expire_leases" || x.as_str() == "expire_locks" => {
                self.sweep()
            }
            Term::Atom(x) if x.as_str() == "push_trans_log" => self.push(),
            other => tracing::debug!(msg = %other.display(200), "unexpected message ignored"),
        }
    }

    /// Serves a call; `None` when the answer comes later (a waiter).
    fn call(&mut self, req: &Term, from: &From) -> Option<Term> {
        let now = clock::now();
        if let Some(refusal) = self.epoch_refusal(req, from) {
            return Some(refusal);
        }
        let mut request = match Request::decode_tuple(Wire::of(req), &self.codec) {
            Ok(Some(request)) => request,
            Ok(None) => return Some(self.shell_call(req, from, now)),
            Err(DecodeError::Unknown) => return Some(unknown(req, from)),
            Err(DecodeError::BadArg) => return Some(badarg(req)),
        };
        // A write or an extension may move a watched lease's expiry.
        let moves_expiry = matches!(
            request,
            Request::Write { .. }
                | Request::ExtendLease { .. }
                | Request::CondWrite { .. }
                | Request::CondExtend { .. }
                | Request::Undo { .. }
        );
        let id = self.next_id;
        request.set_waiter(id);
        let Handled { reply, wakes } = self.engine.handle(request, now);
        if reply == Reply::Pending {
            self.waiters.insert(id, from.clone());
            self.next_id += 1;
            self.arm();
            return None;
        }
        self.woken(wakes);
        if moves_expiry && reply == Reply::Ok {
            self.rearm();
        }
        Some(reply.encode(&self.codec))
    }

    /// The requests of this server that are not the store's.
    fn shell_call(&mut self, req: &Term, from: &From, now: u64) -> Term {
        let items: &[Term] = req.as_tuple().unwrap_or(&[]);
        let op = items
            .first()
            .and_then(Term::as_atom)
            .map(Atom::as_str)
            .unwrap_or("");
        match (op, items.len()) {
            ("$locker_config", 2) => self.config_call(&items[1], req, from, now),
            (protocol::BATCH, 2) => self.batch(&items[1], from, now),
            ("set_nodes", 3) if self.mode == Mode::Epoch => match (&items[1], &items[2]) {
                (Term::List(m), Term::List(r)) => {
                    let unchanged = self.joint.is_none()
                        && ordset(m) == self.masters
                        && ordset(r) == self.replicas;
                    self.legacy_request(unchanged, req, from)
                }
                _ => unknown(req, from),
            },
            ("set_w", 2) if self.mode == Mode::Epoch => match &items[1] {
                w @ (Term::Int(1..) | Term::Big(_)) if !matches!(w, Term::Big(b) if b.negative) => {
                    let unchanged = self.joint.is_none() && *w == self.w;
                    self.legacy_request(unchanged, req, from)
                }
                _ => unknown(req, from),
            },
            ("set_nodes", 3) => match (&items[1], &items[2]) {
                (Term::List(m), Term::List(r)) => {
                    let (m, r) = (m.clone(), r.clone());
                    self.set_meta(&m, &r);
                    tracing::info!(masters = %Term::List(self.masters.clone()), replicas = %Term::List(self.replicas.clone()), "set_nodes");
                    self.reconnect();
                    a::OK
                }
                _ => unknown(req, from),
            },
            ("set_w", 2) => match &items[1] {
                w @ (Term::Int(1..) | Term::Big(_)) if !matches!(w, Term::Big(b) if b.negative) => {
                    self.w = w.clone();
                    a::OK
                }
                _ => unknown(req, from),
            },
            ("$locker_debug", 2) => self.debug_call(&items[1], req, from),
            _ if req.is_atom("get_debug_state") => self.debug_state(now),
            _ => unknown(req, from),
        }
    }

    /// A coordinator's batch `{'$locker_batch', Requests}`: every request
    /// decoded first ([`protocol::decode_batch`]; one malformed request
    /// rejects the batch whole, nothing applied: `{error, bad_batch}`),
    /// then each applied in order as if it came alone (its epoch check
    /// first), answered `{ok, Replies}` in the same order.
    fn batch(&mut self, reqs: &Term, from: &From, now: u64) -> Term {
        let decoded = match reqs {
            Term::List(items) => protocol::decode_batch(Wire::slice(items), &self.codec)
                .map(|d| items.iter().zip(d).collect::<Vec<_>>()),
            _ => Err(protocol::BatchError::Size),
        };
        let requests = match decoded {
            Ok(requests) => requests,
            Err(why) => {
                warn_bad_input!(batch = %reqs.display(300), from = ?from.0, why = ?why, "malformed batch rejected");
                return Term::tuple(vec![a::ERROR, Term::static_atom("bad_batch")]);
            }
        };
        self.metrics.batch(requests.len());
        let mut moved = false;
        let mut replies = Vec::with_capacity(requests.len());
        for (raw, request) in requests {
            if let Some(refusal) = self.epoch_refusal(raw, from) {
                replies.push(refusal);
                continue;
            }
            let moves_expiry =
                matches!(request, Request::Write { .. } | Request::ExtendLease { .. });
            let Handled { reply, wakes } = self.engine.handle(request, now);
            self.woken(wakes);
            moved |= moves_expiry && reply == Reply::Ok;
            replies.push(reply.encode(&self.codec));
        }
        if moved {
            self.rearm();
        }
        Term::tuple(vec![a::OK, Term::List(replies)])
    }

    /// `{error, {config_epoch, Ours}}` for a vote or phase two made under
    /// another epoch, once this node's configuration was set through
    /// epochs (see `locker_core::membership::refuses_vote`).
    fn epoch_refusal(&mut self, req: &Term, from: &From) -> Option<Term> {
        let tag = mb::checked_tag(req)?;
        let Some(theirs) = mb::tag_epoch(tag) else {
            // Untagged phase one on a node the cluster removed, or any
            // untagged vote or phase two while the configuration is joint.
            let phase_one = req
                .as_tuple()
                .and_then(|t| t.first())
                .and_then(Term::as_atom)
                .is_some_and(|a| a.as_str() == "get_write_lock");
            let joint = self.joint.is_some();
            if rules::refuses_untagged(self.mode, self.is_master(), joint, phase_one) {
                warn_bad_input!(
                    from = ?from.0,
                    ours = %self.epoch.term().display(100),
                    joint,
                    "untagged vote or phase two refused: this node is not a master of its configuration, or its configuration is joint"
                );
                return Some(Term::tuple(vec![
                    a::ERROR,
                    Term::tuple(vec![Term::static_atom("config_epoch"), self.epoch.term()]),
                ]));
            }
            return None;
        };
        if !rules::refuses_vote(self.mode, &self.epoch, Some(&theirs)) {
            return None;
        }
        warn_bad_input!(
            from = ?from.0,
            theirs = %theirs.term().display(100),
            ours = %self.epoch.term().display(100),
            "request made under another configuration epoch refused"
        );
        if theirs > self.epoch {
            // The caller's epoch is newer: this node may have missed a
            // change.
            self.maybe_pull();
        }
        Some(Term::tuple(vec![
            a::ERROR,
            Term::tuple(vec![Term::static_atom("config_epoch"), self.epoch.term()]),
        ]))
    }

    /// Asks this node's masters for their configuration (at most once per
    /// `PULL_EVERY`), as a BEAM master does after refusing a vote made
    /// under a newer epoch: a task gathers their answers and, if a quorum
    /// of this node's configuration reports a newer one
    /// (`locker_core::membership::catch_up_choice`), sends this process
    /// `{'$locker_config', {catch_up, Config, Master}}`, which takes it
    /// under the same checks as any catch-up. Only in `Mode::Epoch`: the
    /// masters are then all nodes that know the request.
    fn maybe_pull(&mut self) {
        if self.mode != Mode::Epoch || self.pulled_at.is_some_and(|t| t.elapsed() < PULL_EVERY) {
            return;
        }
        self.pulled_at = Some(Instant::now());
        let me = self.node.name().clone();
        let ask: Vec<Atom> = self
            .voters()
            .iter()
            .filter_map(|n| n.as_atom().cloned())
            .filter(|n| *n != me)
            .collect();
        let w = match self.w {
            Term::Int(w) if w > 0 => w as usize,
            _ => return,
        };
        let mut quorums = Vec::new();
        if let Some((old, old_w)) = &self.joint {
            quorums.push((old.clone(), (*old_w).max(0) as usize));
        }
        quorums.push((self.masters.clone(), w));
        let task = Pull {
            node: self.node.clone(),
            locker: self.mb.pid().clone(),
            ask,
            quorums,
            own: self.epoch.clone(),
            aborted: self.aborted.clone(),
        };
        tracing::info!(epoch = %self.epoch.term().display(100), "asking the masters for a newer configuration");
        tokio::spawn(task.run());
    }

    /// An original `set_nodes` or `set_w` on a node configured through
    /// epochs: `ok` if it changes nothing, else refused and logged.
    fn legacy_request(&self, unchanged: bool, req: &Term, from: &From) -> Term {
        if rules::takes_legacy_request(self.mode, unchanged) {
            return a::OK;
        }
        warn_bad_input!(
            from = ?from.0,
            request = %req.display(200),
            epoch = %self.epoch.term().display(100),
            "refused: this node's configuration changes only through locker_membership"
        );
        Term::tuple(vec![
            a::ERROR,
            Term::tuple(vec![
                Term::static_atom("epoch_configured"),
                self.epoch.term(),
            ]),
        ])
    }

    /// This node's configuration.
    fn configuration(&self) -> Configuration {
        Configuration {
            epoch: self.epoch.clone(),
            masters: self.masters.clone(),
            replicas: self.replicas.clone(),
            w: match self.w {
                Term::Int(w) => w,
                _ => i64::MAX,
            },
            joint: self.joint.clone(),
            mode: self.mode,
        }
    }

    /// The token floor raised to every live lease's token, and until when
    /// the longest live lease lasts.
    fn snapshot(&self, now: u64) -> (u64, u64) {
        let mut floor = self.engine.token_floor();
        let mut until = now;
        self.engine.leases().for_each(|_, l| {
            if l.is_valid_at(now) {
                floor = floor.max(l.token);
                until = until.max(l.expires_at);
            }
        });
        (floor, until)
    }

    /// Takes a configuration (the horizon moves if the epoch changes).
    fn take(&mut self, c: Configuration, now: u64) {
        if c.epoch != self.epoch {
            let (_, until) = self.snapshot(now);
            self.horizon_at = self.horizon_at.max(until);
        }
        tracing::info!(epoch = %c.epoch.term().display(100), masters = %Term::List(c.masters.clone()), w = c.w, "configuration taken");
        self.epoch = c.epoch;
        self.mode = c.mode;
        self.joint = c.joint;
        // While joint, an extension never shortens a live lease
        // (`locker_core::membership::stored_expiry`).
        self.engine.set_joint(self.joint.is_some());
        self.w = Term::Int(c.w);
        self.set_meta(&c.masters, &c.replicas);
        self.reconnect();
    }

    /// A configuration refused: one bounded line naming the sender and
    /// both epochs.
    fn refused(&self, why: &str, new: &Configuration, from: &From) {
        warn_bad_input!(
            from = ?from.0,
            theirs = %new.epoch.term().display(100),
            ours = %self.epoch.term().display(100),
            why,
            "refused configuration"
        );
    }

    /// `{'$locker_config', Request}` (see docs/protocol.md).
    fn config_call(&mut self, r: &Term, req: &Term, from: &From, now: u64) -> Term {
        let ok = |t: Vec<Term>| {
            let mut items = vec![a::OK];
            items.extend(t);
            Term::tuple(items)
        };
        let err = |t: Term| Term::tuple(vec![a::ERROR, t]);
        if r.is_atom("get") {
            return ok(vec![self.configuration().term()]);
        }
        if r.is_atom("info") {
            let (floor, _) = self.snapshot(now);
            return ok(vec![
                self.configuration().term(),
                Term::Int(floor.min(i64::MAX as u64) as i64),
            ]);
        }
        if r.is_atom("horizon") {
            let (floor, longest) = self.snapshot(now);
            // The noted horizon, or sooner if the leases it covered are
            // gone; in safe mode, leases this node forgot may still live:
            // count them until it stops refusing unknown keys.
            let until = locker_core::membership::horizon_until(
                self.horizon_at,
                longest,
                self.engine.abstain_until(),
            );
            let left = until.saturating_sub(now).div_ceil(1_000);
            return ok(vec![
                self.epoch.term(),
                Term::Int(left.min(i64::MAX as u64) as i64),
                Term::Int(floor.min(i64::MAX as u64) as i64),
            ]);
        }
        let items = r.as_tuple().unwrap_or(&[]);
        let op = items
            .first()
            .and_then(Term::as_atom)
            .map(Atom::as_str)
            .unwrap_or("");
        match (op, items) {
            ("install", [_, base, new, Term::Int(floor)]) if *floor >= 0 => {
                let (Some(base), Some(new)) =
                    (locker_terms::epoch_of(base), Configuration::of(new))
                else {
                    return unknown(req, from);
                };
                if self.aborted.contains(&new.epoch) {
                    self.refused("aborted by its proposer", &new, from);
                    return err(Term::tuple(vec![
                        Term::static_atom("aborted_epoch"),
                        new.epoch.term(),
                    ]));
                }
                if !new.fits() {
                    self.refused("a configuration that cannot work (masters, W)", &new, from);
                    return err(Term::tuple(vec![
                        Term::static_atom("unfit_config"),
                        Term::List(new.masters.clone()),
                        Term::Int(new.w),
                    ]));
                }
                let unchanged = new == self.configuration();
                match rules::install(self.mode, &self.epoch, unchanged, &base, &new.epoch) {
                    Install::Unchanged => {
                        self.engine.set_token_floor(*floor as u64);
                        a::OK
                    }
                    Install::Take => {
                        self.engine.set_token_floor(*floor as u64);
                        self.take(new, now);
                        a::OK
                    }
                    Install::Stale => {
                        self.refused("not newer than this node's epoch", &new, from);
                        err(Term::tuple(vec![
                            Term::static_atom("stale_epoch"),
                            new.epoch.term(),
                            self.epoch.term(),
                        ]))
                    }
                    Install::Conflict => {
                        self.refused("made from another configuration", &new, from);
                        err(Term::tuple(vec![
                            Term::static_atom("conflict"),
                            base.term(),
                            self.epoch.term(),
                        ]))
                    }
                }
            }
            ("abort", [_, epoch, prev]) => {
                match (locker_terms::epoch_of(epoch), Configuration::of(prev)) {
                    (Some(e), Some(prev)) => {
                        let back = e == self.epoch;
                        self.aborted.retain(|x| *x != e);
                        self.aborted.insert(0, e);
                        self.aborted.truncate(ABORTED_KEPT);
                        if back {
                            self.take(prev, now);
                        }
                        a::OK
                    }
                    _ => unknown(req, from),
                }
            }
            ("force", [_, base, new]) => {
                match (locker_terms::epoch_of(base), Configuration::of(new)) {
                    (Some(base), Some(new)) => {
                        if rules::accepts_overwrite(self.mode, &self.epoch, &base) {
                            self.take(new, now);
                            a::OK
                        } else {
                            self.refused("made from another configuration", &new, from);
                            err(Term::tuple(vec![
                                Term::static_atom("conflict"),
                                base.term(),
                                self.epoch.term(),
                            ]))
                        }
                    }
                    _ => unknown(req, from),
                }
            }
            // Only this node's own pull (`Pull`, which checked that a
            // quorum of its masters reports the configuration) sends it:
            // from another node it is bad input, whatever master it names.
            ("catch_up", _) if from.0.node != *self.node.name() => {
                warn_bad_input!(
                    from = ?from.0,
                    "catch_up refused: only this node's own pull sends it"
                );
                err(Term::static_atom("not_local"))
            }
            ("catch_up", [_, new, Term::Atom(node)]) => match Configuration::of(new) {
                Some(new) if new.fits() && !self.aborted.contains(&new.epoch) => {
                    let trusted = self.voters().contains(&Term::Atom(node.clone()));
                    if rules::catches_up(&self.epoch, &new.epoch, new.mode, trusted) {
                        self.take(new, now);
                        a::OK
                    } else {
                        err(Term::static_atom("not_newer"))
                    }
                }
                Some(_) => err(Term::static_atom("not_newer")),
                None => unknown(req, from),
            },
            _ => unknown(req, from),
        }
    }

    /// `{'$locker_debug', Request}`: tests hold time still. The periodic
    /// tasks (all, or those named) stop until resumed and run by hand
    /// (the `expire_leases`, `expire_locks`, `push_trans_log` messages);
    /// waiters are still answered on time.
    fn debug_call(&mut self, request: &Term, req: &Term, from: &From) -> Term {
        let (pause, which) = match request {
            Term::Atom(x) if x.as_str() == "pause_timers" => (true, None),
            Term::Atom(x) if x.as_str() == "resume_timers" => (false, None),
            Term::Tuple(t) if t.len() == 2 && t[0].is_atom("pause_timers") => (true, Some(&t[1])),
            Term::Tuple(t) if t.len() == 2 && t[0].is_atom("resume_timers") => (false, Some(&t[1])),
            _ => return unknown(req, from),
        };
        let tasks: Vec<Task> = match which {
            None => Task::ALL.to_vec(),
            Some(w) if w.is_atom("all") => Task::ALL.to_vec(),
            Some(Term::List(l)) => {
                let tasks: Option<Vec<Task>> = l
                    .iter()
                    .map(|t| t.as_atom().and_then(|a| Task::from_name(a.as_str())))
                    .collect();
                match tasks {
                    Some(t) => t,
                    None => return badarg(req),
                }
            }
            Some(_) => return badarg(req),
        };
        let now = clock::now();
        for t in tasks {
            if pause {
                self.schedule.pause(t);
            } else {
                self.schedule.resume(t, now);
            }
        }
        self.arm();
        a::OK
    }

    fn debug_state(&self, now: u64) -> Term {
        let mut promises = Vec::new();
        self.engine.for_each_promise(|k, t, d| {
            if d > now {
                promises.push(Term::tuple(vec![
                    self.codec.decode(k),
                    t.clone(),
                    Term::Int(clock::to_system_ms(d)),
                ]));
            }
        });
        let mut leases = Vec::new();
        self.engine.leases().for_each(|k, l| {
            if l.is_valid_at(now) {
                leases.push(Term::tuple(vec![
                    self.codec.decode(k),
                    self.codec.decode(&l.value),
                    Term::Int(clock::to_system_ms(l.expires_at)),
                ]));
            }
        });
        // The original's three timer references: here, how long until each
        // periodic task is next due (ms), or `paused`.
        let [t1, t2, t3] = Task::ALL.map(|t| match self.schedule.due_at(t) {
            Some(at) => u64_term(at.saturating_sub(now).div_ceil(1_000)),
            None => Term::static_atom("paused"),
        });
        Term::tuple(vec![
            a::OK,
            Term::List(promises),
            Term::List(leases),
            t1,
            t2,
            t3,
        ])
    }

    fn cast(&mut self, msg: &Term) {
        let items = msg.as_tuple().unwrap_or(&[]);
        if items.len() == 3 && items[0].is_atom("trans_log") {
            let started = Instant::now();
            let from = items[1].display(100);
            if self.is_master() {
                // A master learns leases through votes and phase two only:
                // a log replayed here would bypass its promises (a pushed
                // release could delete the lease of the next holder).
                warn_bad_input!(from = %from, "transaction log sent to a master dropped");
                return;
            }
            let (entries, proper): (&[Term], bool) = match &items[2] {
                Term::List(l) => (l, true),
                Term::Improper(b) => (&b.0, false),
                _ => {
                    warn_bad_input!(from = %from, "malformed transaction log (not a list) dropped");
                    return;
                }
            };
            let now = clock::now();
            let mut skipped = 0;
            let mut wakes = Vec::new();
            for e in entries {
                match LogEntry::decode(Wire::of(e), &self.codec) {
                    Some(entry) => wakes.extend(self.engine.replay(entry, now)),
                    None => skipped += 1,
                }
            }
            if skipped > 0 {
                warn_bad_input!(skipped, from = %from, "skipped unknown log entries");
            }
            if !proper {
                warn_bad_input!(from = %from, "malformed transaction log (improper list)");
            }
            self.woken(wakes);
            self.rearm();
            self.metrics
                .request(Kind::TransLog, started.elapsed().as_nanos() as u64);
        } else {
            warn_bad_input!(cast = %msg.display(200), "unknown cast ignored");
        }
    }

    fn sweep(&mut self) {
        let r = self.engine.sweep(clock::now(), SWEEP_BUDGET);
        for id in r.timed_out {
            self.waiters.remove(&id);
        }
        self.woken(r.wakes);
        self.sweeping = !r.done;
        if r.done {
            self.arm();
        }
    }

    fn push(&mut self) {
        self.note_log_dropped();
        let to = self.push_targets();
        if to.is_empty() {
            return;
        }
        let me = Term::Atom(self.node.name().clone());
        loop {
            let entries = self.engine.take_log(PUSH_CHUNK);
            if entries.is_empty() {
                return;
            }
            let list = Term::List(entries.into_iter().map(|e| e.encode(&self.codec)).collect());
            let msg = Term::tuple(vec![
                Term::static_atom("$gen_cast"),
                Term::tuple(vec![Term::static_atom("trans_log"), me.clone(), list]),
            ]);
            for r in &to {
                self.node.reg_send(self.mb.pid(), "locker", r, msg.clone());
            }
        }
    }

    /// The transaction log is bounded: past its limit the oldest entries
    /// are dropped and replicas catch up through later writes.
    fn note_log_dropped(&mut self) {
        let dropped = self.engine.summary().log_dropped;
        if dropped > self.log_dropped {
            tracing::warn!(
                dropped = dropped - self.log_dropped,
                "transaction log limit reached: oldest entries dropped; \
                 replicas catch up through later writes and extensions"
            );
            self.log_dropped = dropped;
        }
    }

    fn woken(&mut self, wakes: Vec<Wake<Stored>>) {
        for w in wakes {
            let (id, reply) = w.into_reply();
            if let Some(from) = self.waiters.remove(&id) {
                self.reply(&from, reply.encode(&self.codec));
            }
        }
    }

    fn rearm(&mut self) {
        if !self.waiters.is_empty() {
            self.arm();
        }
    }

    /// The timer fired: does what the schedule says is due, and reconnects
    /// the cluster when that is due.
    fn tick(&mut self) {
        let now = clock::now();
        let due = self.schedule.take_due(now, self.engine.next_wakeup());
        if due.push {
            self.push();
        }
        if due.sweep {
            self.sweep();
        }
        if now >= self.reconnect_at {
            self.reconnect();
            erl_node::log_limit::BAD_INPUT.flush();
            self.reconnect_at = now.saturating_add(RECONNECT_EVERY.as_micros() as u64);
        }
        self.arm();
    }

    /// Keeps the one timer armed to the earliest of the schedule's next
    /// moment and the next reconnection. A timer already armed earlier is
    /// kept (it fires, finds nothing due, and is armed again). While a
    /// sweep runs in steps, it arms when done.
    fn arm(&mut self) {
        if self.sweeping {
            return;
        }
        let now = clock::now();
        let at = self
            .schedule
            .next_at(self.engine.next_wakeup())
            .map_or(self.reconnect_at, |at| at.min(self.reconnect_at));
        let when = tokio::time::Instant::now() + Duration::from_micros(at.saturating_sub(now));
        match self.timer_at {
            Some(t) if t <= when => {}
            _ => self.timer_at = Some(when),
        }
    }
}

/// A catch-up's questions to the masters (see [`Locker::maybe_pull`]).
struct Pull {
    node: Node,
    locker: Pid,
    ask: Vec<Atom>,
    quorums: Vec<(Vec<Term>, usize)>,
    own: Epoch,
    aborted: Vec<Epoch>,
}

impl Pull {
    async fn run(self) {
        let Ok(mut mb) = self.node.spawn(None) else {
            return;
        };
        let me = mb.pid().clone();
        let get = Term::tuple(vec![
            Term::static_atom("$locker_config"),
            Term::static_atom("get"),
        ]);
        let mut pending: HashMap<Term, Atom> = HashMap::new();
        for n in &self.ask {
            let r = Term::reference(self.node.make_ref());
            let call = Term::tuple(vec![
                Term::static_atom("$gen_call"),
                Term::tuple(vec![Term::pid(me.clone()), r.clone()]),
                get.clone(),
            ]);
            self.node.reg_send(&me, "locker", n, call);
            pending.insert(r, n.clone());
        }
        let deadline = tokio::time::Instant::now() + PULL_TIMEOUT;
        let mut reports = Vec::new();
        let mut configs = Vec::new();
        while !pending.is_empty() {
            let Ok(Some(sig)) = tokio::time::timeout_at(deadline, mb.recv()).await else {
                break;
            };
            let Signal::Message { msg, .. } = sig else {
                continue;
            };
            let Some([r, reply]) = msg.as_tuple() else {
                continue;
            };
            let Some(from) = pending.remove(r) else {
                continue;
            };
            if let Some([ok, config]) = reply.as_tuple() {
                if let (true, Some(c)) = (ok.is_atom("ok"), Configuration::of(config)) {
                    let eligible =
                        c.mode == Mode::Epoch && c.fits() && !self.aborted.contains(&c.epoch);
                    reports.push(rules::Report {
                        from: Term::Atom(from.clone()),
                        epoch: c.epoch.clone(),
                        eligible,
                    });
                    configs.push((from, c));
                }
            }
        }
        let Some(i) = rules::catch_up_choice(&self.own, &self.quorums, &reports) else {
            tracing::info!("no newer configuration backed by a quorum of the masters");
            return;
        };
        let (from, c) = configs.swap_remove(i);
        let call = Term::tuple(vec![
            Term::static_atom("$gen_call"),
            Term::tuple(vec![
                Term::pid(me.clone()),
                Term::reference(self.node.make_ref()),
            ]),
            Term::tuple(vec![
                Term::static_atom("$locker_config"),
                Term::tuple(vec![
                    Term::static_atom("catch_up"),
                    c.term(),
                    Term::Atom(from),
                ]),
            ]),
        ]);
        self.node.send(&self.locker, call);
        // The answer (taken or not) is not needed; the process ends.
        let _ = tokio::time::timeout(PULL_TIMEOUT, mb.recv()).await;
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// `rpc:call(Node, M, F, Args)` on this node: `locker:dirty_read(Key)` is
/// served (what `locker:master_dirty_read/1` sends); any other function is
/// not (`None`: the caller gets `undef`).
fn rpc(store: &Store, m: &Term, f: &Term, args: &Term) -> Option<Term> {
    match args.as_list() {
        Some([key]) if m.is_atom("locker") && f.is_atom("dirty_read") => {
            Some(dirty_read(store, key))
        }
        _ => None,
    }
}

/// A dirty read of the local store, as `locker:dirty_read/1` answers it.
fn dirty_read(store: &Store, key: &Term) -> Term {
    let key = store.codec.encode_lookup(key);
    match store
        .leases
        .read(&*key, |l| {
            clock::is_before(l.expires_at).then(|| l.value.clone())
        })
        .flatten()
    {
        Some(v) => Term::tuple(vec![a::OK, store.codec.decode(&v)]),
        None => Term::tuple(vec![a::ERROR, a::NOT_FOUND]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_like_the_nif() {
        assert_eq!(millis(&Term::Int(-5)), Some(0));
        assert_eq!(millis(&Term::Int(100)), Some(100));
        assert_eq!(millis(&Term::atom("infinity")), Some(u64::MAX / 2000));
        assert_eq!(millis(&Term::atom("x")), None);
        assert_eq!(millis(&Term::binary(b"x")), None);
    }

    #[test]
    fn ordsets_sort_atoms() {
        let s = ordset(&[Term::atom("b"), Term::atom("a"), Term::atom("b")]);
        assert_eq!(s, vec![Term::atom("a"), Term::atom("b")]);
    }
}
