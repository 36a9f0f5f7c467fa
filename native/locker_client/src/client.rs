//! [`Client`]: the coordinator of `locker.erl` (same requests, same
//! replies) run by a Rust service on its own hidden node.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use erl_node::process::{Mailbox, Signal};
use erl_node::term::{Atom, Ref, Term};
use erl_node::Node;
use locker_core::clock;
use locker_core::coordinator::{Outcome, Step, TwoPhase, Vote};
use locker_core::membership::{self as rules, HolderOp, Report};
use locker_core::quorum::PHASE_TWO_BUDGET_MS;
use parking_lot::{Mutex, RwLock};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::links::{self, Backoff, Links};
use crate::ser::u64_term;
use crate::view::{refusal_atom, refused_epoch, View};
use crate::{from_term, to_term, ClientBuilder, Error};

/// What a successful `lock`, `update`, `extend_lease` or `release` got:
/// `{ok, W, Votes, Commits}` of `locker.erl`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Quorum {
    /// The write quorum.
    pub w: usize,
    /// Masters that promised in phase one.
    pub votes: usize,
    /// Nodes that applied phase two (at least `w` masters).
    pub commits: usize,
}

struct Inner {
    node: Node,
    /// The configuration it coordinates under (learnt from the masters
    /// once they report one made through epochs).
    view: RwLock<View>,
    token: AtomicU64,
    links: Arc<Links>,
    backoff: Backoff,
    /// One connection keeper per node of every view so far.
    keepers: Mutex<Vec<(Atom, JoinHandle<()>)>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for (_, k) in self.keepers.get_mut().iter() {
            k.abort();
        }
    }
}

/// A client of a locker cluster: a hidden Erlang node of its own that
/// runs `locker.erl`'s coordinator. Cheap to clone; the node stops when
/// [`Client::stop`] is called (its connection keepers when the last
/// clone is dropped).
///
/// Keys and values are any `serde` types (see [`crate::to_term`] for how
/// they look in Erlang); [`crate::RawTerm`] passes an Erlang term as is.
///
/// ```no_run
/// # async fn demo() -> Result<(), locker_client::Error> {
/// use std::time::Duration;
/// use locker_client::Client;
/// let client = Client::builder("svc@127.0.0.1")
///     .cookie("secret")
///     .masters(["a@127.0.0.1", "b@127.0.0.1", "c@127.0.0.1"])
///     .start()
///     .await?;
/// let (lease, t) = (Duration::from_secs(10), Duration::from_secs(5));
/// client.lock("job-42", "worker-1", lease, t).await?;
/// let owner: Option<String> = client.dirty_read("job-42", t).await?;
/// assert_eq!(owner.as_deref(), Some("worker-1"));
/// client.extend_lease("job-42", "worker-1", lease, t).await?;
/// client.release("job-42", "worker-1", t).await?;
/// client.stop().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client(Arc<Inner>);

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = self.0.view.read();
        f.debug_struct("Client")
            .field("node", &self.0.node.name())
            .field("epoch", &v.epoch)
            .field("masters", &v.masters)
            .field("replicas", &v.replicas)
            .field("w", &v.w)
            .field("joint", &v.joint)
            .finish()
    }
}

/// The largest lease or timeout accepted: about 292 million years in
/// milliseconds would overflow Erlang's small integers long before; a
/// year is plenty.
const MAX_SPAN: Duration = Duration::from_secs(366 * 24 * 3600);

/// `lease` in whole milliseconds, checked.
pub(crate) fn lease_ms(arg: &'static str, lease: Duration) -> Result<i64, Error> {
    if lease < Duration::from_millis(1) || lease > MAX_SPAN {
        return Err(Error::invalid(
            arg,
            format!("a duration from 1 ms to a year, got {lease:?}"),
        ));
    }
    Ok(lease.as_millis() as i64)
}

pub(crate) fn check_timeout(timeout: Duration) -> Result<(), Error> {
    if timeout.is_zero() || timeout > MAX_SPAN {
        return Err(Error::invalid(
            "timeout",
            format!("a positive duration up to a year, got {timeout:?}"),
        ));
    }
    Ok(())
}

/// A stale-token floor, from a master's `{error, {stale_token, Floor}}`.
fn millis(t: &Term) -> Option<u64> {
    match t {
        Term::Int(i) => Some((*i).max(0) as u64),
        Term::Big(b) if !b.negative && b.magnitude.len() <= 8 => {
            let mut x = [0u8; 8];
            x[..b.magnitude.len()].copy_from_slice(&b.magnitude);
            Some(u64::from_le_bytes(x))
        }
        Term::Big(b) if !b.negative => Some(u64::MAX / 2),
        _ => None,
    }
}

impl Client {
    /// A builder for a client whose node is named `name` (`alive@host`).
    pub fn builder(name: &str) -> ClientBuilder {
        ClientBuilder::new(name)
    }

    pub(crate) fn from_parts(
        node: Node,
        masters: Vec<Atom>,
        replicas: Vec<Atom>,
        w: usize,
        links: Arc<Links>,
        backoff: Backoff,
    ) -> Client {
        let client = Client(Arc::new(Inner {
            node,
            view: RwLock::new(View::initial(masters, replicas, w)),
            token: AtomicU64::new(0),
            links,
            backoff,
            keepers: Mutex::new(Vec::new()),
        }));
        client.keep_connected();
        client
    }

    pub(crate) fn links(&self) -> &Links {
        &self.0.links
    }

    /// Starts a connection keeper for every node of the view that has
    /// none yet (keepers of nodes that left the view keep running: a
    /// later view may have them again, and they are cheap).
    fn keep_connected(&self) {
        let nodes = self.0.view.read().everyone();
        let mut keepers = self.0.keepers.lock();
        for n in nodes {
            if n != *self.0.node.name() && !keepers.iter().any(|(k, _)| *k == n) {
                let h = tokio::spawn(links::keep(
                    self.0.node.clone(),
                    n.clone(),
                    self.0.links.clone(),
                    self.0.backoff,
                ));
                keepers.push((n, h));
            }
        }
    }

    /// The masters (sorted): those of the current configuration, which
    /// the client learns from the masters when the cluster changes (see
    /// [`Self::epoch`]). During a transition, the new masters.
    pub fn masters(&self) -> Vec<Atom> {
        self.0.view.read().masters.clone()
    }

    /// Every master that votes now: the masters, and during a transition
    /// (a joint configuration) the previous masters too.
    pub fn voters(&self) -> Vec<Atom> {
        self.0.view.read().voters()
    }

    /// The write quorum (during a transition, the new masters').
    pub fn w(&self) -> usize {
        self.0.view.read().w
    }

    /// The configuration epoch the client coordinates under,
    /// `(Counter, Proposer)`: `(0, "none")` until it learnt a
    /// configuration from its masters (they were set through epochs and
    /// refused its votes as made under another epoch).
    pub fn epoch(&self) -> (u64, String) {
        let v = self.0.view.read();
        (v.epoch.counter, v.epoch.proposer.clone())
    }

    /// Whether the current configuration is joint (a change is under
    /// way): then every operation needs W of the old masters and W of
    /// the new ones.
    pub fn is_joint(&self) -> bool {
        self.0.view.read().joint.is_some()
    }

    /// The voting masters connected now.
    pub fn connected_masters(&self) -> Vec<Atom> {
        self.voters()
            .into_iter()
            .filter(|m| self.0.node.is_connected(m))
            .collect()
    }

    /// Connection attempts made so far to the masters and replicas (each
    /// a handshake the peer sees).
    pub fn connection_attempts(&self) -> u64 {
        self.0.links.attempts.load(Ordering::Relaxed)
    }

    /// The client's own Erlang node, for what this API does not cover:
    /// spawning mailboxes, sending to BEAM processes.
    pub fn node(&self) -> &Node {
        &self.0.node
    }

    /// Stops the client's node: its connections close, its keepers end.
    pub async fn stop(&self) {
        for (_, k) in self.0.keepers.lock().iter() {
            k.abort();
        }
        self.0.node.stop(Duration::from_secs(1)).await;
    }

    /// `locker:lock/4`: takes `key` for `value` for `lease` if a quorum
    /// of masters has it free. [`Error::NoQuorum`] otherwise.
    pub async fn lock<K, V>(
        &self,
        key: &K,
        value: &V,
        lease: Duration,
        timeout: Duration,
    ) -> Result<Quorum, Error>
    where
        K: Serialize + ?Sized,
        V: Serialize + ?Sized,
    {
        let lease_ms = lease_ms("lease", lease)?;
        check_timeout(timeout)?;
        let (key, value) = (to_term(key)?, to_term(value)?);
        self.acquire(&key, &value, lease_ms, timeout)
            .await
            .map(|(q, _)| q)
    }

    /// `locker:lock_with_token/4`: [`Self::lock`] that also returns the
    /// acquisition's fencing token (greater than every token the masters
    /// saw for the key).
    pub async fn lock_with_token<K, V>(
        &self,
        key: &K,
        value: &V,
        lease: Duration,
        timeout: Duration,
    ) -> Result<u64, Error>
    where
        K: Serialize + ?Sized,
        V: Serialize + ?Sized,
    {
        let lease_ms = lease_ms("lease", lease)?;
        check_timeout(timeout)?;
        let (key, value) = (to_term(key)?, to_term(value)?);
        self.acquire(&key, &value, lease_ms, timeout)
            .await
            .map(|(_, t)| t)
    }

    pub(crate) async fn acquire(
        &self,
        key: &Term,
        value: &Term,
        lease_ms: i64,
        timeout: Duration,
    ) -> Result<(Quorum, u64), Error> {
        let mut floor = 0;
        for attempt in 0..2 {
            let token = self.next_token(floor).ok_or(Error::NoQuorum)?;
            let commit = CommitKind::Write { value, lease_ms };
            match self
                .two_phase(
                    key,
                    &Term::static_atom("not_found"),
                    Some(token),
                    timeout,
                    commit,
                )
                .await
            {
                Ok(r) => return Ok((r, token)),
                Err(Some(f)) if attempt == 0 => floor = f,
                Err(_) => return Err(Error::NoQuorum),
            }
        }
        Err(Error::NoQuorum)
    }

    /// `locker:update/4`: replaces `value` by `new_value` (expiry kept).
    pub async fn update<K, V, N>(
        &self,
        key: &K,
        value: &V,
        new_value: &N,
        timeout: Duration,
    ) -> Result<Quorum, Error>
    where
        K: Serialize + ?Sized,
        V: Serialize + ?Sized,
        N: Serialize + ?Sized,
    {
        check_timeout(timeout)?;
        let (key, value, new_value) = (to_term(key)?, to_term(value)?, to_term(new_value)?);
        self.two_phase(
            &key,
            &value,
            None,
            timeout,
            CommitKind::Update {
                new_value: &new_value,
            },
        )
        .await
        .map_err(|_| Error::NoQuorum)
    }

    /// `locker:extend_lease/4`: `key` held by `value` for `lease` more.
    pub async fn extend_lease<K, V>(
        &self,
        key: &K,
        value: &V,
        lease: Duration,
        timeout: Duration,
    ) -> Result<Quorum, Error>
    where
        K: Serialize + ?Sized,
        V: Serialize + ?Sized,
    {
        let lease_ms = lease_ms("lease", lease)?;
        check_timeout(timeout)?;
        let (key, value) = (to_term(key)?, to_term(value)?);
        self.extend_term(&key, &value, lease_ms, timeout).await
    }

    pub(crate) async fn extend_term(
        &self,
        key: &Term,
        value: &Term,
        lease_ms: i64,
        timeout: Duration,
    ) -> Result<Quorum, Error> {
        self.two_phase(
            key,
            value,
            None,
            timeout,
            CommitKind::Extend { value, lease_ms },
        )
        .await
        .map_err(|_| Error::NoQuorum)
    }

    /// `locker:release/3`: gives `key` up if `value` holds it, on the
    /// masters and the replicas.
    pub async fn release<K, V>(
        &self,
        key: &K,
        value: &V,
        timeout: Duration,
    ) -> Result<Quorum, Error>
    where
        K: Serialize + ?Sized,
        V: Serialize + ?Sized,
    {
        check_timeout(timeout)?;
        let (key, value) = (to_term(key)?, to_term(value)?);
        self.release_term(&key, &value, timeout).await
    }

    pub(crate) async fn release_term(
        &self,
        key: &Term,
        value: &Term,
        timeout: Duration,
    ) -> Result<Quorum, Error> {
        self.two_phase(key, value, None, timeout, CommitKind::Release { value })
            .await
            .map_err(|_| Error::NoQuorum)
    }

    /// `locker:dirty_read/1` for a node without a store of its own
    /// (`master_dirty_read/1`): the value `key` holds on one connected
    /// master, decoded as `T`; `None` if it holds none. Not a quorum
    /// read.
    pub async fn dirty_read<T, K>(&self, key: &K, timeout: Duration) -> Result<Option<T>, Error>
    where
        T: DeserializeOwned,
        K: Serialize + ?Sized,
    {
        check_timeout(timeout)?;
        let key = to_term(key)?;
        let up = self.connected_masters();
        if up.is_empty() {
            return Err(Error::Unreachable {
                nodes: self
                    .voters()
                    .iter()
                    .map(|m| (m.to_string(), "not connected".to_string()))
                    .collect(),
            });
        }
        let m = &up[(wall_micros() as usize) % up.len()];
        decode_read(self.rpc_dirty_read(m, &key, timeout).await?)
    }

    /// [`Self::dirty_read`] on the given master (`rpc:call(Master,
    /// locker, dirty_read, [Key])`).
    pub async fn dirty_read_from<T, K>(
        &self,
        master: &str,
        key: &K,
        timeout: Duration,
    ) -> Result<Option<T>, Error>
    where
        T: DeserializeOwned,
        K: Serialize + ?Sized,
    {
        check_timeout(timeout)?;
        let m = Atom::new(master);
        if !self.voters().contains(&m) {
            return Err(Error::invalid(
                "master",
                format!("one of the client's masters, got {master}"),
            ));
        }
        let key = to_term(key)?;
        decode_read(self.rpc_dirty_read(&m, &key, timeout).await?)
    }

    /// `rpc:call(Node, locker, dirty_read, [Key])` through an `erpc`
    /// spawn request: the reply term.
    pub(crate) async fn rpc_dirty_read(
        &self,
        node: &Atom,
        key: &Term,
        timeout: Duration,
    ) -> Result<Term, Error> {
        if !self.0.node.is_connected(node) {
            return Err(Error::Unreachable {
                nodes: vec![(node.to_string(), "not connected".to_string())],
            });
        }
        let mut mb = self.0.node.spawn(None).map_err(Error::NodeStart)?;
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
                    if let Term::Atom(a) = result {
                        return Err(Error::Rpc(format!("spawn on {node} refused: {a}")));
                    }
                }
                Ok(Some(Signal::Down {
                    reference, reason, ..
                })) if reference == req => {
                    return match reason.as_tuple() {
                        Some([rr, ret, v]) if *rr == r && ret.is_atom("return") => Ok(v.clone()),
                        Some([rr, class, reason, _]) if *rr == r => {
                            Err(Error::Rpc(format!("{class}: {}", reason.display(200))))
                        }
                        _ if reason.is_atom("noconnection") => Err(Error::Unreachable {
                            nodes: vec![(node.to_string(), "connection lost".to_string())],
                        }),
                        _ => Err(Error::Rpc(reason.display(200))),
                    };
                }
                Ok(Some(_)) => {}
                _ => return Err(Error::Timeout),
            }
        }
    }
}

/// `{ok, V}` as `Some(V)`, `{error, not_found}` as `None`.
fn decode_read<T: DeserializeOwned>(reply: Term) -> Result<Option<T>, Error> {
    match reply.as_tuple() {
        Some([ok, v]) if ok.is_atom("ok") => from_term(v).map(Some),
        Some([e, nf]) if e.is_atom("error") && nf.is_atom("not_found") => Ok(None),
        _ => Err(Error::Rpc(format!(
            "unexpected dirty_read reply {}",
            reply.display(200)
        ))),
    }
}

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
    fn open(&self, nodes: &[Atom]) -> Result<Session, Error> {
        let mb = self.0.node.spawn(None).map_err(Error::NodeStart)?;
        let mut remote = HashMap::new();
        for n in nodes {
            // Only nodes connected now: the others count as down (their
            // keepers reconnect them with backoff, rather than every
            // request trying to).
            if !remote.contains_key(n) && self.0.node.is_connected(n) {
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
    ///
    /// The tag carries the epoch of the client's configuration (with the
    /// acquisition's `token`, if any). If masters refused the operation as
    /// made under an older epoch than theirs, the client asks them for
    /// their configuration, takes it under the catch-up rule (W of its
    /// own masters report it, `locker_core::membership::catch_up_choice`)
    /// and tries once more under it, as `locker.erl` does.
    async fn two_phase(
        &self,
        key: &Term,
        expected: &Term,
        token: Option<u64>,
        timeout: Duration,
        commit: CommitKind<'_>,
    ) -> Result<Quorum, Option<u64>> {
        let mut retried = false;
        loop {
            let view = self.0.view.read().clone();
            let r = Term::reference(self.0.node.make_ref());
            let tag = match token {
                Some(t) => Term::tuple(vec![
                    Term::static_atom("$locker_token"),
                    view.tag(r),
                    u64_term(t),
                ]),
                None => view.tag(r),
            };
            let (result, newer) = self
                .attempt(&view, key, expected, tag, timeout, commit)
                .await;
            match result {
                Err(_) if !newer.is_empty() && !retried => {
                    retried = true;
                    if !self.catch_up(&view, &newer, timeout).await {
                        return result;
                    }
                }
                _ => return result,
            }
        }
    }

    /// Asks `newer` (masters that refused a vote as made under an older
    /// epoch, or under a joint view a newer one) and, when the view was
    /// learnt from the masters, every voter of it, for their
    /// configuration; takes the newest one that a quorum of the view
    /// reports (`locker_core::membership::catch_up_choice`), or, under a
    /// joint view whose change was aborted, the older one its old side
    /// went back to (`locker_core::membership::rollback_choice`).
    /// Whether the view changed.
    async fn catch_up(&self, view: &View, newer: &[Atom], timeout: Duration) -> bool {
        // Only masters that know epochs are asked: those that refused with
        // an epoch, or every voter of a view made through epochs (an
        // original server would crash on the request).
        let mut ask: Vec<Atom> = newer.to_vec();
        if view.learnt {
            ask.extend(view.voters());
        }
        ask.sort();
        ask.dedup();
        let Ok(mut s) = self.open(&ask) else {
            return false;
        };
        let req = Term::tuple(vec![
            Term::static_atom("$locker_config"),
            Term::static_atom("get"),
        ]);
        let replies = self
            .round(&mut s, &ask, &req, timeout.min(Duration::from_secs(5)))
            .await;
        self.close(s);
        let mut reports = Vec::new();
        let mut views = Vec::new();
        for (n, reply) in replies {
            if let Some([ok, config]) = reply.as_tuple() {
                if let (true, Some((v, eligible))) = (ok.is_atom("ok"), View::of(config)) {
                    reports.push(Report {
                        from: n,
                        epoch: v.epoch.clone(),
                        eligible,
                    });
                    views.push(v);
                }
            }
        }
        let (i, back) = match rules::catch_up_choice(&view.epoch, &view.quorums(), &reports) {
            Some(i) => (i, false),
            // A joint view whose change was aborted: the old side went
            // back (`locker_core::membership::rollback_choice`).
            None => match view
                .joint
                .as_ref()
                .and_then(|old| rules::rollback_choice(&view.epoch, old, &reports))
            {
                Some(i) => (i, true),
                None => return false,
            },
        };
        let next = views.swap_remove(i);
        {
            let mut cur = self.0.view.write();
            // Another operation may have taken a newer one meanwhile.
            if back && cur.epoch != view.epoch {
                return true;
            }
            if !back && next.epoch <= cur.epoch {
                return cur.epoch > view.epoch;
            }
            tracing::info!(
                epoch = ?next.epoch,
                masters = ?next.masters,
                w = next.w,
                joint = ?next.joint,
                "configuration taken from the masters"
            );
            *cur = next.clone();
        }
        self.keep_connected();
        // The operation is tried again at once: give new masters a moment
        // to connect (they count as down otherwise).
        let deadline = Instant::now() + timeout.min(Duration::from_secs(2));
        for n in next.voters() {
            let left = deadline.saturating_duration_since(Instant::now());
            if !self.0.node.is_connected(&n) && !left.is_zero() {
                let _ = self.0.node.wait_connected(&n, left).await;
            }
        }
        true
    }

    /// One attempt under `view`: the outcome, and the voters that refused
    /// it as made under an older epoch than theirs.
    async fn attempt(
        &self,
        view: &View,
        key: &Term,
        expected: &Term,
        tag: Term,
        timeout: Duration,
        commit: CommitKind<'_>,
    ) -> (Result<Quorum, Option<u64>>, Vec<Atom>) {
        let voters = view.voters();
        let all = view.everyone();
        let quorums = view.quorums();
        let single = quorums.len() == 1;
        let holder = match commit {
            CommitKind::Extend { .. } => Some(HolderOp::Extend),
            CommitKind::Release { .. } => Some(HolderOp::Release),
            _ => None,
        };
        // Each quorum's masters, and how their answers count: as they are,
        // but the holder's answers on the new side of a joint
        // configuration (`locker_core::membership::holder_new_side_ok`).
        let sides: Vec<Side> = quorums
            .iter()
            .enumerate()
            .map(|(i, (set, w))| Side {
                set: set.clone(),
                w: *w,
                holder: if !single && i == 1 { holder } else { None },
            })
            .collect();
        let started = Instant::now();
        let now = clock::now();
        let ops0: Vec<TwoPhase> = sides
            .iter()
            .map(|d| TwoPhase::new(d.w, d.set.len(), now))
            .collect();
        let mut s = match self.open(&all) {
            Ok(s) => s,
            Err(_) => return (Err(None), Vec::new()),
        };
        let req = Term::tuple(vec![
            Term::static_atom("get_write_lock"),
            key.clone(),
            expected.clone(),
            tag.clone(),
        ]);
        // Masters neither answered nor pending are down: missing votes
        // (with two quorums the pending count is not split, so only
        // answers count).
        let decided = |replies: &[(Atom, Term)], pending: usize| {
            sides.iter().zip(&ops0).all(|(d, op0)| {
                let within = d.within(replies, false);
                let missing = if single {
                    d.set.len().saturating_sub(within.len() + pending)
                } else {
                    0
                };
                tally(op0, &within, missing).phase_one_decided()
            })
        };
        let budget = Duration::from_millis(PHASE_TWO_BUDGET_MS);
        let replies = self
            .round_until(
                &mut s,
                &voters,
                &req,
                timeout.min(budget),
                Some(&decided),
                None,
            )
            .await;
        let mut ops: Vec<TwoPhase> = sides
            .iter()
            .zip(&ops0)
            .map(|(d, op0)| {
                let within = d.within(&replies, false);
                tally(op0, &within, d.set.len().saturating_sub(within.len()))
            })
            .collect();
        let now = clock::now();
        let go = ops
            .iter_mut()
            .map(|op| op.after_phase_one(now))
            .collect::<Vec<Step>>()
            .into_iter()
            .all(|step| step == Step::PhaseTwo);
        let release_tag = Term::tuple(vec![Term::static_atom("release_write_lock"), tag.clone()]);
        let mut seen: Vec<(Atom, Term)> = replies.clone();
        let result = if !go {
            self.round(&mut s, &voters, &release_tag, cleanup(started, timeout))
                .await;
            late_votes(&mut ops, &sides, &s);
            seen.extend(s.late_replies.iter().cloned());
            let floors: Vec<u64> = ops
                .iter()
                .filter_map(|op| match op.outcome() {
                    Outcome::NoQuorum { retry_above } => retry_above,
                    Outcome::Ok { .. } => None,
                })
                .collect();
            Err(floors.into_iter().max())
        } else {
            let own_tag = tag.clone();
            let enough_quorums = quorums.clone();
            let commits = self
                .phase_two(
                    &mut s,
                    (&voters, &all, &enough_quorums),
                    key,
                    tag,
                    commit,
                    (started, timeout),
                )
                .await;
            late_votes(&mut ops, &sides, &s);
            seen.extend(s.late_replies.iter().cloned());
            seen.extend(commits.iter().cloned());
            for (d, op) in sides.iter().zip(ops.iter_mut()) {
                for (node, r) in &commits {
                    op.commit(d.set.contains(node), d.applied(r));
                }
            }
            let outcomes: Vec<Outcome> = ops.iter().map(TwoPhase::outcome).collect();
            if outcomes.iter().all(|o| matches!(o, Outcome::Ok { .. })) {
                if single {
                    match outcomes[0] {
                        Outcome::Ok { w, votes, commits } => Ok(Quorum { w, votes, commits }),
                        Outcome::NoQuorum { .. } => Err(None),
                    }
                } else {
                    let w = sides.last().map_or(0, |d| d.w);
                    let oks =
                        |rs: &[(Atom, Term)]| rs.iter().filter(|(_, r)| r.is_atom("ok")).count();
                    Ok(Quorum {
                        w,
                        votes: oks(&replies) + oks(&s.late_replies),
                        commits: oks(&commits),
                    })
                }
            } else {
                // Fewer than W applied phase two: promises it did not
                // consume are dropped, and a lease that some masters
                // stored is given up there.
                self.round(&mut s, &voters, &release_tag, cleanup(started, timeout))
                    .await;
                if let CommitKind::Write { value, .. } = commit {
                    let stored: Vec<Atom> = commits
                        .iter()
                        .filter(|(n, r)| voters.contains(n) && r.is_atom("ok"))
                        .map(|(n, _)| n.clone())
                        .collect();
                    if !stored.is_empty() {
                        // The attempt's own token tag: only the lease this
                        // attempt stored is deleted.
                        let undo = Term::tuple(vec![
                            Term::static_atom("release"),
                            key.clone(),
                            value.clone(),
                            own_tag.clone(),
                        ]);
                        self.round(&mut s, &stored, &undo, timeout).await;
                    }
                }
                Err(None)
            }
        };
        self.close(s);
        // Under a joint view, masters that refused with an older epoch
        // too: its change may have been aborted (see `catch_up`).
        let mut newer: Vec<Atom> = seen
            .iter()
            .filter(|(n, r)| {
                voters.contains(n)
                    && refused_epoch(r)
                        .is_some_and(|e| e > view.epoch || (view.joint.is_some() && e < view.epoch))
            })
            .map(|(n, _)| n.clone())
            .collect();
        newer.sort();
        newer.dedup();
        (result, newer)
    }

    /// Sends phase two to the voters `masters` (`release` also to the
    /// replicas, `all`); the answers. A write stops waiting for
    /// stragglers once every quorum of `quorums` stored it.
    async fn phase_two(
        &self,
        s: &mut Session,
        (masters, all, quorums): (&[Atom], &[Atom], &Quorums),
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
                let enough = |r: &[(Atom, Term)]| {
                    quorums.iter().all(|(set, w)| {
                        r.iter()
                            .filter(|(n, x)| set.contains(n) && x.is_atom("ok"))
                            .count()
                            >= *w
                    })
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

    /// The next fencing token: the wall clock in microseconds, strictly
    /// increasing, above `floor`; `None` when that would pass the largest
    /// token (`u64::MAX`): no token can be granted then.
    fn next_token(&self, floor: u64) -> Option<u64> {
        let want = wall_micros().max(floor.checked_add(1)?);
        let mut old = self.0.token.load(Ordering::Relaxed);
        loop {
            let new = want.max(old.checked_add(1)?);
            match self
                .0
                .token
                .compare_exchange(old, new, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Some(new),
                Err(o) => old = o,
            }
        }
    }
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

/// What a success needs: W of each set of masters.
type Quorums = [(Vec<Atom>, usize)];

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
                millis(f).map_or(Vote::Refused, Vote::StaleToken)
            }
            _ => Vote::Refused,
        },
        _ => Vote::Refused,
    }
}

/// `op0` with `replies` and `missing` masters counted.
fn tally(op0: &TwoPhase, replies: &[Term], missing: usize) -> TwoPhase {
    let mut op = op0.clone();
    for r in replies {
        op.vote(to_vote(r));
    }
    for _ in 0..missing {
        op.vote(Vote::Missing);
    }
    op
}

/// Counts the phase-one replies that came during later rounds, on each
/// side.
fn late_votes(ops: &mut [TwoPhase], sides: &[Side], s: &Session) {
    for (d, op) in sides.iter().zip(ops.iter_mut()) {
        for r in d.within(&s.late_replies, false) {
            op.late_vote(to_vote(&r));
        }
    }
}

/// One quorum of the configuration: its masters, its W, and whether the
/// holder's answers count by the joint rule there.
struct Side {
    set: Vec<Atom>,
    w: usize,
    holder: Option<HolderOp>,
}

impl Side {
    /// The answer as this side counts it (`ok` where the holder's rule
    /// says so).
    fn counted(&self, phase_two: bool, reply: &Term) -> Term {
        match (self.holder, refusal_atom(reply)) {
            (Some(op), Some(why)) if rules::holder_new_side_ok(op, phase_two, why) => {
                Term::static_atom("ok")
            }
            _ => reply.clone(),
        }
    }

    /// The replies of this side's masters, as it counts them.
    fn within(&self, replies: &[(Atom, Term)], phase_two: bool) -> Vec<Term> {
        replies
            .iter()
            .filter(|(n, _)| self.set.contains(n))
            .map(|(_, r)| self.counted(phase_two, r))
            .collect()
    }

    /// Whether a phase-two answer counts as applied on this side.
    fn applied(&self, reply: &Term) -> bool {
        self.counted(true, reply).is_atom("ok")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_send<T: Send>(_: &T) {}

    /// The operations' futures can be spawned on a multi-threaded runtime.
    #[allow(dead_code, clippy::diverging_sub_expression)]
    fn futures_are_send(c: &Client) {
        let t = Duration::from_secs(1);
        is_send(&c.lock("k", "v", t, t));
        is_send(&c.lock_with_token(&("k", 1), &7, t, t));
        is_send(&c.update("k", "v", "w", t));
        is_send(&c.extend_lease("k", "v", t, t));
        is_send(&c.release("k", "v", t));
        is_send(&c.dirty_read::<String, _>("k", t));
        is_send(&c.register_name("n", t, t, t));
        is_send(c);
    }

    #[test]
    fn spans_are_checked() {
        assert!(lease_ms("lease", Duration::from_millis(1)).is_ok());
        assert!(lease_ms("lease", Duration::from_micros(999)).is_err());
        assert!(lease_ms("lease", MAX_SPAN + Duration::from_secs(1)).is_err());
        assert!(check_timeout(Duration::ZERO).is_err());
    }
}
