//! A distributed Erlang node in Rust: identity, processes, sending, and
//! the dispatch of incoming distribution operations.
//!
//! [`Node::start`] binds the listener, registers with epmd and accepts
//! connections (the private `peers` module); processes are [`Mailbox`]es made with
//! [`Node::spawn`]; `rpc:call` goes to the application's handler
//! ([`Node::set_rpc_handler`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;

use crate::budget::ByteBudget;
use crate::connection::Host;
use crate::epmd;
use crate::frame::{self, Control};
use crate::handshake::Identity;
use crate::metrics::Metrics;
use crate::peers::{self, PeerHost, Peers};
use crate::process::{
    key_of, pid_numbers, Added, Entry, HeldLimits, HeldMonitor, Mailbox, Owner, PeerPid, PeerRef,
    ProcTx, Procs, Signal,
};
use crate::rpc::{self, RpcHandler, SpawnRequest};
use crate::term::{Atom, Pid, Ref, Term};
use crate::watermark::Watermark;

/// How to run a node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Full node name, `alive@host` (long or short).
    pub name: String,
    /// The distribution cookie.
    pub cookie: String,
    /// Where to listen (port 0: any).
    pub listen: SocketAddr,
    /// OTP's `net_ticktime`: a peer silent this long is dropped; ticks go
    /// out every quarter of it.
    pub net_ticktime: Duration,
    /// Most connected peers (incoming connections beyond are refused).
    pub max_peers: usize,
    /// Largest frame accepted; a bigger one closes the connection.
    pub max_frame: usize,
    /// Time allowed for a handshake, either way.
    pub handshake_timeout: Duration,
    /// Caps on the monitors and links remote processes hold here (each
    /// `gen_server:call` holds a monitor while it waits).
    pub held_limits: HeldLimits,
    /// Bytes that frames longer than a connection's 64 KiB read buffer
    /// may hold while they arrive, over all connections (raised to
    /// `max_frame` if smaller, so that any frame can be read). A
    /// connection whose frame does not fit waits for others to complete
    /// theirs, for half of `net_ticktime` at most, then is closed.
    pub frame_budget: usize,
}

impl NodeConfig {
    /// Defaults for `name` and `cookie`.
    pub fn new(name: &str, cookie: &str) -> Self {
        NodeConfig {
            name: name.to_string(),
            cookie: cookie.to_string(),
            listen: "0.0.0.0:0".parse().expect("address"),
            net_ticktime: Duration::from_secs(60),
            max_peers: 256,
            max_frame: 64 << 20,
            handshake_timeout: Duration::from_secs(5),
            held_limits: HeldLimits::default(),
            frame_budget: 128 << 20,
        }
    }
}

/// Why [`Node::connect_now`] could not connect.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectError {
    /// The peer's name is not `alive@host`.
    InvalidName(String),
    /// epmd on the peer's host could not be reached or asked.
    Epmd(String),
    /// No node of that name is registered with epmd on its host.
    NotRegistered {
        /// The host asked.
        host: String,
    },
    /// The handshake failed on the cookie: the peer closed the connection
    /// after our challenge reply (OTP logs "Invalid challenge reply"), or
    /// its challenge ack did not match ours.
    BadCookie,
    /// The peer refused the connection (`not_allowed`: its peer limit).
    Refused(String),
    /// Any other failure: TCP, the handshake timed out, another node
    /// answered.
    Handshake(String),
    /// This node is stopping.
    Stopping,
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::InvalidName(n) => write!(f, "bad node name {n:?} (expected alive@host)"),
            ConnectError::Epmd(e) => f.write_str(e),
            ConnectError::NotRegistered { host } => {
                write!(f, "not registered with epmd on {host}")
            }
            ConnectError::BadCookie => f.write_str(
                "the peer refused our cookie (the handshake failed on the challenge: wrong cookie)",
            ),
            ConnectError::Refused(e) => f.write_str(e),
            ConnectError::Handshake(e) => f.write_str(e),
            ConnectError::Stopping => f.write_str("this node is stopping"),
        }
    }
}

impl std::error::Error for ConnectError {}

pub(crate) struct Inner {
    pub name: Atom,
    pub creation: u32,
    pub ident: Identity,
    pub cfg: NodeConfig,
    pub port: u16,
    pub procs: Mutex<Procs>,
    pub peers: Mutex<Peers>,
    next_ref: AtomicU64,
    pub metrics: Arc<Metrics>,
    pub stopping: AtomicBool,
    rpc: OnceLock<Box<dyn RpcHandler>>,
    pub frame_budget: Arc<ByteBudget>,
    epmd: Mutex<Option<epmd::Registration>>,
}

/// Bits of a reference's counter in its first id word (OTP's first word
/// has 18).
pub const REF_FIRST_WORD_BITS: u32 = 18;

/// Set in the third id word of every reference this node makes: the
/// words never end in zero, so a reference always keeps its three words.
pub const REF_THIRD_WORD_MARK: u32 = 0x8000_0000;

/// A running node; cheap to clone.
#[derive(Clone)]
pub struct Node(pub(crate) Arc<Inner>);

impl Owner for Node {
    fn process_exited(&self, pid: &Pid, reason: &Term) {
        Node::process_exited(self, pid, reason);
    }
}

impl Host for Node {
    fn net_ticktime(&self) -> Duration {
        self.0.cfg.net_ticktime
    }
    fn max_frame(&self) -> usize {
        self.0.cfg.max_frame
    }
    fn metrics(&self) -> &Arc<Metrics> {
        &self.0.metrics
    }
    fn frame_budget(&self) -> &Arc<ByteBudget> {
        &self.0.frame_budget
    }
    fn dispatch(&self, peer: &Atom, ctrl: Control) -> Option<Arc<Watermark>> {
        Node::dispatch(self, peer, ctrl)
    }
    fn connection_ended(&self, peer: &Atom, conn_id: u64) {
        peers::connection_ended(self, peer, conn_id);
    }
}

impl PeerHost for Node {
    fn peers(&self) -> &Mutex<Peers> {
        &self.0.peers
    }
    fn name(&self) -> &Atom {
        &self.0.name
    }
    fn ident(&self) -> &Identity {
        &self.0.ident
    }
    fn is_stopping(&self) -> bool {
        Node::is_stopping(self)
    }
    fn max_peers(&self) -> usize {
        self.0.cfg.max_peers
    }
    fn handshake_timeout(&self) -> Duration {
        self.0.cfg.handshake_timeout
    }
    fn peer_lost(&self, peer: &Atom) {
        Node::peer_lost(self, peer);
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Node({})", self.0.name)
    }
}

impl Node {
    /// Binds, registers with epmd and starts accepting connections.
    pub async fn start(cfg: NodeConfig, metrics: Arc<Metrics>) -> Result<Node, String> {
        let node_name: erl_dist::node::NodeName = cfg
            .name
            .parse()
            .map_err(|e| format!("bad node name {:?}: {e}", cfg.name))?;
        if cfg.name.chars().count() > 255 {
            return Err("node name too long".into());
        }
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|e| format!("listen on {}: {e}", cfg.listen))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let reg = epmd::register(node_name.name(), port).await?;
        let creation = reg.creation;
        let frame_budget = Arc::new(ByteBudget::new(
            cfg.frame_budget.max(cfg.max_frame),
            metrics.clone(),
        ));
        let held_limits = cfg.held_limits;
        let inner = Inner {
            name: Atom::new(&cfg.name),
            creation,
            ident: Identity {
                name: node_name,
                creation,
                cookie: cfg.cookie.clone(),
            },
            cfg,
            port,
            procs: Mutex::new(Procs::new(held_limits)),
            peers: Mutex::new(Peers::default()),
            next_ref: AtomicU64::new(1),
            metrics,
            stopping: AtomicBool::new(false),
            rpc: OnceLock::new(),
            frame_budget,
            epmd: Mutex::new(Some(reg)),
        };
        let node = Node(Arc::new(inner));
        tracing::info!(node = %node.name(), port, creation, "registered with epmd");
        peers::spawn_acceptor(node.clone(), listener);
        Ok(node)
    }

    /// This node's name.
    pub fn name(&self) -> &Atom {
        &self.0.name
    }

    /// The creation epmd gave this node.
    pub fn creation(&self) -> u32 {
        self.0.creation
    }

    /// The distribution port.
    pub fn port(&self) -> u16 {
        self.0.port
    }

    /// The configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.0.cfg
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.0.metrics
    }

    /// Whether `p` is a pid of this node incarnation.
    pub fn is_local(&self, p: &Pid) -> bool {
        p.node == self.0.name && p.creation == self.0.creation
    }

    /// A new reference of this node: three id words, as OTP makes, from
    /// a counter (its low [`REF_FIRST_WORD_BITS`] bits in the first word,
    /// as OTP's), the third word marked with [`REF_THIRD_WORD_MARK`].
    pub fn make_ref(&self) -> Ref {
        let n = self.0.next_ref.fetch_add(1, Ordering::Relaxed);
        let first_mask = (1 << REF_FIRST_WORD_BITS) - 1;
        Ref::new(
            self.0.name.clone(),
            self.0.creation,
            &[
                (n & first_mask) as u32,
                (n >> REF_FIRST_WORD_BITS) as u32,
                (n >> (REF_FIRST_WORD_BITS + 32)) as u32 | REF_THIRD_WORD_MARK,
            ],
        )
    }

    /// Starts a process, registered under `name` if given (fails if taken).
    ///
    /// ```no_run
    /// use erl_node::{Signal, Term};
    /// # async fn demo(node: erl_node::Node) -> Result<(), String> {
    /// let mut server = node.spawn(Some("server"))?;
    /// assert_eq!(node.whereis("server").as_ref(), Some(server.pid()));
    /// let client = node.spawn(None)?;
    /// node.reg_send(client.pid(), "server", node.name(), Term::atom("hello"));
    /// match server.recv().await {
    ///     Some(Signal::Message { from, msg }) => {
    ///         assert_eq!((from.as_ref(), msg), (Some(client.pid()), Term::atom("hello")));
    ///     }
    ///     other => panic!("{other:?}"),
    /// }
    /// drop(server); // ends the process and frees its name
    /// assert_eq!(node.whereis("server"), None);
    /// # Ok(()) }
    /// ```
    pub fn spawn(&self, name: Option<&str>) -> Result<Mailbox, String> {
        let (tx, rx) = ProcTx::new();
        let mut procs = self.0.procs.lock();
        let name = name.map(Atom::new);
        if let Some(n) = &name {
            if procs.names.contains_key(n) {
                return Err(format!("name {n} already registered"));
            }
        }
        let key = procs.alloc();
        let pid = self.pid_of_key(key);
        if let Some(n) = &name {
            procs.names.insert(n.clone(), key);
        }
        procs.by_key.insert(key, Entry::new(tx, name));
        drop(procs);
        Ok(Mailbox::new(Box::new(self.clone()), pid, rx))
    }

    /// The pid registered under `name`, if any.
    pub fn whereis(&self, name: &str) -> Option<Pid> {
        let procs = self.0.procs.lock();
        let key = *procs.names.get(&Atom::new(name))?;
        Some(self.pid_of_key(key))
    }

    fn pid_of_key(&self, key: u64) -> Pid {
        let (id, serial) = pid_numbers(key);
        Pid {
            node: self.0.name.clone(),
            id,
            serial,
            creation: self.0.creation,
        }
    }

    fn process_exited(&self, pid: &Pid, reason: &Term) {
        let key = key_of(pid);
        let entry = {
            let mut procs = self.0.procs.lock();
            let Some(entry) = procs.remove(key) else {
                return;
            };
            for mons in procs.out_monitors.values_mut() {
                mons.retain(|_, k| *k != key);
            }
            self.publish_held(&procs);
            entry
        };
        let by_pid = Term::pid(pid.clone());
        let by_name = entry.name.map(Term::Atom);
        for (peer, held) in entry.held {
            for (r, m) in held.monitors {
                let target = match &by_name {
                    Some(name) if m.by_name => name,
                    _ => &by_pid,
                };
                self.send_frame(
                    &peer,
                    frame::monitor_exit(target, &m.from.pid(&peer), &r.reference(&peer), reason),
                    false,
                );
            }
            for l in held.links {
                self.send_frame(&peer, frame::exit(pid, &l.pid(&peer), reason), false);
            }
        }
    }

    /// Mirrors the monitor and link counts in the metrics.
    fn publish_held(&self, procs: &Procs) {
        let m = &self.0.metrics;
        m.remote_monitors
            .store(procs.held_monitors() as u64, Ordering::Relaxed);
        m.remote_links
            .store(procs.held_links() as u64, Ordering::Relaxed);
    }

    /// Delivers a signal to a local process; false if there is none.
    pub fn deliver(&self, to: &Pid, sig: Signal) -> bool {
        self.deliver_to(to, sig).is_some()
    }

    /// Delivers a signal to a local process; its backlog, or `None` if
    /// there is no such process.
    fn deliver_to(&self, to: &Pid, sig: Signal) -> Option<Arc<Watermark>> {
        if !self.is_local(to) {
            return None;
        }
        let procs = self.0.procs.lock();
        let e = procs.by_key.get(&key_of(to))?;
        e.tx.send(sig).ok().map(|()| e.tx.backlog.clone())
    }

    /// Delivers a signal to a registered process; its backlog, or the
    /// signal back if there is no such process.
    fn deliver_named(&self, name: &Atom, sig: Signal) -> Result<Arc<Watermark>, Signal> {
        let procs = self.0.procs.lock();
        match procs.names.get(name).and_then(|k| procs.by_key.get(k)) {
            Some(e) => e.tx.send(sig).map(|()| e.tx.backlog.clone()),
            None => Err(sig),
        }
    }

    /// Sends `msg` to `to` (local or remote; connects if needed).
    ///
    /// ```no_run
    /// use erl_node::{Pid, Term};
    /// # fn demo(node: &erl_node::Node, to: &Pid) {
    /// // `to ! {hello, self()}` from a process of ours.
    /// let me = node.spawn(None).expect("a process");
    /// node.send(to, erl_node::tuple![Term::atom("hello"), me.pid().clone()]);
    /// # }
    /// ```
    pub fn send(&self, to: &Pid, msg: Term) {
        if to.node == self.0.name {
            if !self.deliver(to, Signal::Message { from: None, msg }) {
                tracing::debug!(to = ?to, "message to a dead local process dropped");
            }
            return;
        }
        let peer = to.node.clone();
        self.send_frame(&peer, frame::send(to, &msg), true);
    }

    /// Sends the `gen_server` reply `{tag, reply}` to `to`.
    pub fn send_reply(&self, to: &Pid, tag: &Term, reply: Term) {
        if to.node == self.0.name {
            self.send(to, Term::tuple(vec![tag.clone(), reply]));
            return;
        }
        self.send_frame(&to.node, frame::send_reply(to, tag, &reply), true);
    }

    /// Sends `msg` from `from` to `{name, node}` (connects if needed).
    pub fn reg_send(&self, from: &Pid, name: &str, node: &Atom, msg: Term) {
        if *node == self.0.name {
            let _ = self.deliver_named(
                &Atom::new(name),
                Signal::Message {
                    from: Some(from.clone()),
                    msg,
                },
            );
            return;
        }
        self.send_frame(node, frame::reg_send(from, &Term::atom(name), &msg), true);
    }

    /// Monitors `{name, node}` (or a remote pid given as `target`) for our
    /// process `from`; a `Signal::Down` with the returned reference comes
    /// when it is or goes away, or the connection is lost.
    ///
    /// ```no_run
    /// use erl_node::{Atom, Signal, Term};
    /// # async fn demo(node: erl_node::Node) -> Result<(), String> {
    /// let mut me = node.spawn(None)?;
    /// let other = Atom::new("other@127.0.0.1");
    /// let r = node.monitor(me.pid(), Term::atom("server"), &other);
    /// if let Some(Signal::Down { reference, reason, .. }) = me.recv().await {
    ///     assert_eq!(reference, r);
    ///     println!("server gone: {reason}"); // noproc, noconnection, its exit reason
    /// }
    /// # Ok(()) }
    /// ```
    pub fn monitor(&self, from: &Pid, target: Term, node: &Atom) -> Ref {
        let r = self.make_ref();
        {
            let mut procs = self.0.procs.lock();
            procs
                .out_monitors
                .entry(node.clone())
                .or_default()
                .insert(r.clone(), key_of(from));
        }
        self.send_frame(node, frame::monitor(from, &target, &r), true);
        r
    }

    /// Drops a monitor made with [`Node::monitor`].
    pub fn demonitor(&self, from: &Pid, target: Term, node: &Atom, r: &Ref) {
        let known = {
            let mut procs = self.0.procs.lock();
            procs
                .out_monitors
                .get_mut(node)
                .and_then(|m| m.remove(r))
                .is_some()
        };
        if known {
            self.send_frame(node, frame::demonitor(from, &target, r), false);
        }
    }

    /// Sends a `spawn_request` for `{M, F, A}` with `args` to `node`, with a
    /// monitor: a [`Signal::SpawnReply`] then a [`Signal::Down`] whose
    /// reference is the returned request id (carrying the exit reason, or
    /// `noconnection`).
    pub fn spawn_request(&self, from: &Pid, node: &Atom, mfa: Term, args: Term) -> Ref {
        let r = self.make_ref();
        {
            let mut procs = self.0.procs.lock();
            procs
                .out_monitors
                .entry(node.clone())
                .or_default()
                .insert(r.clone(), key_of(from));
        }
        let opts = Term::List(vec![Term::static_atom("monitor")]);
        self.send_frame(
            node,
            frame::spawn_request(&r, from, &mfa, &opts, &args),
            true,
        );
        r
    }

    /// Sends a raw frame to `peer`; `connect` as with `erlang:send/2`
    /// (auto-connect) or `noconnect`.
    pub fn send_frame(&self, peer: &Atom, f: Vec<u8>, connect: bool) {
        peers::send_frame(self, peer, f, connect);
    }

    /// Whether a connection to `peer` is up.
    pub fn is_connected(&self, peer: &Atom) -> bool {
        self.0.peers.lock().is_up(peer)
    }

    /// Connected peers.
    pub fn connected(&self) -> Vec<Atom> {
        self.0.peers.lock().up_names()
    }

    /// Starts connecting to `peer` unless connected or connecting.
    pub fn connect(&self, peer: &Atom) {
        peers::ensure_connecting(self, peer);
    }

    /// Makes one connection attempt to `peer` now and awaits it (or the
    /// attempt already under way): `Ok` once connected, else why not,
    /// telling a wrong cookie ([`ConnectError::BadCookie`]) from an
    /// unknown or unreachable node. Callers retrying it should back off:
    /// each attempt with a wrong cookie costs the peer a log line.
    pub async fn connect_now(&self, peer: &Atom) -> Result<(), ConnectError> {
        peers::connect_now(self, peer).await
    }

    /// Waits until connected to `peer` (connecting if needed), up to
    /// `timeout`. Failed attempts are retried after 50 ms, doubling up to
    /// 2 s (a wrong cookie costs the peer a log line per attempt).
    pub async fn wait_connected(&self, peer: &Atom, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut delay = Duration::from_millis(50);
        loop {
            if self.is_connected(peer) {
                return true;
            }
            match tokio::time::timeout_at(deadline, self.connect_now(peer)).await {
                Ok(Ok(())) => return true,
                Ok(Err(_)) => {}
                Err(_) => return self.is_connected(peer),
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return false;
            }
            tokio::time::sleep(delay.min(deadline - now)).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    /// Whether [`Node::stop`] was called.
    pub fn is_stopping(&self) -> bool {
        self.0.stopping.load(Ordering::Relaxed)
    }

    /// Stops accepting, unregisters from epmd, and closes every connection
    /// once its queued frames are written (waits up to `grace`).
    pub async fn stop(&self, grace: Duration) {
        self.0.stopping.store(true, Ordering::Relaxed);
        self.0.epmd.lock().take();
        peers::close_all(self, grace).await;
    }

    /// Serves `rpc:call` and `erpc:call` to this node with `handler` (see
    /// [`crate::rpc`]); an error if a handler is already set. Until one
    /// is, every call gets `undef`.
    pub fn set_rpc_handler(&self, handler: impl RpcHandler) -> Result<(), String> {
        self.0
            .rpc
            .set(Box::new(handler))
            .map_err(|_| "an rpc handler is already set".to_string())
    }

    /// The application's rpc handler, if set.
    pub(crate) fn rpc_handler(&self) -> Option<&dyn RpcHandler> {
        self.0.rpc.get().map(|h| &**h)
    }

    /// A connection to `peer` is gone: drop what its processes held here
    /// (their links fire on our side: an exit signal `noconnection`, as a
    /// BEAM node delivers when a node goes down), and fire our monitors
    /// of its processes.
    fn peer_lost(&self, peer: &Atom) {
        let mut downs = Vec::new();
        let links = {
            let mut procs = self.0.procs.lock();
            let links = procs.drop_peer(peer);
            self.publish_held(&procs);
            if let Some(mons) = procs.out_monitors.remove(peer) {
                for (r, key) in mons {
                    if let Some(e) = procs.by_key.get(&key) {
                        downs.push((e.tx.clone(), r));
                    }
                }
            }
            links
        };
        for (tx, pids) in links {
            tx.send_links_down(peer, pids);
        }
        for (tx, reference) in downs {
            let _ = tx.send(Signal::Down {
                reference,
                from: Term::Atom(peer.clone()),
                reason: Term::static_atom("noconnection"),
            });
        }
    }

    /// Handles one incoming distribution operation from `peer`.
    ///
    /// Returns the backlog of the mailbox a message went to when it is over
    /// its high-water mark: the caller (the connection's reader) then waits
    /// for it to drain before reading more.
    fn dispatch(&self, peer: &Atom, ctrl: Control) -> Option<Arc<Watermark>> {
        match ctrl {
            Control::Send { to, from, msg } => {
                let backlog = self.deliver_to(&to, Signal::Message { from, msg });
                if backlog.is_none() {
                    tracing::debug!(%peer, to = ?to, "message to an unknown pid dropped");
                }
                backlog.filter(|b| b.is_high())
            }
            Control::RegSend { from, to, msg } => {
                let Some(name) = to.as_atom() else {
                    crate::warn_bad_input!(%peer, to = %to.display(100), "REG_SEND to a non-atom dropped");
                    return None;
                };
                // The message moves into the mailbox; it comes back only
                // to be logged when nobody has the name.
                match self.deliver_named(
                    name,
                    Signal::Message {
                        from: Some(from),
                        msg,
                    },
                ) {
                    Ok(backlog) => Some(backlog).filter(|b| b.is_high()),
                    Err(sig) => {
                        self.0.metrics.unknown_name.fetch_add(1, Ordering::Relaxed);
                        if let Signal::Message { from, msg } = &sig {
                            crate::warn_bad_input!(%peer, name = %name, from = ?from, msg = %msg.display(200), "message to an unknown registered name dropped");
                        }
                        None
                    }
                }
            }
            other => {
                self.dispatch_signal(peer, other);
                None
            }
        }
    }

    /// The operations other than messages.
    fn dispatch_signal(&self, peer: &Atom, ctrl: Control) {
        match ctrl {
            Control::Send { .. } | Control::RegSend { .. } => {} // in `dispatch`
            Control::AliasSend { from, alias, msg } => {
                tracing::debug!(%peer, from = ?from, alias = ?alias, msg = %msg.display(100), "alias send to this node dropped (no aliases here)");
            }
            Control::Monitor {
                from,
                to,
                reference,
            } => self.monitored(peer, from, to, reference),
            Control::Demonitor { to, reference, .. } => {
                let Some(r) = PeerRef::of(peer, &reference) else {
                    return;
                };
                let mut procs = self.0.procs.lock();
                let key = match &to {
                    Term::Atom(a) => procs.names.get(a).copied(),
                    Term::Pid(p) if self.is_local(p) => Some(key_of(p)),
                    _ => None,
                };
                if let Some(k) = key {
                    if procs.remove_monitor(k, peer, &r) {
                        self.publish_held(&procs);
                    }
                }
            }
            Control::MonitorExit {
                from,
                to,
                reference,
                reason,
            } => {
                let key = key_of(&to);
                let tx = {
                    let mut procs = self.0.procs.lock();
                    if let Some(m) = procs.out_monitors.get_mut(peer) {
                        m.remove(&reference);
                    }
                    if self.is_local(&to) {
                        procs.by_key.get(&key).map(|e| e.tx.clone())
                    } else {
                        None
                    }
                };
                if let Some(tx) = tx {
                    let _ = tx.send(Signal::Down {
                        reference,
                        from,
                        reason,
                    });
                }
            }
            Control::Link { from, to } => self.linked(peer, from, to),
            Control::Unlink { from, to } => self.unlink(peer, &from, &to),
            Control::UnlinkId { id, from, to } => {
                self.unlink(peer, &from, &to);
                self.send_frame(peer, frame::unlink_id_ack(&id, &to, &from), false);
            }
            Control::UnlinkIdAck { .. } => {}
            Control::Exit {
                from,
                to,
                reason,
                link,
            } => {
                if link {
                    self.unlink(peer, &from, &to);
                }
                tracing::debug!(%peer, from = ?from, to = ?to, reason = %reason.display(100), "exit signal (trapped)");
                self.deliver(&to, Signal::Exit { from, reason });
            }
            Control::SpawnRequest {
                req_id,
                from,
                mfa,
                opts,
                args,
            } => {
                let req = SpawnRequest {
                    req_id,
                    from,
                    mfa,
                    opts,
                    args,
                };
                let frames =
                    rpc::answer(self.rpc_handler(), self.name(), self.creation(), peer, req);
                for f in frames {
                    self.send_frame(peer, f, false);
                }
            }
            Control::SpawnReply {
                req_id,
                to,
                flags,
                result,
            } => {
                self.deliver(
                    &to,
                    Signal::SpawnReply {
                        req_id,
                        flags,
                        result,
                    },
                );
            }
            Control::Other(op) => {
                tracing::debug!(%peer, op, "distribution operation ignored");
            }
        }
    }

    /// `UNLINK`, `UNLINK_ID`, or the exit of a linked remote process:
    /// one lookup in the set of `peer`'s links with our process `to`.
    fn unlink(&self, peer: &Atom, from: &Pid, to: &Pid) {
        let Some(p) = PeerPid::of(peer, from) else {
            return;
        };
        if !self.is_local(to) {
            return;
        }
        let mut procs = self.0.procs.lock();
        if procs.remove_link(key_of(to), peer, &p) {
            self.publish_held(&procs);
        }
    }

    /// `LINK` from `peer`'s process `from` to our `to`. A link already
    /// there is left as it is (links are a set, as on the BEAM). A missing
    /// process, or one past the caps, answers an exit signal `noproc`:
    /// the peer removes its half of the link and its process gets the
    /// signal, as for a process that is gone.
    fn linked(&self, peer: &Atom, from: Pid, to: Pid) {
        let Some(p) = PeerPid::of(peer, &from) else {
            crate::warn_bad_input!(%peer, from = ?from, "LINK from a process of another node dropped");
            return;
        };
        let added = if self.is_local(&to) {
            let mut procs = self.0.procs.lock();
            let added = procs.add_link(key_of(&to), peer, p);
            if added == Added::New {
                self.publish_held(&procs);
            }
            added
        } else {
            Added::NoProc
        };
        match added {
            Added::New | Added::Known => return,
            Added::NoProc => {}
            Added::PeerFull | Added::NodeFull => {
                self.0.metrics.refused_links.fetch_add(1, Ordering::Relaxed);
                let limits = self.0.cfg.held_limits;
                crate::warn_bad_input!(
                    %peer,
                    per_peer = limits.peer_links,
                    node = limits.links,
                    node_full = added == Added::NodeFull,
                    "too many links: link refused (exit signal noproc)"
                );
            }
        }
        self.send_frame(
            peer,
            frame::exit(&to, &from, &Term::static_atom("noproc")),
            false,
        );
    }

    /// `MONITOR_P` from `peer`'s process `from` of our `to` (a pid or a
    /// registered name). A missing process, or one past the caps, answers
    /// `MONITOR_P_EXIT` with `noproc`.
    fn monitored(&self, peer: &Atom, from: Pid, to: Term, reference: Ref) {
        let ids = PeerPid::of(peer, &from).zip(PeerRef::of(peer, &reference));
        let added = match ids {
            None => {
                crate::warn_bad_input!(%peer, from = ?from, reference = ?reference, "MONITOR_P with a pid or reference of another node: noproc");
                Added::NoProc
            }
            Some((p, r)) => {
                let mut procs = self.0.procs.lock();
                let key = match &to {
                    Term::Atom(a) => procs.names.get(a).copied(),
                    Term::Pid(pid) if self.is_local(pid) => Some(key_of(pid)),
                    _ => None,
                };
                let m = HeldMonitor {
                    from: p,
                    by_name: matches!(to, Term::Atom(_)),
                };
                let added = key.map_or(Added::NoProc, |k| procs.add_monitor(k, peer, r, m));
                if added == Added::New {
                    self.publish_held(&procs);
                }
                added
            }
        };
        match added {
            Added::New | Added::Known => return,
            Added::NoProc => {
                tracing::debug!(%peer, target = %to.display(100), "monitor of a missing process: noproc");
            }
            Added::PeerFull | Added::NodeFull => {
                self.0
                    .metrics
                    .refused_monitors
                    .fetch_add(1, Ordering::Relaxed);
                let limits = self.0.cfg.held_limits;
                crate::warn_bad_input!(
                    %peer,
                    per_peer = limits.peer_monitors,
                    node = limits.monitors,
                    node_full = added == Added::NodeFull,
                    "too many monitors: monitor refused (noproc)"
                );
            }
        }
        self.send_frame(
            peer,
            frame::monitor_exit(&to, &from, &reference, &Term::static_atom("noproc")),
            false,
        );
    }
}
