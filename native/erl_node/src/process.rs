//! Processes of this node: mailboxes with pids, registered names, and the
//! monitors and links remote processes hold on them.
//!
//! erl_dist has none of this; the table here is the minimum a C-node needs
//! to look like a node: pids are allocated like OTP's (15-bit number,
//! 13-bit serial), names map to pids, and when a mailbox is dropped its
//! remote monitors get `MONITOR_P_EXIT` and its links `EXIT`.
//!
//! What remote processes hold on a process of ours (`Held`) is kept per
//! process and per peer, in compact form: a monitor is its reference and
//! the monitoring pid without their node name (the peer's, checked when the
//! monitor is made), 44 bytes in a hash table, and a link is a set member
//! of 12 bytes keyed by the linked pid, so that a repeated `LINK` adds
//! nothing and `UNLINK` is one lookup. Both are capped ([`HeldLimits`]): per
//! peer on one process and over the whole node. A peer's share is dropped
//! whole (its tables freed) when the connection goes down.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::term::{Atom, Pid, Ref, Term};
use crate::watermark::Watermark;

/// What a process receives.
#[derive(Debug, Clone)]
pub enum Signal {
    /// A message (`SEND`, `REG_SEND`, or a local send).
    Message {
        /// The sender, when known (`REG_SEND`, `SEND_SENDER`).
        from: Option<Pid>,
        /// The message.
        msg: Term,
    },
    /// A monitor of ours fired: `{'DOWN', Ref, process, From, Reason}`.
    Down {
        /// Our monitor reference.
        reference: Ref,
        /// The monitored process (pid or name).
        from: Term,
        /// Why (`noproc`, `noconnection`, an exit reason).
        reason: Term,
    },
    /// The answer to a `spawn_request` of ours.
    SpawnReply {
        /// Request id.
        req_id: Ref,
        /// Flags ([`crate::frame::SPAWN_REPLY_LINK`], [`crate::frame::SPAWN_REPLY_MONITOR`]).
        flags: i64,
        /// The new pid or an error atom.
        result: Term,
    },
    /// An exit signal (our processes trap exits: it is just information).
    Exit {
        /// The sender.
        from: Pid,
        /// Reason.
        reason: Term,
    },
}

/// A process of a peer as that peer names it: a pid of the peer's node
/// without the node name (the table that holds it is the peer's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PeerPid {
    id: u32,
    serial: u32,
    creation: u32,
}

impl PeerPid {
    /// `p` if it is a pid of `peer`'s node.
    pub fn of(peer: &Atom, p: &Pid) -> Option<Self> {
        (p.node == *peer).then_some(PeerPid {
            id: p.id,
            serial: p.serial,
            creation: p.creation,
        })
    }

    /// The pid again.
    pub fn pid(&self, peer: &Atom) -> Pid {
        Pid {
            node: peer.clone(),
            id: self.id,
            serial: self.serial,
            creation: self.creation,
        }
    }
}

/// A reference made by a peer, without the node name: every monitor
/// reference OTP makes has at most five id words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PeerRef {
    creation: u32,
    len: u8,
    ids: [u32; PEER_REF_WORDS],
}

/// The most id words of a monitor reference of a peer.
const PEER_REF_WORDS: usize = 5;

impl PeerRef {
    /// `r` if it is a reference of `peer`'s node with at most five words.
    pub fn of(peer: &Atom, r: &Ref) -> Option<Self> {
        if r.node != *peer || r.ids.len() > PEER_REF_WORDS {
            return None;
        }
        let mut ids = [0; PEER_REF_WORDS];
        ids[..r.ids.len()].copy_from_slice(&r.ids);
        Some(PeerRef {
            creation: r.creation,
            len: r.ids.len() as u8,
            ids,
        })
    }

    /// The reference again.
    pub fn reference(&self, peer: &Atom) -> Ref {
        Ref::new(peer.clone(), self.creation, &self.ids[..self.len as usize])
    }
}

/// A monitor a remote process holds on one of ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HeldMonitor {
    /// The monitoring process.
    pub from: PeerPid,
    /// Whether it monitors our process by its registered name (the exit
    /// then names it by that name, as it was monitored).
    pub by_name: bool,
}

/// What the processes of one peer hold on one process of ours.
#[derive(Default)]
pub(crate) struct Held {
    /// Monitors by reference.
    pub monitors: HashMap<PeerRef, HeldMonitor, ahash::RandomState>,
    /// Linked processes (a link is there or not: a repeated `LINK` is
    /// nothing new).
    pub links: HashSet<PeerPid, ahash::RandomState>,
}

/// A table emptied well below its capacity gives the memory back (it
/// keeps room for twice what it holds), so that a peer's burst of
/// monitors or links does not pin its peak for the life of the process.
fn shrink_if_sparse<T>(len: usize, capacity: usize, shrink: impl FnOnce(usize) -> T) {
    if capacity > 64 && len < capacity / 4 {
        shrink(len * 2);
    }
}

impl Held {
    fn is_empty(&self) -> bool {
        self.monitors.is_empty() && self.links.is_empty()
    }

    fn remove_monitor(&mut self, r: &PeerRef) -> Option<HeldMonitor> {
        let m = self.monitors.remove(r)?;
        shrink_if_sparse(self.monitors.len(), self.monitors.capacity(), |n| {
            self.monitors.shrink_to(n)
        });
        Some(m)
    }

    fn remove_link(&mut self, p: &PeerPid) -> bool {
        if !self.links.remove(p) {
            return false;
        }
        shrink_if_sparse(self.links.len(), self.links.capacity(), |n| {
            self.links.shrink_to(n)
        });
        true
    }
}

/// Caps on what remote processes hold on this node's processes. Past
/// them a `MONITOR_P` is answered `MONITOR_P_EXIT` with `noproc` and a
/// `LINK` with `EXIT` `noproc`: what a BEAM node answers for a process
/// that is gone, so that the peer's view stays consistent (its monitor
/// fires, its half of the link is removed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldLimits {
    /// Most monitors one peer's processes may hold on one process.
    pub peer_monitors: usize,
    /// Most monitors remote processes may hold on this node in all.
    pub monitors: usize,
    /// Most links one peer's processes may hold with one process.
    pub peer_links: usize,
    /// Most links remote processes may hold with this node in all.
    pub links: usize,
}

/// The default per-peer caps: 57,344 fill a hash table of 65,536 buckets
/// (7/8 full, its most) without growing it to 131,072: 2.9 MB of monitors
/// or 0.9 MB of links.
pub const PEER_HELD_DEFAULT: usize = 7 << 13;

impl Default for HeldLimits {
    /// [`PEER_HELD_DEFAULT`] per peer and process; 1,048,576 of each over
    /// the node.
    fn default() -> Self {
        HeldLimits {
            peer_monitors: PEER_HELD_DEFAULT,
            monitors: 1 << 20,
            peer_links: PEER_HELD_DEFAULT,
            links: 1 << 20,
        }
    }
}

/// The outcome of adding a monitor or a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Added {
    /// Added.
    New,
    /// It was there already (a link made twice): nothing changed.
    Known,
    /// Refused: over the cap for this peer and process.
    PeerFull,
    /// Refused: over the cap for the node.
    NodeFull,
    /// No such process of ours.
    NoProc,
}

/// Signals waiting in one mailbox, counted in a [`Watermark`]: a
/// connection that delivers to a mailbox holding more than
/// [`MAILBOX_HIGH`] signals stops reading its socket until the mailbox is
/// down to [`MAILBOX_LOW`], so a flood of messages cannot grow this node's
/// memory without bound.
pub(crate) const MAILBOX_HIGH: usize = 4096;
/// See [`MAILBOX_HIGH`].
pub(crate) const MAILBOX_LOW: usize = 1024;

/// What a mailbox's queue holds: a signal, or the links a peer's
/// processes held with this process when the peer went down, handed out as
/// one [`Signal::Exit`] (`noconnection`) each as they are received. They
/// wait as 12 bytes a link rather than as a 120-byte signal each.
pub(crate) enum Queued {
    Signal(Signal),
    LinksDown { peer: Atom, pids: Vec<PeerPid> },
}

/// The sending side of a mailbox, counting what it queues.
#[derive(Clone)]
pub(crate) struct ProcTx {
    tx: mpsc::UnboundedSender<Queued>,
    pub backlog: Arc<Watermark>,
}

impl ProcTx {
    pub fn new() -> (Self, ProcRx) {
        let (tx, rx) = mpsc::unbounded_channel();
        let backlog = Arc::new(Watermark::new(MAILBOX_HIGH, MAILBOX_LOW));
        (
            Self {
                tx,
                backlog: backlog.clone(),
            },
            ProcRx {
                rx,
                backlog,
                links_down: None,
            },
        )
    }

    /// Queues `sig`; gives it back if the process is gone.
    pub fn send(&self, sig: Signal) -> Result<(), Signal> {
        self.backlog.add(1);
        self.tx.send(Queued::Signal(sig)).map_err(|e| {
            self.backlog.sub(1);
            match e.0 {
                Queued::Signal(sig) => sig,
                Queued::LinksDown { .. } => unreachable!("sent a signal"),
            }
        })
    }

    /// Queues the exit signals (`noconnection`) of `peer`'s processes
    /// `pids`, whose links with this process broke with the connection.
    pub fn send_links_down(&self, peer: &Atom, pids: Vec<PeerPid>) {
        self.backlog.add(1);
        let q = Queued::LinksDown {
            peer: peer.clone(),
            pids,
        };
        if self.tx.send(q).is_err() {
            self.backlog.sub(1);
        }
    }
}

/// The receiving side of a mailbox.
pub(crate) struct ProcRx {
    rx: mpsc::UnboundedReceiver<Queued>,
    backlog: Arc<Watermark>,
    /// Exit signals of broken links still to hand out.
    links_down: Option<(Atom, std::vec::IntoIter<PeerPid>)>,
}

impl ProcRx {
    /// The next exit signal of broken links, if any.
    fn next_exit(&mut self) -> Option<Signal> {
        let (peer, pids) = self.links_down.as_mut()?;
        match pids.next() {
            Some(p) => Some(Signal::Exit {
                from: p.pid(peer),
                reason: Term::static_atom("noconnection"),
            }),
            None => {
                self.links_down = None;
                None
            }
        }
    }

    /// A queued item taken off the queue: its signal, or the first of
    /// its exit signals.
    fn take(&mut self, q: Queued) -> Option<Signal> {
        self.backlog.sub(1);
        match q {
            Queued::Signal(sig) => Some(sig),
            Queued::LinksDown { peer, pids } => {
                self.links_down = Some((peer, pids.into_iter()));
                self.next_exit()
            }
        }
    }

    /// The next signal (`None` once every sender is gone).
    pub async fn recv(&mut self) -> Option<Signal> {
        loop {
            if let Some(sig) = self.next_exit() {
                return Some(sig);
            }
            let q = self.rx.recv().await?;
            if let Some(sig) = self.take(q) {
                return Some(sig);
            }
        }
    }

    /// A signal if one is waiting.
    pub fn try_recv(&mut self) -> Option<Signal> {
        loop {
            if let Some(sig) = self.next_exit() {
                return Some(sig);
            }
            let q = self.rx.try_recv().ok()?;
            if let Some(sig) = self.take(q) {
                return Some(sig);
            }
        }
    }
}

pub(crate) struct Entry {
    pub tx: ProcTx,
    pub name: Option<Atom>,
    /// Monitors and links remote processes hold on this one, by peer.
    pub held: HashMap<Atom, Held, ahash::RandomState>,
}

impl Entry {
    pub fn new(tx: ProcTx, name: Option<Atom>) -> Self {
        Entry {
            tx,
            name,
            held: Default::default(),
        }
    }
}

/// The process table.
#[derive(Default)]
pub(crate) struct Procs {
    pub by_key: HashMap<u64, Entry, ahash::RandomState>,
    pub names: HashMap<Atom, u64, ahash::RandomState>,
    next: u64,
    /// Monitors our processes hold on remote ones: node → ref → our pid key.
    pub out_monitors: HashMap<Atom, HashMap<Ref, u64, ahash::RandomState>, ahash::RandomState>,
    limits: HeldLimits,
    /// Monitors remote processes hold on ours, in all.
    held_monitors: usize,
    /// Links remote processes hold with ours, in all.
    held_links: usize,
}

/// What a peer's processes held when its connection went down: the links
/// of each of our processes, which get an exit signal (`noconnection`)
/// each ([`ProcTx::send_links_down`]).
pub(crate) type DroppedLinks = Vec<(ProcTx, Vec<PeerPid>)>;

/// Bits of a pid's id; the serial counts the wraps of the id.
const PID_ID_BITS: u32 = 15;
/// Bits of a pid's serial.
const PID_SERIAL_BITS: u32 = 13;
/// The ids a pid can have.
pub(crate) const PID_ID_MASK: u32 = (1 << PID_ID_BITS) - 1;

/// Pid numbers: id and serial, as many as OTP's external pids have.
const PID_SPACE: u64 = 1 << (PID_ID_BITS + PID_SERIAL_BITS);

/// A process's key in the table: its pid's serial and id.
pub(crate) fn key_of(p: &Pid) -> u64 {
    ((p.serial as u64) << PID_ID_BITS) | u64::from(p.id & PID_ID_MASK)
}

/// The id and the serial of the pid of the process with this key.
pub(crate) fn pid_numbers(key: u64) -> (u32, u32) {
    ((key as u32) & PID_ID_MASK, (key >> PID_ID_BITS) as u32)
}

impl Procs {
    /// An empty table with these caps.
    pub fn new(limits: HeldLimits) -> Self {
        Procs {
            limits,
            ..Procs::default()
        }
    }

    /// Monitors remote processes hold on ours, in all.
    pub fn held_monitors(&self) -> usize {
        self.held_monitors
    }

    /// Links remote processes hold with ours, in all.
    pub fn held_links(&self) -> usize {
        self.held_links
    }

    /// Records that `peer`'s process `m.from` monitors our process `key`
    /// with reference `r`.
    pub fn add_monitor(&mut self, key: u64, peer: &Atom, r: PeerRef, m: HeldMonitor) -> Added {
        let limits = self.limits;
        let total = self.held_monitors;
        let Some(e) = self.by_key.get_mut(&key) else {
            return Added::NoProc;
        };
        let held = e.held.get(peer);
        if held.is_some_and(|h| h.monitors.contains_key(&r)) {
            // The same reference again (no BEAM does this): keep the first.
            return Added::Known;
        }
        if held.map_or(0, |h| h.monitors.len()) >= limits.peer_monitors {
            return Added::PeerFull;
        }
        if total >= limits.monitors {
            return Added::NodeFull;
        }
        e.held
            .entry(peer.clone())
            .or_default()
            .monitors
            .insert(r, m);
        self.held_monitors += 1;
        Added::New
    }

    /// Drops the monitor `r` of `peer` on our process `key`, if there.
    pub fn remove_monitor(&mut self, key: u64, peer: &Atom, r: &PeerRef) -> bool {
        let Some(e) = self.by_key.get_mut(&key) else {
            return false;
        };
        let Some(h) = e.held.get_mut(peer) else {
            return false;
        };
        let found = h.remove_monitor(r).is_some();
        if h.is_empty() {
            e.held.remove(peer);
        }
        self.held_monitors -= usize::from(found);
        found
    }

    /// Records a link between `peer`'s process `p` and our process `key`.
    pub fn add_link(&mut self, key: u64, peer: &Atom, p: PeerPid) -> Added {
        let limits = self.limits;
        let total = self.held_links;
        let Some(e) = self.by_key.get_mut(&key) else {
            return Added::NoProc;
        };
        let held = e.held.get(peer);
        if held.is_some_and(|h| h.links.contains(&p)) {
            return Added::Known;
        }
        if held.map_or(0, |h| h.links.len()) >= limits.peer_links {
            return Added::PeerFull;
        }
        if total >= limits.links {
            return Added::NodeFull;
        }
        e.held.entry(peer.clone()).or_default().links.insert(p);
        self.held_links += 1;
        Added::New
    }

    /// Drops the link between `peer`'s process `p` and our process `key`,
    /// if there.
    pub fn remove_link(&mut self, key: u64, peer: &Atom, p: &PeerPid) -> bool {
        let Some(e) = self.by_key.get_mut(&key) else {
            return false;
        };
        let Some(h) = e.held.get_mut(peer) else {
            return false;
        };
        let found = h.remove_link(p);
        if h.is_empty() {
            e.held.remove(peer);
        }
        self.held_links -= usize::from(found);
        found
    }

    /// Drops everything `peer`'s processes hold here (its connection is
    /// gone); returns the links, which fire on our side.
    pub fn drop_peer(&mut self, peer: &Atom) -> DroppedLinks {
        let mut fired = Vec::new();
        for e in self.by_key.values_mut() {
            let Some(h) = e.held.remove(peer) else {
                continue;
            };
            self.held_monitors -= h.monitors.len();
            self.held_links -= h.links.len();
            if !h.links.is_empty() {
                fired.push((e.tx.clone(), h.links.into_iter().collect()));
            }
        }
        fired
    }

    /// Removes our process `key` from the table (it exited), with its name
    /// and what remote processes held on it.
    pub fn remove(&mut self, key: u64) -> Option<Entry> {
        let entry = self.by_key.remove(&key)?;
        if let Some(n) = &entry.name {
            self.names.remove(n);
        }
        for h in entry.held.values() {
            self.held_monitors -= h.monitors.len();
            self.held_links -= h.links.len();
        }
        Some(entry)
    }

    /// Allocates a pid key not in use.
    pub fn alloc(&mut self) -> u64 {
        loop {
            self.next = (self.next + 1) % PID_SPACE;
            if self.next != 0 && !self.by_key.contains_key(&self.next) {
                return self.next;
            }
        }
    }
}

/// A process of this node: a pid and its mailbox. Dropping it ends the
/// process: its name is freed, remote monitors get `exit_reason`
/// (`normal` unless changed) and linked processes an `EXIT`.
///
/// ```no_run
/// use erl_node::{Signal, Term};
/// # async fn demo(node: erl_node::Node) -> Result<(), String> {
/// // A gen_server that answers every call with `ok` until it is sent `stop`.
/// let mut mb = node.spawn(Some("server"))?;
/// while let Some(sig) = mb.recv().await {
///     let Signal::Message { msg, .. } = sig else { continue };
///     if msg.is_atom("stop") {
///         mb.exit_reason = Term::atom("shutdown");
///         break;
///     }
///     if let Some((pid, tag, _req)) = msg.as_gen_call() {
///         node.send_reply(pid, tag, Term::atom("ok"));
///     }
/// }
/// # Ok(()) }
/// ```
pub struct Mailbox {
    owner: Box<dyn Owner>,
    pid: Pid,
    rx: ProcRx,
    /// The reason remote monitors and links see when this is dropped.
    pub exit_reason: Term,
}

/// What a mailbox's node does when the mailbox is dropped (the node
/// implements it; the table here does not know the node).
pub(crate) trait Owner: Send + Sync + 'static {
    /// The process `pid` ended with `reason`.
    fn process_exited(&self, pid: &Pid, reason: &Term);
}

impl Mailbox {
    /// The process `pid` of `owner`, receiving from `rx`.
    pub(crate) fn new(owner: Box<dyn Owner>, pid: Pid, rx: ProcRx) -> Self {
        Mailbox {
            owner,
            pid,
            rx,
            exit_reason: Term::static_atom("normal"),
        }
    }

    /// This process's pid.
    pub fn pid(&self) -> &Pid {
        &self.pid
    }

    /// The next signal (`None` only when the node dropped the process).
    pub async fn recv(&mut self) -> Option<Signal> {
        self.rx.recv().await
    }

    /// A signal if one is waiting.
    pub fn try_recv(&mut self) -> Option<Signal> {
        self.rx.try_recv()
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        self.owner.process_exited(&self.pid, &self.exit_reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg() -> Signal {
        Signal::Message {
            from: None,
            msg: Term::Int(1),
        }
    }

    #[tokio::test]
    async fn backlog_pauses_above_high_and_resumes_at_low() {
        let (tx, mut rx) = ProcTx::new();
        let backlog = tx.backlog.clone();
        for _ in 0..=MAILBOX_HIGH {
            tx.send(msg()).unwrap();
        }
        assert!(backlog.is_high());
        let waiter = tokio::spawn({
            let b = backlog.clone();
            async move { b.drained().await }
        });
        // Taking down to LOW + 1 is not enough.
        for _ in 0..(MAILBOX_HIGH - MAILBOX_LOW) {
            rx.recv().await.unwrap();
        }
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        rx.recv().await.unwrap();
        waiter.await.unwrap();
        assert!(!backlog.is_high());
    }

    fn limits(peer: usize, node: usize) -> HeldLimits {
        HeldLimits {
            peer_monitors: peer,
            monitors: node,
            peer_links: peer,
            links: node,
        }
    }

    /// A table with processes 1 and 2.
    fn table(l: HeldLimits) -> Procs {
        let mut procs = Procs::new(l);
        for key in [1, 2] {
            let (tx, _rx) = ProcTx::new();
            procs.by_key.insert(key, Entry::new(tx, None));
        }
        procs
    }

    fn rpid(peer: &Atom, id: u32) -> PeerPid {
        PeerPid::of(
            peer,
            &Pid {
                node: peer.clone(),
                id,
                serial: id >> 15,
                creation: 7,
            },
        )
        .unwrap()
    }

    fn rref(peer: &Atom, n: u32) -> PeerRef {
        PeerRef::of(peer, &Ref::new(peer.clone(), 7, &[n, 1, 2])).unwrap()
    }

    fn mon(peer: &Atom, id: u32) -> HeldMonitor {
        HeldMonitor {
            from: rpid(peer, id),
            by_name: false,
        }
    }

    #[test]
    fn peer_ids_round_trip_and_refuse_other_nodes() {
        let a = Atom::new("a@h");
        let p = Pid {
            node: a.clone(),
            id: 5,
            serial: 3,
            creation: 9,
        };
        assert_eq!(PeerPid::of(&a, &p).unwrap().pid(&a), p);
        assert!(PeerPid::of(&Atom::new("b@h"), &p).is_none());
        for words in [&[1u32][..], &[1, 2, 3], &[1, 2, 3, 4, 5], &[0, 0, 7]] {
            let r = Ref::new(a.clone(), 9, words);
            assert_eq!(PeerRef::of(&a, &r).unwrap().reference(&a), r);
        }
        let long = Ref::new(a.clone(), 9, &[1, 2, 3, 4, 5, 6]);
        assert!(PeerRef::of(&a, &long).is_none(), "six words");
        assert!(PeerRef::of(&Atom::new("b@h"), &Ref::new(a, 9, &[1])).is_none());
        // The compact forms are what the memory figures assume.
        assert_eq!(std::mem::size_of::<PeerPid>(), 12);
        assert_eq!(
            std::mem::size_of::<PeerRef>() + std::mem::size_of::<HeldMonitor>(),
            44
        );
    }

    #[test]
    fn links_are_a_set_and_unlink_finds_one() {
        let a = Atom::new("a@h");
        let mut procs = table(limits(100, 1000));
        assert_eq!(procs.add_link(1, &a, rpid(&a, 1)), Added::New);
        for _ in 0..1000 {
            assert_eq!(procs.add_link(1, &a, rpid(&a, 1)), Added::Known);
        }
        assert_eq!(procs.held_links(), 1);
        // The same pid linked to another process is another link.
        assert_eq!(procs.add_link(2, &a, rpid(&a, 1)), Added::New);
        assert_eq!(procs.add_link(3, &a, rpid(&a, 1)), Added::NoProc);
        assert_eq!(procs.held_links(), 2);
        assert!(procs.remove_link(1, &a, &rpid(&a, 1)));
        assert!(!procs.remove_link(1, &a, &rpid(&a, 1)));
        assert!(!procs.remove_link(2, &Atom::new("b@h"), &rpid(&a, 1)));
        assert_eq!(procs.held_links(), 1);
        // An emptied peer share is dropped from the process.
        assert!(procs.by_key[&1].held.is_empty());
    }

    #[test]
    fn links_past_the_caps_are_refused() {
        let (a, b, c) = (Atom::new("a@h"), Atom::new("b@h"), Atom::new("c@h"));
        let mut procs = table(limits(10, 25));
        for id in 0..10 {
            assert_eq!(procs.add_link(1, &a, rpid(&a, id)), Added::New);
        }
        assert_eq!(procs.add_link(1, &a, rpid(&a, 10)), Added::PeerFull);
        assert_eq!(procs.add_link(1, &a, rpid(&a, 3)), Added::Known);
        for id in 0..10 {
            assert_eq!(procs.add_link(2, &a, rpid(&a, id)), Added::New);
        }
        for id in 0..5 {
            assert_eq!(procs.add_link(1, &b, rpid(&b, id)), Added::New);
        }
        assert_eq!(procs.held_links(), 25);
        assert_eq!(procs.add_link(1, &c, rpid(&c, 0)), Added::NodeFull);
        assert!(procs.remove_link(1, &a, &rpid(&a, 0)));
        assert_eq!(procs.add_link(1, &c, rpid(&c, 0)), Added::New);
    }

    #[test]
    fn monitors_by_reference_with_caps() {
        let (a, b) = (Atom::new("a@h"), Atom::new("b@h"));
        let mut procs = table(limits(10, 15));
        for n in 0..10 {
            assert_eq!(
                procs.add_monitor(1, &a, rref(&a, n), mon(&a, n)),
                Added::New
            );
        }
        assert_eq!(
            procs.add_monitor(1, &a, rref(&a, 3), mon(&a, 99)),
            Added::Known
        );
        assert_eq!(procs.by_key[&1].held[&a].monitors[&rref(&a, 3)], mon(&a, 3));
        assert_eq!(
            procs.add_monitor(1, &a, rref(&a, 10), mon(&a, 10)),
            Added::PeerFull
        );
        for n in 0..5 {
            assert_eq!(
                procs.add_monitor(2, &b, rref(&b, n), mon(&b, n)),
                Added::New
            );
        }
        assert_eq!(
            procs.add_monitor(2, &a, rref(&a, 0), mon(&a, 0)),
            Added::NodeFull
        );
        assert_eq!(procs.held_monitors(), 15);
        assert!(procs.remove_monitor(1, &a, &rref(&a, 4)));
        assert!(!procs.remove_monitor(1, &a, &rref(&a, 4)));
        assert!(
            !procs.remove_monitor(2, &a, &rref(&a, 5)),
            "not on that process"
        );
        assert_eq!(procs.held_monitors(), 14);
        assert_eq!(
            procs.add_monitor(3, &a, rref(&a, 0), mon(&a, 0)),
            Added::NoProc
        );
    }

    #[test]
    fn emptied_tables_give_their_memory_back() {
        let a = Atom::new("a@h");
        let mut procs = table(limits(1 << 20, 1 << 20));
        for n in 0..50_000 {
            procs.add_link(1, &a, rpid(&a, n));
            procs.add_monitor(1, &a, rref(&a, n), mon(&a, n));
        }
        let h = &procs.by_key[&1].held[&a];
        assert!(h.links.capacity() >= 50_000 && h.monitors.capacity() >= 50_000);
        for n in 0..49_990 {
            assert!(procs.remove_link(1, &a, &rpid(&a, n)));
            assert!(procs.remove_monitor(1, &a, &rref(&a, n)));
        }
        let h = &procs.by_key[&1].held[&a];
        assert_eq!((h.links.len(), h.monitors.len()), (10, 10));
        assert!(h.links.capacity() < 1000, "{}", h.links.capacity());
        assert!(h.monitors.capacity() < 1000, "{}", h.monitors.capacity());
    }

    #[test]
    fn a_lost_peer_takes_its_share_and_fires_its_links() {
        let (a, b) = (Atom::new("a@h"), Atom::new("b@h"));
        let mut procs = table(limits(100, 1000));
        for n in 0..20 {
            procs.add_link(1, &a, rpid(&a, n));
            procs.add_monitor(1, &a, rref(&a, n), mon(&a, n));
            procs.add_monitor(2, &a, rref(&a, n), mon(&a, n));
        }
        procs.add_link(1, &b, rpid(&b, 1));
        procs.add_monitor(2, &b, rref(&b, 1), mon(&b, 1));
        let fired = procs.drop_peer(&a);
        assert_eq!(fired.len(), 1, "only process 1 had links of a");
        let mut ids: Vec<Pid> = fired[0].1.iter().map(|p| p.pid(&a)).collect();
        ids.sort();
        assert_eq!(
            ids,
            (0..20).map(|n| rpid(&a, n).pid(&a)).collect::<Vec<_>>()
        );
        assert_eq!((procs.held_monitors(), procs.held_links()), (1, 1));
        assert!(procs.by_key.values().all(|e| !e.held.contains_key(&a)));
        assert!(procs.drop_peer(&a).is_empty());
        // A process that exits takes what was held on it.
        let gone = procs.remove(2).unwrap();
        assert_eq!(gone.held[&b].monitors.len(), 1);
        assert_eq!((procs.held_monitors(), procs.held_links()), (0, 1));
    }

    #[tokio::test]
    async fn a_send_to_a_dead_process_is_not_counted() {
        let (tx, rx) = ProcTx::new();
        drop(rx);
        assert!(tx.send(msg()).is_err());
        tx.send_links_down(&Atom::new("a@h"), vec![]);
        assert_eq!(tx.backlog.count(), 0);
    }

    #[tokio::test]
    async fn broken_links_come_out_as_one_exit_signal_each() {
        let a = Atom::new("a@h");
        let (tx, mut rx) = ProcTx::new();
        tx.send(msg()).unwrap();
        tx.send_links_down(&a, vec![rpid(&a, 1), rpid(&a, 2)]);
        tx.send_links_down(&a, vec![]);
        tx.send(msg()).unwrap();
        assert_eq!(tx.backlog.count(), 4, "one each, links or not");
        assert!(matches!(rx.try_recv(), Some(Signal::Message { .. })));
        for n in [1, 2] {
            match rx.recv().await {
                Some(Signal::Exit { from, reason }) => {
                    assert_eq!(from, rpid(&a, n).pid(&a));
                    assert!(reason.is_atom("noconnection"));
                }
                other => panic!("{other:?}"),
            }
        }
        // The empty batch yields nothing; the message after it comes.
        assert!(matches!(rx.recv().await, Some(Signal::Message { .. })));
        assert!(rx.try_recv().is_none());
        assert_eq!(tx.backlog.count(), 0);
    }
}
