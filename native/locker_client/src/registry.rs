//! Names in `Locker.Registry` owned by mailboxes of the client's node,
//! kept alive by a keeper task (the lease extended before it runs out, as
//! `Locker.Registry`'s keeper does), with the messages BEAM code sends
//! them (`GenServer.call({:via, Locker.Registry, name}, msg)`, `send/2`).

use std::time::Duration;

use erl_node::process::{Mailbox, Signal};
use erl_node::term::{Pid, Term};
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::{to_term, Client, Error, Quorum};

impl Client {
    /// Registers a new mailbox of this node under `name` in
    /// `Locker.Registry` (a lease on `name` holding the mailbox's pid, as
    /// `Locker.Registry.register_name/2` takes it), and keeps the lease
    /// alive: it is extended by `lease` every `extend_every` (choose it
    /// well below the lease; `Locker.Registry` extends every third of it).
    /// The name is given up (see [`RegisteredName`]) [`default_margin`]
    /// before its lease could run out; [`Self::register_name_with_margin`]
    /// chooses the margin.
    pub async fn register_name<N: Serialize + ?Sized>(
        &self,
        name: &N,
        lease: Duration,
        extend_every: Duration,
        timeout: Duration,
    ) -> Result<RegisteredName, Error> {
        let margin = default_margin(lease);
        self.register_name_with_margin(name, lease, extend_every, margin, timeout)
            .await
    }

    /// [`Self::register_name`] with the margin chosen: the owner learns it
    /// lost the name (`Incoming::LeaseLost`, [`RegisteredName::is_lost`])
    /// `margin` before the masters could let its lease run out, i.e. when
    /// no extension succeeded by the start of the last successful one plus
    /// the lease minus `margin`. The margin must cover the difference of
    /// clock rates over a lease (at least 1% of the lease plus 2 ms is
    /// required) and the time the owner takes to notice and stop; the
    /// extension period must be below `lease - margin`.
    pub async fn register_name_with_margin<N: Serialize + ?Sized>(
        &self,
        name: &N,
        lease: Duration,
        extend_every: Duration,
        margin: Duration,
        timeout: Duration,
    ) -> Result<RegisteredName, Error> {
        let lease_ms = crate::client::lease_ms("lease", lease)?;
        crate::client::check_timeout(timeout)?;
        check_name_timing(lease_ms, extend_every, margin)?;
        let name = to_term(name)?;
        let lease = Duration::from_millis(lease_ms as u64);
        let mb = self.node().spawn(None).map_err(Error::NodeStart)?;
        let pid = Term::pid(mb.pid().clone());
        // The masters count the lease from when they get the request: at
        // least `lease` from now.
        let sent = Instant::now();
        match self.acquire(&name, &pid, lease_ms, timeout).await {
            Ok(_) => {}
            Err(Error::NoQuorum) => {
                // Taken, or masters out of reach: a read tells which.
                let held = match self.connected_masters().first() {
                    Some(m) => self.rpc_dirty_read(m, &name, timeout).await.ok(),
                    None => None,
                };
                return Err(match held.as_ref().and_then(|r| r.as_tuple()) {
                    Some([ok, v]) if ok.is_atom("ok") && *v != pid => Error::NameTaken {
                        name: name.display(200),
                    },
                    _ => Error::NoQuorum,
                });
            }
            Err(e) => return Err(e),
        }
        let valid_until = sent + lease;
        if Instant::now() + margin >= valid_until {
            let _ = self.release_term(&name, &pid, timeout).await;
            return Err(Error::Timeout);
        }
        let (state_tx, state_rx) = watch::channel(NameState::Held(valid_until - margin));
        let (stop_tx, stop_rx) = watch::channel(false);
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
            stop_rx,
        ));
        Ok(RegisteredName {
            client: self.clone(),
            name,
            mb,
            keeper,
            stop: stop_tx,
            state: state_rx,
            closed: false,
            released: false,
        })
    }
}

/// The margin [`Client::register_name`] uses: a fifth of the lease, at
/// least 100 ms, at most half the lease (as `Locker.Registry`'s default
/// `:registry_margin`).
///
/// ```
/// use std::time::Duration;
/// use locker_client::default_margin;
/// assert_eq!(default_margin(Duration::from_secs(5)), Duration::from_secs(1));
/// assert_eq!(default_margin(Duration::from_millis(150)), Duration::from_millis(75));
/// ```
pub fn default_margin(lease: Duration) -> Duration {
    let lease = lease.as_millis().min(i64::MAX as u128) as i64;
    Duration::from_millis(((lease / 5).max(100).min(lease / 2)).max(1) as u64)
}

fn check_name_timing(lease_ms: i64, every: Duration, margin: Duration) -> Result<(), Error> {
    let lease = Duration::from_millis(lease_ms as u64);
    let drift = Duration::from_millis((lease_ms / 100 + 2) as u64);
    if margin < drift || margin >= lease {
        return Err(Error::invalid(
            "margin",
            format!("from {drift:?} (1% + 2 ms of the lease) to below the lease {lease:?}, got {margin:?}"),
        ));
    }
    if every.is_zero() || every >= lease - margin {
        return Err(Error::invalid(
            "extend_every",
            format!(
                "a positive duration below the lease minus the margin ({:?}), got {every:?}",
                lease - margin
            ),
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
    mut stop: watch::Receiver<bool>,
) {
    let lease = Duration::from_millis(t.lease_ms as u64);
    let mut next = Instant::now() + t.every;
    let in_flight = loop {
        let deadline = valid_until - t.margin;
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break None,
            _ = tokio::time::sleep_until(next) => {}
            // The owner unregisters: stop between two extensions (one in
            // flight is awaited below first), so that the release does not
            // race an extension's promises.
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        let started = Instant::now();
        next = started + t.every;
        let (c2, n2, p2) = (c.clone(), name.clone(), pid.clone());
        let (lease_ms, timeout) = (t.lease_ms, t.timeout);
        let mut ext =
            tokio::spawn(async move { c2.extend_term(&n2, &p2, lease_ms, timeout).await });
        match tokio::time::timeout_at(deadline, &mut ext).await {
            Err(_) => break Some(ext),
            Ok(Ok(Ok(_))) => {
                valid_until = valid_until.max(started + lease);
                let _ = state.send(NameState::Held(valid_until - t.margin));
            }
            Ok(_) => {
                // No quorum: a loss only if the name is seen as another's
                // (or nobody's); an unreachable master tells nothing.
                let up = c.connected_masters();
                let taken = match up.first() {
                    None => false,
                    Some(m) => {
                        let read = tokio::time::timeout_at(
                            deadline,
                            c.rpc_dirty_read(m, &name, t.timeout),
                        )
                        .await;
                        match read
                            .as_ref()
                            .map(|r| r.as_ref().ok().and_then(|r| r.as_tuple()))
                        {
                            Ok(Some([ok, v])) if ok.is_atom("ok") => *v != pid,
                            Ok(Some([e, nf])) => e.is_atom("error") && nf.is_atom("not_found"),
                            _ => false,
                        }
                    }
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
    let _ = c.release_term(&name, &pid, t.timeout).await;
}

/// Who made a call (`From` of `gen_server`).
#[derive(Clone, Debug)]
pub struct Caller {
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
        from: Caller,
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
    stop: watch::Sender<bool>,
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
                    from: Caller {
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
    pub fn reply(&self, from: &Caller, reply: Term) {
        self.client.node().send_reply(&from.pid, &from.tag, reply);
    }

    /// Releases the name now (`Locker.Registry.unregister_name/1`).
    /// Once the name is lost, it first waits for the keeper to finish
    /// (it releases the name itself once its last extension is done): a
    /// process that exits right after `LeaseLost` without this may leave
    /// a write promise on the masters it still reaches, which blocks the
    /// name there for the promise's lifetime (10 s).
    pub async fn unregister(mut self, timeout: Duration) -> Result<Quorum, Error> {
        self.released = true;
        // The keeper ends after the extension it may have in flight (or,
        // once the name is lost, after its own release).
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(timeout, &mut self.keeper).await;
        self.keeper.abort();
        let pid = Term::pid(self.mb.pid().clone());
        self.client.release_term(&self.name, &pid, timeout).await
    }
}

impl Drop for RegisteredName {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let _ = self.stop.send(true);
        self.keeper.abort();
        let (c, n, p) = (
            self.client.clone(),
            self.name.clone(),
            Term::pid(self.mb.pid().clone()),
        );
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = c.release_term(&n, &p, Duration::from_secs(5)).await;
            });
        }
    }
}
