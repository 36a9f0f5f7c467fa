//! The Rust client API: a Rust service joins a locker cluster as a hidden
//! node, runs the coordinator algorithm of `locker.erl` (same requests, same
//! replies), and can own names in `Locker.Registry`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), String> {
//! use lockerd::client::{Client, ClientConfig, LockResult};
//! use lockerd::Term;
//! use std::time::Duration;
//! let client = Client::start(ClientConfig::new(
//!     "svc@127.0.0.1", "cookie", &["a@127.0.0.1", "b@127.0.0.1", "c@127.0.0.1"], &[], 2,
//! )).await?;
//! let me = Term::pid(client.node().spawn(None)?.pid().clone());
//! let key = Term::atom("job-42");
//! let t = Duration::from_secs(5);
//! assert!(matches!(client.lock(&key, &me, 10_000, t).await, LockResult::Ok { .. }));
//! client.extend_lease(&key, &me, 10_000, t).await.unwrap();
//! client.release(&key, &me, t).await;
//! # Ok(()) }
//! ```
//!
//! Names: [`Client::register_name`] locks a name for a mailbox pid of this
//! node, keeps the lease alive in the background (extending it before it
//! runs out, as `Locker.Registry`'s keeper does), and hands over the
//! messages BEAM code sends with `GenServer.call({:via, Locker.Registry,
//! name}, msg)` or `send/2` ([`Incoming`]); calls are answered with
//! [`RegisteredName::reply`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use locker_core::clock;
use locker_core::coordinator::{Outcome, Step, TwoPhase, Vote};
use locker_core::quorum::PHASE_TWO_BUDGET_MS;
use tokio::sync::watch;
use tokio::time::Instant;

use erl_node::metrics::Metrics;
use erl_node::node::{Node, NodeConfig};
use erl_node::process::{Mailbox, Signal};
use erl_node::term::{Atom, Pid, Ref, Term};

/// How a client joins.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The client's own node.
    pub node: NodeConfig,
    /// Masters.
    pub masters: Vec<String>,
    /// Replicas.
    pub replicas: Vec<String>,
    /// Write quorum.
    pub w: usize,
}

impl ClientConfig {
    /// A configuration with defaults for everything else.
    pub fn new(name: &str, cookie: &str, masters: &[&str], replicas: &[&str], w: usize) -> Self {
        ClientConfig {
            node: NodeConfig::new(name, cookie),
            masters: masters.iter().map(|s| s.to_string()).collect(),
            replicas: replicas.iter().map(|s| s.to_string()).collect(),
            w,
        }
    }
}

/// What `lock`, `update` and `release` return, as in `locker.erl`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockResult {
    /// `{ok, W, Votes, Commits}`.
    Ok {
        /// The quorum.
        w: usize,
        /// Masters that promised.
        votes: usize,
        /// Nodes that applied phase two (at least `w` masters).
        commits: usize,
    },
    /// `{error, no_quorum}`.
    NoQuorum,
}

impl LockResult {
    /// The reply term `locker.erl` gives.
    pub fn to_term(&self) -> Term {
        match *self {
            LockResult::Ok { w, votes, commits } => Term::tuple(vec![
                Term::static_atom("ok"),
                Term::Int(w as i64),
                Term::Int(votes as i64),
                Term::Int(commits as i64),
            ]),
            LockResult::NoQuorum => no_quorum(),
        }
    }

    /// Whether it is `{ok, ...}`.
    pub fn is_ok(&self) -> bool {
        matches!(self, LockResult::Ok { .. })
    }
}

fn no_quorum() -> Term {
    Term::tuple(vec![
        Term::static_atom("error"),
        Term::static_atom("no_quorum"),
    ])
}

/// `{error, no_quorum}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoQuorum;

impl std::fmt::Display for NoQuorum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no_quorum")
    }
}
impl std::error::Error for NoQuorum {}

struct Inner {
    node: Node,
    masters: Vec<Atom>,
    replicas: Vec<Atom>,
    w: usize,
    token: AtomicU64,
}

/// A client of a locker cluster; cheap to clone.
#[derive(Clone)]
pub struct Client(Arc<Inner>);

/// A coordinator's operation: one mailbox, one monitor per remote `locker`.
struct Session {
    mb: Mailbox,
    remote: HashMap<Atom, Ref>,
    /// Phase-one requests still unanswered when the outcome was known.
    late: HashMap<Ref, Atom>,
    /// Their replies, as they arrive during later rounds (a node answers
    /// in order, so every node that answered phase two is here).
    late_replies: Vec<(Atom, Term)>,
}

fn wall_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl Client {
    /// Starts a hidden node (epmd, listener, `net_kernel`) and connects to
    /// the masters and replicas (waiting up to 5 s for them).
    pub async fn start(cfg: ClientConfig) -> Result<Client, String> {
        let node = Node::start(cfg.node.clone(), Arc::new(Metrics::default())).await?;
        erl_node::net_kernel::spawn(&node)?;
        let c = Client::new(node, &cfg.masters, &cfg.replicas, cfg.w);
        for n in c.0.masters.iter().chain(c.0.replicas.iter()) {
            if !c.0.node.wait_connected(n, Duration::from_secs(5)).await {
                tracing::warn!(node = %n, "not connected yet");
            }
        }
        Ok(c)
    }

    /// A client on a node already running.
    pub fn new(node: Node, masters: &[String], replicas: &[String], w: usize) -> Client {
        let mut m: Vec<Atom> = masters.iter().map(|s| Atom::new(s)).collect();
        let mut r: Vec<Atom> = replicas.iter().map(|s| Atom::new(s)).collect();
        m.sort();
        m.dedup();
        r.sort();
        r.dedup();
        Client(Arc::new(Inner {
            node,
            masters: m,
            replicas: r,
            w,
            token: AtomicU64::new(0),
        }))
    }

    /// The client's node.
    pub fn node(&self) -> &Node {
        &self.0.node
    }

    fn open(&self, nodes: &[Atom]) -> Result<Session, String> {
        let mb = self.0.node.spawn(None)?;
        let mut remote = HashMap::new();
        for n in nodes {
            if !remote.contains_key(n) {
                let r = self
                    .0
                    .node
                    .monitor(mb.pid(), Term::static_atom("locker"), n);
                remote.insert(n.clone(), r);
            }
        }
        Ok(Session {
            mb,
            remote,
            late: HashMap::new(),
            late_replies: Vec::new(),
        })
    }

    fn close(&self, s: Session) {
        for (n, r) in &s.remote {
            self.0
                .node
                .demonitor(s.mb.pid(), Term::static_atom("locker"), n, r);
        }
    }

    /// One round: `request` to every node of the session in `nodes`; the
    /// replies, by node. Nodes found down leave the session.
    async fn round(
        &self,
        s: &mut Session,
        nodes: &[Atom],
        request: &Term,
        timeout: Duration,
    ) -> Vec<(Atom, Term)> {
        self.round_until(s, nodes, request, timeout, None, None)
            .await
    }

    /// [`Self::round`] that stops waiting as soon as
    /// `decided(replies so far, still pending)` is true; the pending
    /// requests' replies are collected during later rounds
    /// (`Session::late_replies`).
    async fn round_until(
        &self,
        s: &mut Session,
        nodes: &[Atom],
        request: &Term,
        timeout: Duration,
        decided: Option<Decided<'_>>,
        soft: Option<(Enough<'_>, Instant)>,
    ) -> Vec<(Atom, Term)> {
        let deadline = Instant::now() + timeout;
        let me = s.mb.pid().clone();
        let mut pending: HashMap<Ref, Atom> = HashMap::new();
        for n in nodes {
            if !s.remote.contains_key(n) {
                continue;
            }
            let tag = self.0.node.make_ref();
            let msg = Term::tuple(vec![
                Term::static_atom("$gen_call"),
                Term::tuple(vec![Term::pid(me.clone()), Term::reference(tag.clone())]),
                request.clone(),
            ]);
            self.0.node.reg_send(&me, "locker", n, msg);
            pending.insert(tag, n.clone());
        }
        let mut replies = Vec::new();
        while !pending.is_empty() {
            if decided.is_some_and(|d| d(&replies, pending.len())) {
                s.late.extend(pending.drain());
                break;
            }
            // Once `enough` holds, the others are waited for only until the
            // soft deadline.
            let until = match soft {
                Some((enough, soft_deadline)) if enough(&replies) => deadline.min(soft_deadline),
                _ => deadline,
            };
            let sig = match tokio::time::timeout_at(until, s.mb.recv()).await {
                Ok(Some(sig)) => sig,
                _ => break,
            };
            match sig {
                Signal::Message { msg, .. } => {
                    if let Some([Term::Ref(tag), reply]) = msg.as_tuple() {
                        if let Some(n) = pending.remove(&**tag) {
                            replies.push((n, reply.clone()));
                        } else if let Some(n) = s.late.remove(&**tag) {
                            s.late_replies.push((n, reply.clone()));
                        }
                    }
                }
                Signal::Down { reference, .. } => {
                    if let Some(n) = s
                        .remote
                        .iter()
                        .find(|(_, r)| **r == reference)
                        .map(|(n, _)| n.clone())
                    {
                        s.remote.remove(&n);
                        pending.retain(|_, p| *p != n);
                    }
                }
                _ => {}
            }
        }
        replies
    }

    /// Phase one on the masters, then `commit` if W promised in time; a
    /// success only if W applied it too (the rules of
    /// [`locker_core::coordinator::TwoPhase`], shared with `locker.erl`).
    /// On failure, the token floor to retry above, if a master reported
    /// one in phase one.
    async fn two_phase(
        &self,
        key: &Term,
        expected: &Term,
        tag: Term,
        timeout: Duration,
        commit: CommitKind<'_>,
    ) -> Result<LockResult, Option<u64>> {
        let masters = self.0.masters.clone();
        let mut all = masters.clone();
        all.extend(
            self.0
                .replicas
                .iter()
                .filter(|r| !masters.contains(r))
                .cloned(),
        );
        let n = masters.len();
        let started = Instant::now();
        let op0 = TwoPhase::new(self.0.w, n, clock::now());
        let mut s = self.open(&all).map_err(|_| None)?;
        let req = Term::tuple(vec![
            Term::static_atom("get_write_lock"),
            key.clone(),
            expected.clone(),
            tag.clone(),
        ]);
        // Masters neither answered nor pending are down: missing votes.
        let decided = |replies: &[(Atom, Term)], pending: usize| {
            tally(&op0, replies, n.saturating_sub(replies.len() + pending)).phase_one_decided()
        };
        let budget = Duration::from_millis(PHASE_TWO_BUDGET_MS);
        let replies = self
            .round_until(
                &mut s,
                &masters,
                &req,
                timeout.min(budget),
                Some(&decided),
                None,
            )
            .await;
        let mut op = tally(&op0, &replies, n.saturating_sub(replies.len()));
        let release_tag = Term::tuple(vec![Term::static_atom("release_write_lock"), tag.clone()]);
        let result = match op.after_phase_one(clock::now()) {
            Step::Abort => {
                self.round(&mut s, &masters, &release_tag, cleanup(started, timeout))
                    .await;
                late_votes(&mut op, &s);
                Err(op.outcome())
            }
            Step::PhaseTwo => {
                let own_tag = tag.clone();
                let commits = self
                    .phase_two(&mut s, &masters, &all, key, tag, commit, (started, timeout))
                    .await;
                late_votes(&mut op, &s);
                for (node, r) in &commits {
                    op.commit(masters.contains(node), r.is_atom("ok"));
                }
                match op.outcome() {
                    Outcome::Ok { w, votes, commits } => Ok(LockResult::Ok { w, votes, commits }),
                    failed => {
                        // Fewer than W applied phase two: promises it did
                        // not consume are dropped, and a lease that some
                        // masters stored is given up there.
                        self.round(&mut s, &masters, &release_tag, cleanup(started, timeout))
                            .await;
                        if let CommitKind::Write { value, .. } = commit {
                            let stored: Vec<Atom> = commits
                                .iter()
                                .filter(|(n, r)| masters.contains(n) && r.is_atom("ok"))
                                .map(|(n, _)| n.clone())
                                .collect();
                            if !stored.is_empty() {
                                // The attempt's own token tag: only the
                                // lease this attempt stored is deleted.
                                let undo = Term::tuple(vec![
                                    Term::static_atom("release"),
                                    key.clone(),
                                    value.clone(),
                                    own_tag.clone(),
                                ]);
                                self.round(&mut s, &stored, &undo, timeout).await;
                            }
                        }
                        Err(failed)
                    }
                }
            }
        };
        self.close(s);
        result.map_err(|o| match o {
            Outcome::NoQuorum { retry_above } => retry_above,
            Outcome::Ok { .. } => None,
        })
    }

    /// Sends phase two (`release` also to the replicas); the answers.
    #[allow(clippy::too_many_arguments)]
    async fn phase_two(
        &self,
        s: &mut Session,
        masters: &[Atom],
        all: &[Atom],
        key: &Term,
        tag: Term,
        commit: CommitKind<'_>,
        (started, timeout): (Instant, Duration),
    ) -> Vec<(Atom, Term)> {
        match commit {
            CommitKind::Write { value, lease_ms } => {
                let r = Term::tuple(vec![
                    Term::static_atom("write"),
                    tag,
                    key.clone(),
                    value.clone(),
                    Term::Int(lease_ms),
                ]);
                // Once W masters stored it, a straggler (a paused master)
                // is waited for only until the lease, counted from before
                // phase one, runs out (as locker.erl).
                let lease = Duration::from_millis(u64::try_from(lease_ms).unwrap_or(0));
                let w = self.0.w;
                let enough = |r: &[(Atom, Term)]| {
                    r.iter()
                        .filter(|(n, x)| masters.contains(n) && x.is_atom("ok"))
                        .count()
                        >= w
                };
                self.round_until(
                    s,
                    masters,
                    &r,
                    timeout,
                    None,
                    Some((&enough, started + lease)),
                )
                .await
            }
            CommitKind::Update { new_value } => {
                let r = Term::tuple(vec![
                    Term::static_atom("update"),
                    tag,
                    key.clone(),
                    new_value.clone(),
                ]);
                self.round(s, masters, &r, timeout).await
            }
            CommitKind::Extend { value, lease_ms } => {
                let r = Term::tuple(vec![
                    Term::static_atom("extend_lease"),
                    tag,
                    key.clone(),
                    value.clone(),
                    Term::Int(lease_ms),
                ]);
                self.round(s, masters, &r, timeout).await
            }
            CommitKind::Release { value } => {
                let r = Term::tuple(vec![
                    Term::static_atom("release"),
                    key.clone(),
                    value.clone(),
                    tag,
                ]);
                self.round(s, all, &r, timeout).await
            }
        }
    }

    fn next_token(&self, floor: u64) -> u64 {
        let want = wall_micros().max(floor + 1);
        let mut old = self.0.token.load(Ordering::Relaxed);
        loop {
            let new = want.max(old + 1);
            match self
                .0
                .token
                .compare_exchange(old, new, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return new,
                Err(o) => old = o,
            }
        }
    }

    /// `locker:lock/4`: takes `key` for `value` for `lease_ms` if a quorum
    /// of masters has it free.
    pub async fn lock(
        &self,
        key: &Term,
        value: &Term,
        lease_ms: i64,
        timeout: Duration,
    ) -> LockResult {
        match self.acquire(key, value, lease_ms, timeout).await {
            Ok((r, _)) => r,
            Err(NoQuorum) => LockResult::NoQuorum,
        }
    }

    /// `locker:lock_with_token/4`: the acquisition's fencing token.
    pub async fn lock_with_token(
        &self,
        key: &Term,
        value: &Term,
        lease_ms: i64,
        timeout: Duration,
    ) -> Result<u64, NoQuorum> {
        self.acquire(key, value, lease_ms, timeout)
            .await
            .map(|(_, t)| t)
    }

    async fn acquire(
        &self,
        key: &Term,
        value: &Term,
        lease_ms: i64,
        timeout: Duration,
    ) -> Result<(LockResult, u64), NoQuorum> {
        let mut floor = 0;
        for attempt in 0..2 {
            let token = self.next_token(floor);
            let tag = Term::tuple(vec![
                Term::static_atom("$locker_token"),
                Term::reference(self.0.node.make_ref()),
                crate::locker::u64_term(token),
            ]);
            let commit = CommitKind::Write { value, lease_ms };
            match self
                .two_phase(key, &Term::static_atom("not_found"), tag, timeout, commit)
                .await
            {
                Ok(r) => return Ok((r, token)),
                Err(Some(f)) if attempt == 0 => floor = f,
                Err(_) => return Err(NoQuorum),
            }
        }
        Err(NoQuorum)
    }

    /// `locker:update/4`: replaces `value` by `new_value` (expiry kept).
    pub async fn update(
        &self,
        key: &Term,
        value: &Term,
        new_value: &Term,
        timeout: Duration,
    ) -> LockResult {
        let tag = Term::reference(self.0.node.make_ref());
        self.two_phase(key, value, tag, timeout, CommitKind::Update { new_value })
            .await
            .unwrap_or(LockResult::NoQuorum)
    }

    /// `locker:extend_lease/4`.
    pub async fn extend_lease(
        &self,
        key: &Term,
        value: &Term,
        lease_ms: i64,
        timeout: Duration,
    ) -> Result<(), NoQuorum> {
        let tag = Term::reference(self.0.node.make_ref());
        match self
            .two_phase(
                key,
                value,
                tag,
                timeout,
                CommitKind::Extend { value, lease_ms },
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(_) => Err(NoQuorum),
        }
    }

    /// `locker:release/3`: on masters and replicas.
    pub async fn release(&self, key: &Term, value: &Term, timeout: Duration) -> LockResult {
        let tag = Term::reference(self.0.node.make_ref());
        self.two_phase(key, value, tag, timeout, CommitKind::Release { value })
            .await
            .unwrap_or(LockResult::NoQuorum)
    }

    /// `locker:dirty_read/1` for a node without a store of its own, i.e.
    /// `master_dirty_read/1`: `locker:dirty_read(Key)` on a random master
    /// through `rpc` (an `erpc` spawn request). `{ok, V}`, `{error,
    /// not_found}`, or `{badrpc, Reason}`.
    pub async fn dirty_read(&self, key: &Term, timeout: Duration) -> Term {
        let masters = &self.0.masters;
        if masters.is_empty() {
            return Term::tuple(vec![
                Term::static_atom("badrpc"),
                Term::static_atom("no_masters"),
            ]);
        }
        let m = &masters[(wall_micros() as usize) % masters.len()];
        self.rpc_dirty_read(m, key, timeout).await
    }

    /// `rpc:call(Node, locker, dirty_read, [Key])`.
    pub async fn rpc_dirty_read(&self, node: &Atom, key: &Term, timeout: Duration) -> Term {
        let badrpc = |r: Term| Term::tuple(vec![Term::static_atom("badrpc"), r]);
        let Ok(mut mb) = self.0.node.spawn(None) else {
            return badrpc(Term::static_atom("system_limit"));
        };
        let r = Term::reference(self.0.node.make_ref());
        let mfa = Term::tuple(vec![
            Term::static_atom("erpc"),
            Term::static_atom("execute_call"),
            Term::Int(4),
        ]);
        let args = Term::List(vec![
            r.clone(),
            Term::static_atom("locker"),
            Term::static_atom("dirty_read"),
            Term::List(vec![key.clone()]),
        ]);
        let req = self.0.node.spawn_request(mb.pid(), node, mfa, args);
        let deadline = Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, mb.recv()).await {
                Ok(Some(Signal::SpawnReply { req_id, result, .. })) if req_id == req => {
                    if let Term::Atom(_) = result {
                        return badrpc(result);
                    }
                }
                Ok(Some(Signal::Down {
                    reference, reason, ..
                })) if reference == req => {
                    return match reason.as_tuple() {
                        Some([rr, ret, v]) if *rr == r && ret.is_atom("return") => v.clone(),
                        Some([rr, class, reason, stack]) if *rr == r && class.is_atom("error") => {
                            badrpc(Term::tuple(vec![
                                Term::static_atom("EXIT"),
                                Term::tuple(vec![reason.clone(), stack.clone()]),
                            ]))
                        }
                        _ if reason.is_atom("noconnection") => {
                            badrpc(Term::static_atom("nodedown"))
                        }
                        _ => badrpc(reason),
                    };
                }
                Ok(Some(_)) => {}
                _ => return badrpc(Term::static_atom("timeout")),
            }
        }
    }

    /// Registers a new mailbox of this node under `name` in
    /// `Locker.Registry` (a lease on `name` holding the mailbox's pid, as
    /// `Locker.Registry.register_name/2` takes it), and keeps the lease
    /// alive: it is extended to `lease_ms` every `extend_every` (choose it
    /// well below the lease; `Locker.Registry` extends every third of it).
    /// The name is given up (see [`RegisteredName`]) [`default_margin`]
    /// before its lease could run out; [`Self::register_name_with_margin`]
    /// chooses the margin.
    pub async fn register_name(
        &self,
        name: Term,
        lease_ms: i64,
        extend_every: Duration,
        timeout: Duration,
    ) -> Result<RegisteredName, String> {
        let margin = default_margin(lease_ms);
        self.register_name_with_margin(name, lease_ms, extend_every, margin, timeout)
            .await
    }

    /// [`Self::register_name`] with the margin chosen: the owner learns it
    /// lost the name (`Incoming::LeaseLost`, [`RegisteredName::is_lost`])
    /// `margin` before the masters could let its lease run out, i.e. when
    /// no extension succeeded by the start of the last successful one plus
    /// the lease minus `margin`. The margin must cover the difference of
    /// clock rates over a lease (at least 1% of the lease plus 2 ms is
    /// required) and the time the owner takes to notice and stop; the
    /// extension period must be below `lease_ms - margin`.
    pub async fn register_name_with_margin(
        &self,
        name: Term,
        lease_ms: i64,
        extend_every: Duration,
        margin: Duration,
        timeout: Duration,
    ) -> Result<RegisteredName, String> {
        check_name_timing(lease_ms, extend_every, margin)?;
        let lease = Duration::from_millis(lease_ms as u64);
        let mb = self.0.node.spawn(None)?;
        let pid = Term::pid(mb.pid().clone());
        // The masters count the lease from when they get the request: at
        // least `lease` from now.
        let sent = Instant::now();
        if !self.lock(&name, &pid, lease_ms, timeout).await.is_ok() {
            return Err(format!("{name} is taken (no quorum)"));
        }
        let valid_until = sent + lease;
        if Instant::now() + margin >= valid_until {
            let _ = self.release(&name, &pid, timeout).await;
            return Err(format!(
                "{name}: the lock took longer than the lease minus the margin"
            ));
        }
        let (state_tx, state_rx) = watch::channel(NameState::Held(valid_until - margin));
        let keeper = tokio::spawn(keep_name(
            self.clone(),
            name.clone(),
            pid,
            NameTiming {
                lease_ms,
                every: extend_every.max(Duration::from_millis(1)),
                margin,
                timeout,
            },
            valid_until,
            state_tx,
        ));
        Ok(RegisteredName {
            client: self.clone(),
            name,
            mb,
            keeper,
            state: state_rx,
            closed: false,
            released: false,
        })
    }
}

/// The margin [`Client::register_name`] uses: a fifth of the lease, at
/// least 100 ms, at most half the lease (as `Locker.Registry`'s default
/// `:registry_margin`).
pub fn default_margin(lease_ms: i64) -> Duration {
    let lease = lease_ms.max(0);
    Duration::from_millis(((lease / 5).max(100).min(lease / 2)).max(1) as u64)
}

fn check_name_timing(lease_ms: i64, every: Duration, margin: Duration) -> Result<(), String> {
    if lease_ms <= 0 {
        return Err(format!("lease_ms must be positive, got {lease_ms}"));
    }
    let lease = Duration::from_millis(lease_ms as u64);
    let drift = Duration::from_millis((lease_ms / 100 + 2) as u64);
    if margin < drift || margin >= lease {
        return Err(format!(
            "margin must be from {drift:?} (1% + 2 ms of the lease) to below the lease, got {margin:?}"
        ));
    }
    if every.is_zero() || every >= lease - margin {
        return Err(format!(
            "extend_every must be below the lease minus the margin ({:?}), got {every:?}",
            lease - margin
        ));
    }
    Ok(())
}

/// What a name's keeper knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NameState {
    /// Held at least until this instant (the validity minus the margin).
    Held(Instant),
    /// Given up: the lease may run out (or have run out) on the masters.
    Lost,
}

struct NameTiming {
    lease_ms: i64,
    every: Duration,
    margin: Duration,
    timeout: Duration,
}

/// Extends the lease of `name` every `t.every`, each success moving the
/// validity to the start of its call plus the lease. At the validity
/// minus the margin without a success (an extension still in flight does
/// not delay it), or as soon as a failed extension finds the name held by
/// another value or by nobody, the name is lost: the state says so, and
/// the lease is released once no extension of ours is in flight (a no-op
/// when the masters cannot be reached or the name is another's).
async fn keep_name(
    c: Client,
    name: Term,
    pid: Term,
    t: NameTiming,
    mut valid_until: Instant,
    state: watch::Sender<NameState>,
) {
    let lease = Duration::from_millis(t.lease_ms as u64);
    let mut next = Instant::now() + t.every;
    let in_flight = loop {
        let deadline = valid_until - t.margin;
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break None,
            _ = tokio::time::sleep_until(next) => {}
        }
        let started = Instant::now();
        next = started + t.every;
        let (c2, n2, p2) = (c.clone(), name.clone(), pid.clone());
        let (lease_ms, timeout) = (t.lease_ms, t.timeout);
        let mut ext =
            tokio::spawn(async move { c2.extend_lease(&n2, &p2, lease_ms, timeout).await });
        match tokio::time::timeout_at(deadline, &mut ext).await {
            Err(_) => break Some(ext),
            Ok(Ok(Ok(()))) => {
                valid_until = valid_until.max(started + lease);
                let _ = state.send(NameState::Held(valid_until - t.margin));
            }
            Ok(_) => {
                // No quorum: a loss only if the name is seen as another's
                // (or nobody's); an unreachable master tells nothing.
                let read = tokio::time::timeout_at(deadline, c.dirty_read(&name, t.timeout)).await;
                let taken = match read.as_ref().map(|r| r.as_tuple()) {
                    Ok(Some([ok, v])) if ok.is_atom("ok") => *v != pid,
                    Ok(Some([e, nf])) => e.is_atom("error") && nf.is_atom("not_found"),
                    _ => false,
                };
                if taken {
                    break None;
                }
            }
        }
    };
    tracing::warn!(name = %name, "name lost: lease not extended in time, or held by another");
    let _ = state.send(NameState::Lost);
    if let Some(ext) = in_flight {
        let _ = ext.await;
    }
    let _ = c.release(&name, &pid, t.timeout).await;
}

#[derive(Clone, Copy)]
enum CommitKind<'a> {
    Write { value: &'a Term, lease_ms: i64 },
    Update { new_value: &'a Term },
    Extend { value: &'a Term, lease_ms: i64 },
    Release { value: &'a Term },
}

/// How long dropping promises after a failed phase may wait for answers:
/// what is left of the caller's timeout, at most 5 s (best effort: an
/// unused promise expires anyway).
fn cleanup(started: Instant, timeout: Duration) -> Duration {
    timeout
        .saturating_sub(started.elapsed())
        .min(Duration::from_secs(5))
}

/// Whether a round has enough answers to stop waiting at its soft deadline.
type Enough<'a> = &'a (dyn Fn(&[(Atom, Term)]) -> bool + Sync);

/// When a round may stop waiting: `(replies so far, still pending)`.
type Decided<'a> = &'a (dyn Fn(&[(Atom, Term)], usize) -> bool + Sync);

/// A master's phase-one reply as a [`Vote`].
fn to_vote(reply: &Term) -> Vote {
    if reply.is_atom("ok") {
        return Vote::Ok;
    }
    match reply.as_tuple() {
        Some([e, inner]) if e.is_atom("error") => match inner.as_tuple() {
            Some([s, f]) if s.is_atom("stale_token") => {
                crate::locker::millis(f).map_or(Vote::Refused, Vote::StaleToken)
            }
            _ => Vote::Refused,
        },
        _ => Vote::Refused,
    }
}

/// `op0` with `replies` and `missing` masters counted.
fn tally(op0: &TwoPhase, replies: &[(Atom, Term)], missing: usize) -> TwoPhase {
    let mut op = op0.clone();
    for (_, r) in replies {
        op.vote(to_vote(r));
    }
    for _ in 0..missing {
        op.vote(Vote::Missing);
    }
    op
}

/// Counts the phase-one replies that came during later rounds.
fn late_votes(op: &mut TwoPhase, s: &Session) {
    for (_, r) in &s.late_replies {
        op.late_vote(to_vote(r));
    }
}

/// Who made a call (`From` of `gen_server`).
#[derive(Clone, Debug)]
pub struct From {
    /// The caller.
    pub pid: Pid,
    /// Its tag (a ref, `[alias | Ref]`, `{Ref, Node}`...).
    pub tag: Term,
}

/// What a registered name receives.
#[derive(Clone, Debug)]
pub enum Incoming {
    /// `GenServer.call/2`: answer with [`RegisteredName::reply`].
    Call {
        /// Whom to answer.
        from: From,
        /// The request.
        request: Term,
    },
    /// `GenServer.cast/2`.
    Cast(Term),
    /// Any other message (`send/2`).
    Info(Term),
    /// The name is lost: its lease was not extended in time (it may run
    /// out on the masters within the margin) or it is held by another
    /// process. Delivered before the lease could run out on the masters,
    /// to an owner that is waiting in [`RegisteredName::recv`]; every later
    /// `recv` returns it again. Stop acting as the name's owner.
    LeaseLost,
}

/// A name owned in `Locker.Registry` by a mailbox of this node. Dropping
/// it stops the keeper and releases the name in the background.
///
/// The keeper gives the name up `margin` before its lease could run out
/// on the masters when it could not extend it (the masters unreachable,
/// this node cut off from a quorum) or finds it held by another: from
/// then on [`Self::recv`] returns [`Incoming::LeaseLost`] and
/// [`Self::is_lost`] is true. Between two `recv` calls, check
/// [`Self::held_until`] (or `is_lost`) before acting as the owner.
pub struct RegisteredName {
    client: Client,
    name: Term,
    mb: Mailbox,
    keeper: tokio::task::JoinHandle<()>,
    state: watch::Receiver<NameState>,
    closed: bool,
    released: bool,
}

impl RegisteredName {
    /// The pid the name points to.
    pub fn pid(&self) -> &Pid {
        self.mb.pid()
    }

    /// The name.
    pub fn name(&self) -> &Term {
        &self.name
    }

    /// Whether the name is lost (see [`Incoming::LeaseLost`]).
    pub fn is_lost(&self) -> bool {
        self.closed || *self.state.borrow() == NameState::Lost
    }

    /// The instant until which the name is certainly this mailbox's (the
    /// validity of its last extension minus the margin), or `None` once
    /// it is lost.
    pub fn held_until(&self) -> Option<Instant> {
        match *self.state.borrow() {
            NameState::Held(at) if !self.closed && Instant::now() < at => Some(at),
            _ => None,
        }
    }

    /// The next message (`None` when the node dropped the process), or
    /// [`Incoming::LeaseLost`] once the name is lost.
    pub async fn recv(&mut self) -> Option<Incoming> {
        loop {
            if self.is_lost() {
                return Some(Incoming::LeaseLost);
            }
            let sig = tokio::select! {
                s = self.mb.recv() => s?,
                changed = self.state.changed() => {
                    // A keeper gone without a word (it cannot hold the
                    // name any more) counts as a loss.
                    self.closed |= changed.is_err();
                    continue;
                }
            };
            let Signal::Message { msg, .. } = sig else {
                continue;
            };
            if let Some((pid, tag, req)) = msg.as_gen_call() {
                return Some(Incoming::Call {
                    from: From {
                        pid: pid.clone(),
                        tag: tag.clone(),
                    },
                    request: req.clone(),
                });
            }
            return Some(match msg.as_tuple() {
                Some([c, m]) if c.is_atom("$gen_cast") => Incoming::Cast(m.clone()),
                _ => Incoming::Info(msg),
            });
        }
    }

    /// Answers a call (`gen_server:reply/2`: `{Tag, Reply}` to the caller).
    pub fn reply(&self, from: &From, reply: Term) {
        self.client.node().send_reply(&from.pid, &from.tag, reply);
    }

    /// Releases the name now (`Locker.Registry.unregister_name/1`).
    /// Once the name is lost, it first waits for the keeper to finish
    /// (it releases the name itself once its last extension is done): a
    /// process that exits right after `LeaseLost` without this may leave
    /// a write promise on the masters it still reaches, which blocks the
    /// name there for the promise's lifetime (10 s).
    pub async fn unregister(mut self, timeout: Duration) -> LockResult {
        self.released = true;
        if self.is_lost() {
            let _ = tokio::time::timeout(timeout, &mut self.keeper).await;
        }
        self.keeper.abort();
        let pid = Term::pid(self.mb.pid().clone());
        self.client.release(&self.name, &pid, timeout).await
    }
}

impl Drop for RegisteredName {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.keeper.abort();
        let (c, n, p) = (
            self.client.clone(),
            self.name.clone(),
            Term::pid(self.mb.pid().clone()),
        );
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = c.release(&n, &p, Duration::from_secs(5)).await;
            });
        }
    }
}
