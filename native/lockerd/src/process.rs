//! Processes of this node: mailboxes with pids, registered names, and the
//! monitors and links remote processes hold on them.
//!
//! erl_dist has none of this; the table here is the minimum a C-node needs
//! to look like a node: pids are allocated like OTP's (15-bit number,
//! 13-bit serial), names map to pids, and when a mailbox is dropped its
//! remote monitors get `MONITOR_P_EXIT` and its links `EXIT`.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::node::Node;
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
        /// 1 link, 2 monitor.
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

/// A remote process monitoring one of ours.
#[derive(Debug, Clone)]
pub(crate) struct InMonitor {
    pub peer: Atom,
    pub from: Pid,
    pub reference: Ref,
    /// What was monitored (our pid or our name), echoed in the exit.
    pub target: Term,
}

/// Signals waiting in one mailbox, counted in a [`Watermark`]: a
/// connection that delivers to a mailbox holding more than
/// [`MAILBOX_HIGH`] signals stops reading its socket until the mailbox is
/// down to [`MAILBOX_LOW`], so a flood of messages cannot grow this node's
/// memory without bound.
pub(crate) const MAILBOX_HIGH: usize = 4096;
/// See [`MAILBOX_HIGH`].
pub(crate) const MAILBOX_LOW: usize = 1024;

/// The sending side of a mailbox, counting what it queues.
#[derive(Clone)]
pub(crate) struct ProcTx {
    tx: mpsc::UnboundedSender<Signal>,
    pub backlog: Arc<Watermark>,
}

impl ProcTx {
    pub fn new() -> (Self, mpsc::UnboundedReceiver<Signal>, Arc<Watermark>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let backlog = Arc::new(Watermark::new(MAILBOX_HIGH, MAILBOX_LOW));
        (
            Self {
                tx,
                backlog: backlog.clone(),
            },
            rx,
            backlog,
        )
    }

    /// Queues `sig`; gives it back if the process is gone.
    pub fn send(&self, sig: Signal) -> Result<(), Signal> {
        self.backlog.add(1);
        self.tx.send(sig).map_err(|e| {
            self.backlog.sub(1);
            e.0
        })
    }
}

pub(crate) struct Entry {
    pub tx: ProcTx,
    pub name: Option<Atom>,
    /// Monitors remote processes hold on this one, by reference.
    pub monitors: HashMap<Ref, InMonitor, ahash::RandomState>,
    pub links: Vec<Pid>,
}

/// The process table.
#[derive(Default)]
pub(crate) struct Procs {
    pub by_key: HashMap<u64, Entry, ahash::RandomState>,
    pub names: HashMap<Atom, u64, ahash::RandomState>,
    next: u64,
    /// Monitors our processes hold on remote ones: node → ref → our pid key.
    pub out_monitors: HashMap<Atom, HashMap<Ref, u64, ahash::RandomState>, ahash::RandomState>,
}

/// Pid numbers: 15 bits of id and 13 of serial, like OTP's external pids.
const PID_SPACE: u64 = 1 << 28;

pub(crate) fn key_of(p: &Pid) -> u64 {
    ((p.serial as u64) << 15) | (p.id as u64 & 0x7fff)
}

impl Procs {
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
pub struct Mailbox {
    pub(crate) node: Node,
    pub(crate) pid: Pid,
    pub(crate) rx: mpsc::UnboundedReceiver<Signal>,
    pub(crate) backlog: Arc<Watermark>,
    /// The reason remote monitors and links see when this is dropped.
    pub exit_reason: Term,
}

impl Mailbox {
    /// This process's pid.
    pub fn pid(&self) -> &Pid {
        &self.pid
    }

    /// The node it runs on.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The next signal (`None` only when the node dropped the process).
    pub async fn recv(&mut self) -> Option<Signal> {
        let sig = self.rx.recv().await;
        if sig.is_some() {
            self.backlog.sub(1);
        }
        sig
    }

    /// A signal if one is waiting.
    pub fn try_recv(&mut self) -> Option<Signal> {
        let sig = self.rx.try_recv().ok();
        if sig.is_some() {
            self.backlog.sub(1);
        }
        sig
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        self.node.process_exited(&self.pid, &self.exit_reason);
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
        let (tx, mut rx, backlog) = ProcTx::new();
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
            backlog.sub(1);
        }
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        rx.recv().await.unwrap();
        backlog.sub(1);
        waiter.await.unwrap();
        assert!(!backlog.is_high());
    }

    #[tokio::test]
    async fn a_send_to_a_dead_process_is_not_counted() {
        let (tx, rx, backlog) = ProcTx::new();
        drop(rx);
        assert!(tx.send(msg()).is_err());
        assert_eq!(backlog.count(), 0);
    }
}
