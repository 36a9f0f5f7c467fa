//! The state machine of one locker node: every request of the wire
//! protocol as a method, with time passed in.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Arc;

use crate::expiry::{due_at, ExpiryIndex};
use crate::lease_map::{Lease, LeaseMap};
use crate::promises::Promises;
use crate::protocol::{Expected, Handled, Refusal, Reply, Request};
use crate::translog::{LogEntry, TransLog};
use crate::waiters::{WaitKind, WaitOutcome, WaiterId, Waiters, Wake};
use crate::{ms, Micros};

/// How long after [`Engine::next_wakeup`] a server's wake-up timer fires
/// ([`Engine::wakeup_in`]).
pub const WAKEUP_MARGIN: Micros = 1_000;

/// Tunables of an [`Engine`].
#[derive(Clone, Debug)]
pub struct Config {
    /// How long an unused write promise holds its key (the original: 10 s).
    pub promise_ttl: Micros,
    /// Whether changes are appended to the transaction log (a master with
    /// replicas). Without replicas nothing is logged.
    pub log_enabled: bool,
    /// Most entries kept in the transaction log between two pushes.
    pub log_limit: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            promise_ttl: ms(crate::quorum::PROMISE_TTL_MS),
            log_enabled: false,
            log_limit: 1_000_000,
        }
    }
}

/// What phase one (`get_write_lock`) expects to find under the key.
#[derive(Clone, Copy, Debug)]
pub enum Expect<'a, V> {
    /// The key must be absent (or expired).
    Absent,
    /// The key must hold this value.
    Value(&'a V),
    /// The key must hold this value, or be absent: the wire's `not_found`
    /// marker, which is also an ordinary atom a caller may have stored.
    ValueOrAbsent(&'a V),
}

/// Why phase one refused a promise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockError {
    /// `{error, already_locked}`: another live promise holds the key.
    AlreadyLocked,
    /// `{error, not_expected_value}`: the stored value is not the expected one.
    NotExpectedValue,
    /// `{error, {stale_token, Floor}}`: the proposed fencing token is not
    /// above every token this node has seen for the key (only for
    /// token-carrying tags, which only this project's coordinators send).
    StaleToken(u64),
}

/// Why a release did nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReleaseError {
    /// `{error, not_owner}`: the key holds another value.
    NotOwner,
    /// `{error, not_found}`: the key is absent or expired.
    NotFound,
    /// `{error, no_promise}`: another request holds a live promise on the
    /// key (this release's own promise, if it had one, is gone).
    NoPromise,
}

/// Why a phase-two request (`write`, `update`, `extend_lease`) changed
/// nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitError {
    /// `{error, no_promise}`: the request's tag holds no live promise on the
    /// key here (it expired, or this node restarted), and applying it could
    /// overwrite or remove another holder's lease or promise. Coordinators
    /// count it as no commit.
    NoPromise,
}

/// The wire refusal of a phase one or a one-round request.
fn lock_refusal(e: LockError) -> Refusal {
    match e {
        LockError::AlreadyLocked => Refusal::AlreadyLocked,
        LockError::NotExpectedValue => Refusal::NotExpectedValue,
        LockError::StaleToken(floor) => Refusal::StaleToken(floor),
    }
}

/// Where a phase-two request stands on its key.
#[derive(Clone, Copy, Debug)]
enum Standing {
    /// Its tag holds a live promise on the key (with this fencing token).
    Promised(u64),
    /// Another tag holds a live promise on the key.
    Blocked,
    /// No live promise holds the key.
    Unpromised,
}

/// What a sweep did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SweepReport<V> {
    /// Leases deleted because they expired.
    pub leases_expired: usize,
    /// Promises deleted because they were never used.
    pub promises_expired: usize,
    /// Release waiters to answer (their key expired).
    pub wakes: Vec<Wake<V>>,
    /// Waiters whose own timeout passed: forget them, answer nothing.
    pub timed_out: Vec<WaiterId>,
    /// False when the budget ran out before everything due was swept.
    pub done: bool,
}

/// Sizes of the engine's tables.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Live and not yet swept leases.
    pub leases: usize,
    /// Write promises.
    pub promises: usize,
    /// Registered waiters.
    pub waiters: usize,
    /// Entries waiting in the transaction log.
    pub log: usize,
    /// Log entries dropped because the log was full.
    pub log_dropped: u64,
    /// Entries in the expiry index (stale ones included).
    pub expiry_entries: usize,
    /// Undo records of one-round requests (see [`Engine::undo`]).
    pub undo_records: usize,
}

/// What a one-round request changed, kept for its undo: the lease as it
/// was before (`None`: absent), and who changed it. Dropped at any other
/// change of the key, and after the promise lifetime.
struct UndoRecord<T, V> {
    tag: T,
    before: Option<Lease<V>>,
    deadline: Micros,
}

/// One node's locker state. Mutations go through `&mut self` (one writer);
/// the lease map is shared ([`Engine::leases`]) for lock-free-of-writer
/// dirty reads from other threads.
pub struct Engine<K, V, T> {
    leases: Arc<LeaseMap<K, V>>,
    promises: Promises<K, T>,
    expiry: ExpiryIndex,
    log: TransLog<K, V>,
    waiters: Waiters<K>,
    config: Config,
    /// Highest fencing token of any lease or promise this node dropped: a
    /// new acquisition of an absent key must carry a token above it.
    token_floor: u64,
    /// Until this instant, refuse promises on keys this node does not hold
    /// (a master that restarted empty may have lost leases others hold).
    abstain_until: Micros,
    /// Undo records of one-round `cond_update`, `cond_extend` and
    /// `cond_release` requests, by key.
    undo: HashMap<K, UndoRecord<T, V>, ahash::RandomState>,
    /// Their deadlines, in order (entries may be stale).
    undo_queue: VecDeque<(Micros, K)>,
    /// Whether this node's configuration is joint (between epochs): a
    /// lease stored again with its own value is then never shortened
    /// (`membership::stored_expiry`).
    joint: bool,
}

impl<K, V, T> Engine<K, V, T>
where
    K: Hash + Eq + Clone,
    V: Eq + Clone,
    T: Hash + Eq + Clone,
{
    /// An empty engine.
    pub fn new(config: Config) -> Self {
        Self {
            leases: Arc::new(LeaseMap::new()),
            promises: Promises::new(),
            expiry: ExpiryIndex::new(),
            log: TransLog::new(config.log_limit),
            waiters: Waiters::new(),
            config,
            token_floor: 0,
            abstain_until: 0,
            undo: HashMap::default(),
            undo_queue: VecDeque::new(),
            joint: false,
        }
    }

    /// The lease map, for readers on other threads.
    pub fn leases(&self) -> &Arc<LeaseMap<K, V>> {
        &self.leases
    }

    /// The current configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Changes how long an unused write promise holds its key (applies to
    /// promises granted from now on).
    pub fn set_promise_ttl(&mut self, ttl: Micros) {
        self.config.promise_ttl = ttl;
    }

    /// Turns transaction logging on or off (on for a master with replicas).
    pub fn set_log_enabled(&mut self, on: bool) {
        self.config.log_enabled = on;
        if !on {
            self.log.clear();
        }
    }

    fn valid_value(&self, key: &K, now: Micros) -> Option<V> {
        self.leases.get_valid(key, now)
    }

    fn store(&mut self, key: K, value: V, lease_ms: u64, token: u64, now: Micros) {
        let requested = now.saturating_add(ms(lease_ms));
        let live = if self.joint {
            self.leases
                .read(&key, |l| {
                    (l.value == value && l.is_valid_at(now)).then_some(l.expires_at)
                })
                .flatten()
        } else {
            None
        };
        let expires_at = crate::membership::stored_expiry(self.joint, live, requested);
        self.forget_undo(&key);
        if let Some(old) = self.leases.read(&key, |l| l.token) {
            self.raise_floor(old);
        }
        if live != Some(expires_at) {
            // (A kept expiry is scheduled already.)
            self.expiry.schedule(expires_at, self.leases.hash_of(&key));
        }
        self.leases.insert(
            key,
            Lease {
                value,
                expires_at,
                token,
            },
        );
    }

    fn raise_floor(&mut self, token: u64) {
        self.token_floor = self.token_floor.max(token);
    }

    /// Sets the token floor (at least): a node that starts empty sets it to
    /// the wall clock in microseconds, above every token issued before it
    /// started as long as tokens follow the wall clock.
    pub fn set_token_floor(&mut self, floor: u64) {
        self.raise_floor(floor);
    }

    /// Safe mode for a master that starts empty: until `until`, phase one on
    /// a key this node holds no lease for answers `AlreadyLocked`, so the
    /// node cannot help grant a key that a lost lease may still cover. Set
    /// it to the start instant plus the longest lease in use.
    pub fn set_abstain_until(&mut self, until: Micros) {
        self.abstain_until = until;
    }

    /// Tells the engine whether this node's configuration is joint (between
    /// two epochs of a change): while it is, a phase two that stores a
    /// lease again with the value it holds (an extension) never makes it
    /// end sooner (see `membership::stored_expiry` and docs/protocol.md,
    /// "The holder under a joint configuration"). Set it before the joint
    /// configuration is taken, clear it after it is left.
    pub fn set_joint(&mut self, joint: bool) {
        self.joint = joint;
    }

    /// Whether this node's configuration is joint (see [`Engine::set_joint`]).
    pub fn joint(&self) -> bool {
        self.joint
    }

    /// Until when safe mode refuses unknown keys (0: never set).
    pub fn abstain_until(&self) -> Micros {
        self.abstain_until
    }

    /// The highest fencing token this node has dropped.
    pub fn token_floor(&self) -> u64 {
        self.token_floor
    }

    /// Drops `tag`'s promises, remembering their tokens.
    fn drop_promise(&mut self, tag: &T) {
        let token = self.promises.remove_tag(tag);
        self.raise_floor(token);
    }

    fn log(&mut self, entry: impl FnOnce() -> LogEntry<K, V>) {
        if self.config.log_enabled {
            self.log.push(entry());
        }
    }

    fn wake_values(&mut self, key: &K, value: &V, wakes: &mut Vec<Wake<V>>) {
        if self.waiters.has(key) {
            for id in self.waiters.take(key, WaitKind::Value) {
                wakes.push(Wake::Value(id, value.clone()));
            }
        }
    }

    fn wake_released(&mut self, key: &K, wakes: &mut Vec<Wake<V>>) {
        if self.waiters.has(key) {
            for id in self.waiters.take(key, WaitKind::Release) {
                wakes.push(Wake::Released(id));
            }
        }
    }

    /// Phase one: promise `key` to `tag` if no live promise holds it and
    /// the stored value is as expected.
    pub fn get_write_lock(
        &mut self,
        key: K,
        expected: Expect<'_, V>,
        tag: T,
        now: Micros,
    ) -> Result<(), LockError> {
        self.get_write_lock_with_token(key, expected, tag, 0, now)
    }

    /// Phase one with a fencing token (0: none). A token-carrying promise
    /// on an absent key is granted only above the token floor; it raises
    /// the floor for the next ones when it is dropped.
    pub fn get_write_lock_with_token(
        &mut self,
        key: K,
        expected: Expect<'_, V>,
        tag: T,
        token: u64,
        now: Micros,
    ) -> Result<(), LockError> {
        let stale_promise = self.promises.token_of(&key);
        if self.promises.is_held(&key, now) {
            return Err(LockError::AlreadyLocked);
        }
        if let Some(t) = stale_promise {
            self.raise_floor(t); // it expired and was just dropped
        }
        let (current, expired_token) = match self.leases.read(&key, |l| {
            (l.is_valid_at(now).then(|| l.value.clone()), l.token)
        }) {
            Some((Some(v), _)) => (Some(v), 0),
            Some((None, t)) => (None, t),
            None => (None, 0),
        };
        if current.is_none() && now < self.abstain_until {
            return Err(LockError::AlreadyLocked);
        }
        let matches = match (expected, &current) {
            (Expect::Absent, None) | (Expect::ValueOrAbsent(_), None) => true,
            (Expect::Value(v), Some(c)) | (Expect::ValueOrAbsent(v), Some(c)) => v == c,
            _ => false,
        };
        if !matches {
            return Err(LockError::NotExpectedValue);
        }
        if token > 0 && current.is_none() {
            let floor = self.token_floor.max(expired_token);
            if token <= floor {
                return Err(LockError::StaleToken(floor));
            }
        }
        let deadline = now.saturating_add(self.config.promise_ttl);
        self.promises.insert(key, tag, deadline, token);
        Ok(())
    }

    /// Abort: drop the promise held by `tag` (always `ok` on the wire).
    pub fn release_write_lock(&mut self, tag: &T) {
        self.drop_promise(tag);
    }

    /// Where `tag` stands on `key` for a phase-two request: see
    /// [`Standing`].
    fn standing(&self, key: &K, tag: &T, now: Micros) -> Standing {
        match self.promises.live_holder(key, tag, now) {
            Some((true, token)) => Standing::Promised(token),
            Some((false, _)) => Standing::Blocked,
            None => Standing::Unpromised,
        }
    }

    /// Whether a phase-two request that holds no live promise may store
    /// `value` under an absent or same-valued `key` (the "nothing
    /// conflicts" rule): the key holds `value` already (for a
    /// token-carrying request: stored by the same acquisition, since two
    /// callers may use one value), or it is absent, this node is not
    /// abstaining, and a token-carrying request is above the token floor
    /// (a rival may have held and dropped the key since the caller's
    /// promise was granted).
    fn free_for(&self, key: &K, value: &V, token: u64, now: Micros) -> bool {
        let (current, expired_token) = match self.leases.read(key, |l| {
            let ours = &l.value == value && (token == 0 || l.token == token);
            (l.is_valid_at(now).then_some(ours), l.token)
        }) {
            Some((Some(same), _)) => (Some(same), 0),
            Some((None, t)) => (None, t),
            None => (None, 0),
        };
        match current {
            Some(same) => same,
            None => {
                now >= self.abstain_until
                    && (token == 0 || token > self.token_floor.max(expired_token))
            }
        }
    }

    /// Phase two of `lock`: store the lease, drop `tag`'s promise.
    /// Returns the `wait_for` waiters to answer. See
    /// [`Engine::write_with_token`] for when it is refused.
    pub fn write(
        &mut self,
        tag: &T,
        key: K,
        value: V,
        lease_ms: u64,
        now: Micros,
    ) -> Result<Vec<Wake<V>>, CommitError> {
        self.write_with_token(tag, key, value, lease_ms, 0, now)
    }

    /// Phase two of `lock` with the acquisition's fencing token (0: take it
    /// from `tag`'s promise on this key, if any).
    ///
    /// With a live promise of `tag` on `key` the lease is stored. Without
    /// one (it expired, or this node restarted and lost it) it is stored
    /// only if nothing conflicts: no other live promise on the key, and the
    /// key either holds `value` already or is absent (not while abstaining,
    /// and above the token floor for a token-carrying request). Otherwise
    /// nothing changes and the answer is [`CommitError::NoPromise`].
    pub fn write_with_token(
        &mut self,
        tag: &T,
        key: K,
        value: V,
        lease_ms: u64,
        token: u64,
        now: Micros,
    ) -> Result<Vec<Wake<V>>, CommitError> {
        // The promise becomes the lease: its token lives on there (it
        // raises the floor only if the write is refused).
        let (standing, _own) = self.authorize(&key, &value, tag, token, now)?;
        // Without a live promise, only the token the request carries
        // counts (an expired promise of its tag proves nothing).
        let token = match (standing, token) {
            (Standing::Promised(t), 0) => t,
            (Standing::Promised(_), t) => t,
            (_, t) => t.max(self.token_of_value(&key, &value)),
        };
        Ok(self.apply_write(key, value, lease_ms, token, now, true))
    }

    /// The phase-two rule for a request that stores `value` (`write`,
    /// `extend_lease`): drops `tag`'s promises and says where it stands, or
    /// refuses it (raising the floor to its promise's token) when it holds
    /// no live promise and something conflicts (see [`Engine::free_for`]).
    fn authorize(
        &mut self,
        key: &K,
        value: &V,
        tag: &T,
        token: u64,
        now: Micros,
    ) -> Result<(Standing, u64), CommitError> {
        let standing = self.standing(key, tag, now);
        let own = self.promises.remove_tag(tag);
        let allowed = match standing {
            Standing::Promised(_) => true,
            Standing::Blocked => false,
            Standing::Unpromised => self.free_for(key, value, token, now),
        };
        if allowed {
            Ok((standing, own))
        } else {
            self.raise_floor(own);
            Err(CommitError::NoPromise)
        }
    }

    /// The token of the lease `key` holds if it holds `value` (0 if not).
    fn token_of_value(&self, key: &K, value: &V) -> u64 {
        self.leases
            .read(key, |l| if &l.value == value { l.token } else { 0 })
            .unwrap_or(0)
    }

    fn apply_write(
        &mut self,
        key: K,
        value: V,
        lease_ms: u64,
        token: u64,
        now: Micros,
        log: bool,
    ) -> Vec<Wake<V>> {
        let mut wakes = Vec::new();
        self.wake_values(&key, &value, &mut wakes);
        if log {
            self.log(|| LogEntry::Write {
                key: key.clone(),
                value: value.clone(),
                lease_ms,
            });
        }
        self.store(key, value, lease_ms, token, now);
        wakes
    }

    /// Phase two of `update`: replace the value of a live lease keeping its
    /// expiry (nothing to replace if it expired meanwhile). Without a live
    /// promise of `tag` on `key` (the request does not carry the old value,
    /// so nothing can be checked) it succeeds only if the key already holds
    /// `value` and no other promise is live, changing nothing; otherwise
    /// [`CommitError::NoPromise`].
    pub fn update(&mut self, tag: &T, key: K, value: V, now: Micros) -> Result<(), CommitError> {
        let standing = self.standing(&key, tag, now);
        let own = self.promises.remove_tag(tag);
        self.raise_floor(own);
        match standing {
            Standing::Promised(_) => self.apply_update(&key, &value, now),
            Standing::Blocked => return Err(CommitError::NoPromise),
            Standing::Unpromised => {
                if self.valid_value(&key, now).as_ref() != Some(&value) {
                    return Err(CommitError::NoPromise);
                }
            }
        }
        self.log(|| LogEntry::Update { key, value });
        Ok(())
    }

    fn apply_update(&mut self, key: &K, value: &V, now: Micros) {
        self.forget_undo(key);
        self.leases.modify(key, |lease| {
            if lease.is_valid_at(now) {
                lease.value = value.clone();
            }
        });
    }

    /// Phase two of `extend_lease`: store the lease with a new expiry
    /// counted from now (also how a lagging node catches up). Without a
    /// live promise of `tag` on `key` it applies only if nothing conflicts,
    /// as [`Engine::write_with_token`] (with `tag`'s token, if any);
    /// otherwise [`CommitError::NoPromise`].
    pub fn extend_lease(
        &mut self,
        tag: &T,
        key: K,
        value: V,
        lease_ms: u64,
        token: u64,
        now: Micros,
    ) -> Result<Vec<Wake<V>>, CommitError> {
        let (_, own) = self.authorize(&key, &value, tag, token, now)?;
        self.raise_floor(own);
        let mut wakes = Vec::new();
        self.wake_values(&key, &value, &mut wakes);
        self.log(|| LogEntry::ExtendLease {
            key: key.clone(),
            value: value.clone(),
            lease_ms,
        });
        // An extension keeps the acquisition's token if this node has it.
        let token = self.token_of_value(&key, &value);
        self.store(key, value, lease_ms, token, now);
        Ok(wakes)
    }

    /// `release`: delete the key if it holds `value`. Drops `tag`'s promise
    /// whatever the outcome (the original leaked it on errors). Refused
    /// with [`ReleaseError::NoPromise`] while another tag holds a live
    /// promise on the key.
    pub fn release(
        &mut self,
        key: &K,
        value: &V,
        tag: &T,
        now: Micros,
    ) -> Result<Vec<Wake<V>>, ReleaseError> {
        self.release_with_token(key, value, tag, 0, now)
    }

    /// [`Engine::release`] for one acquisition: with a token (not 0), only
    /// a lease stored by the acquisition that carried it is deleted (how a
    /// coordinator gives back the lease of a failed lock without touching
    /// a lease another caller took with the same value); another one
    /// answers [`ReleaseError::NotOwner`].
    pub fn release_with_token(
        &mut self,
        key: &K,
        value: &V,
        tag: &T,
        token: u64,
        now: Micros,
    ) -> Result<Vec<Wake<V>>, ReleaseError> {
        let standing = self.standing(key, tag, now);
        self.drop_promise(tag);
        if let Standing::Blocked = standing {
            return Err(ReleaseError::NoPromise);
        }
        let outcome = match self.leases.read(key, |l| {
            (
                l.is_valid_at(now),
                &l.value == value && (token == 0 || l.token == token),
            )
        }) {
            Some((true, true)) => Ok(()),
            Some((true, false)) => Err(ReleaseError::NotOwner),
            _ => Err(ReleaseError::NotFound),
        };
        outcome?;
        self.forget_undo(key);
        if let Some(old) = self.leases.remove_if(key, |_| true) {
            self.raise_floor(old.token);
        }
        let mut wakes = Vec::new();
        self.wake_released(key, &mut wakes);
        self.log(|| LogEntry::Release { key: key.clone() });
        Ok(wakes)
    }

    /// Whether another tag than `tag` holds a live promise on `key` (an
    /// expired promise found there is dropped, raising the floor to its
    /// token).
    fn promised_to_other(&mut self, key: &K, tag: &T, now: Micros) -> bool {
        let stale = self.promises.token_of(key);
        if self.promises.is_held(key, now) {
            return !matches!(self.promises.live_holder(key, tag, now), Some((true, _)));
        }
        if let Some(t) = stale {
            self.raise_floor(t);
        }
        false
    }

    /// The live lease of `key` if it holds `value`; `Err` (with nothing
    /// changed) if it is absent, expired or holds another value.
    fn held_as(&self, key: &K, value: &V, now: Micros) -> Result<Lease<V>, LockError> {
        self.leases
            .read(key, |l| {
                (l.is_valid_at(now) && &l.value == value).then(|| l.clone())
            })
            .flatten()
            .ok_or(LockError::NotExpectedValue)
    }

    /// One-round `lock` (`cond_write`): stores the lease, in one step, only
    /// where phase one would have promised it and a phase two without a
    /// promise would then have stored it: no other tag's live promise on
    /// the key ([`LockError::AlreadyLocked`]), no live lease
    /// ([`LockError::NotExpectedValue`]), not in safe mode's window
    /// (`AlreadyLocked`, as phase one), and a token (not 0) above the
    /// floor and the expired lease's token ([`LockError::StaleToken`]).
    /// Logs `write`. Its undo is a [`Engine::release_with_token`] with the
    /// same token. Returns the `wait_for` waiters to answer.
    pub fn cond_write(
        &mut self,
        tag: &T,
        key: K,
        value: V,
        lease_ms: u64,
        token: u64,
        now: Micros,
    ) -> Result<Vec<Wake<V>>, LockError> {
        if self.promised_to_other(&key, tag, now) {
            return Err(LockError::AlreadyLocked);
        }
        let (live, expired_token) = match self.leases.read(&key, |l| (l.is_valid_at(now), l.token))
        {
            Some((true, _)) => (true, 0),
            Some((false, t)) => (false, t),
            None => (false, 0),
        };
        if live {
            return Err(LockError::NotExpectedValue);
        }
        if now < self.abstain_until {
            return Err(LockError::AlreadyLocked);
        }
        if token > 0 {
            let floor = self.token_floor.max(expired_token);
            if token <= floor {
                return Err(LockError::StaleToken(floor));
            }
        }
        Ok(self.apply_write(key, value, lease_ms, token, now, true))
    }

    /// One-round `update` (`cond_update`): replaces `value` by `new_value`
    /// (expiry and token kept) only if the key holds `value` and no other
    /// tag holds a live promise on it; leaves an undo record for `tag`.
    /// Logs `update`.
    pub fn cond_update(
        &mut self,
        tag: &T,
        key: K,
        value: &V,
        new_value: V,
        now: Micros,
    ) -> Result<Vec<Wake<V>>, LockError> {
        if self.promised_to_other(&key, tag, now) {
            return Err(LockError::AlreadyLocked);
        }
        let before = self.held_as(&key, value, now)?;
        self.apply_update(&key, &new_value, now);
        self.log(|| LogEntry::Update {
            key: key.clone(),
            value: new_value,
        });
        self.remember_undo(key, tag, Some(before), now);
        Ok(Vec::new())
    }

    /// One-round `extend_lease` (`cond_extend`): makes the lease expire
    /// `lease_ms` from now (token kept) only if the key holds `value` and
    /// no other tag holds a live promise on it (unlike a phase two, it
    /// never stores the lease again on a node that lost it); leaves an
    /// undo record for `tag`. Logs `extend_lease`.
    pub fn cond_extend(
        &mut self,
        tag: &T,
        key: K,
        value: V,
        lease_ms: u64,
        now: Micros,
    ) -> Result<Vec<Wake<V>>, LockError> {
        if self.promised_to_other(&key, tag, now) {
            return Err(LockError::AlreadyLocked);
        }
        let before = self.held_as(&key, &value, now)?;
        self.log(|| LogEntry::ExtendLease {
            key: key.clone(),
            value: value.clone(),
            lease_ms,
        });
        self.store(key.clone(), value, lease_ms, before.token, now);
        self.remember_undo(key, tag, Some(before), now);
        Ok(Vec::new())
    }

    /// One-round `release` (`cond_release`): deletes the lease only if the
    /// key holds `value` and no other tag holds a live promise on it;
    /// leaves an undo record for `tag`. Logs `release`; returns the
    /// `wait_for_release` waiters to answer.
    pub fn cond_release(
        &mut self,
        tag: &T,
        key: K,
        value: &V,
        now: Micros,
    ) -> Result<Vec<Wake<V>>, LockError> {
        if self.promised_to_other(&key, tag, now) {
            return Err(LockError::AlreadyLocked);
        }
        let before = self.held_as(&key, value, now)?;
        self.forget_undo(&key);
        if let Some(old) = self.leases.remove_if(&key, |_| true) {
            self.raise_floor(old.token);
        }
        let mut wakes = Vec::new();
        self.wake_released(&key, &mut wakes);
        self.log(|| LogEntry::Release { key: key.clone() });
        self.remember_undo(key, tag, Some(before), now);
        Ok(wakes)
    }

    /// Undoes `tag`'s one-round `cond_update`, `cond_extend` or
    /// `cond_release` on `key`: if its undo record is still there (nothing
    /// else changed the key since, and the promise lifetime has not passed)
    /// and no other tag holds a live promise on the key, the lease is put
    /// back as it was before (same value, expiry and token; deleted if that
    /// lease has expired since). Otherwise nothing changes. Logs the change
    /// (`write` with the time left, or `release`); returns the waiters to
    /// answer. Always `ok` on the wire.
    pub fn undo(&mut self, tag: &T, key: &K, now: Micros) -> Vec<Wake<V>> {
        let mut wakes = Vec::new();
        match self.undo.get(key) {
            Some(r) if &r.tag == tag && r.deadline > now => {}
            _ => return wakes,
        }
        if self.promised_to_other(key, tag, now) {
            return wakes;
        }
        let Some(record) = self.undo.remove(key) else {
            return wakes;
        };
        match record.before {
            Some(lease) if lease.is_valid_at(now) => {
                if let Some(old) = self.leases.read(key, |l| l.token) {
                    self.raise_floor(old);
                }
                let left_ms = (lease.expires_at - now).div_ceil(1_000);
                self.wake_values(key, &lease.value, &mut wakes);
                self.log(|| LogEntry::Write {
                    key: key.clone(),
                    value: lease.value.clone(),
                    lease_ms: left_ms,
                });
                self.expiry
                    .schedule(lease.expires_at, self.leases.hash_of(key));
                self.leases.insert(key.clone(), lease);
            }
            _ => {
                if let Some(old) = self.leases.remove_if(key, |_| true) {
                    self.raise_floor(old.token);
                    self.wake_released(key, &mut wakes);
                    self.log(|| LogEntry::Release { key: key.clone() });
                }
            }
        }
        wakes
    }

    fn remember_undo(&mut self, key: K, tag: &T, before: Option<Lease<V>>, now: Micros) {
        let deadline = now.saturating_add(self.config.promise_ttl);
        if self.undo_queue.back().is_some_and(|(d, _)| *d > deadline) {
            // The promise lifetime was lowered: keep the queue sorted.
            let at = self.undo_queue.partition_point(|(d, _)| *d <= deadline);
            self.undo_queue.insert(at, (deadline, key.clone()));
        } else {
            self.undo_queue.push_back((deadline, key.clone()));
        }
        self.undo.insert(
            key,
            UndoRecord {
                tag: tag.clone(),
                before,
                deadline,
            },
        );
    }

    fn forget_undo(&mut self, key: &K) {
        if !self.undo.is_empty() {
            self.undo.remove(key);
        }
    }

    fn expire_undo(&mut self, now: Micros, budget: usize) {
        let mut n = 0;
        while n < budget {
            match self.undo_queue.front() {
                Some((d, _)) if *d <= now => {}
                _ => break,
            }
            let Some((d, key)) = self.undo_queue.pop_front() else {
                break;
            };
            if self.undo.get(&key).is_some_and(|r| r.deadline == d) {
                self.undo.remove(&key);
            }
            n += 1;
        }
        if self.undo_queue.len() > 4 * self.undo.len() + 1024 {
            let undo = &self.undo;
            self.undo_queue
                .retain(|(d, k)| undo.get(k).is_some_and(|r| r.deadline == *d));
        }
    }

    /// Replays one entry of a master's transaction log (on a replica).
    pub fn replay(&mut self, entry: LogEntry<K, V>, now: Micros) -> Vec<Wake<V>> {
        match entry {
            LogEntry::Write {
                key,
                value,
                lease_ms,
            }
            | LogEntry::ExtendLease {
                key,
                value,
                lease_ms,
            } => self.apply_write(key, value, lease_ms, 0, now, false),
            LogEntry::Update { key, value } => {
                self.apply_update(&key, &value, now);
                Vec::new()
            }
            LogEntry::Release { key } => {
                let mut wakes = Vec::new();
                self.forget_undo(&key);
                if let Some(old) = self.leases.remove_if(&key, |_| true) {
                    self.raise_floor(old.token);
                    self.wake_released(&key, &mut wakes);
                }
                wakes
            }
        }
    }

    /// Applies one decoded request of the wire protocol: the reply, and the
    /// waiters it woke. Every adapter serves the store's requests through
    /// this.
    pub fn handle(&mut self, request: Request<K, V, T>, now: Micros) -> Handled<V> {
        use Refusal as R;
        let committed = |r: Result<Vec<Wake<V>>, CommitError>| match r {
            Ok(wakes) => Handled {
                reply: Reply::Ok,
                wakes,
            },
            Err(CommitError::NoPromise) => Handled::reply(Reply::Refused(R::NoPromise)),
        };
        let conditional = |r: Result<Vec<Wake<V>>, LockError>| match r {
            Ok(wakes) => Handled {
                reply: Reply::Ok,
                wakes,
            },
            Err(e) => Handled::reply(Reply::Refused(lock_refusal(e))),
        };
        match request {
            Request::GetWriteLock {
                key,
                expected,
                tag,
                token,
            } => {
                let expect = match &expected {
                    Expected::Value(v) => Expect::Value(v),
                    Expected::ValueOrAbsent(v) => Expect::ValueOrAbsent(v),
                };
                Handled::reply(
                    match self.get_write_lock_with_token(key, expect, tag, token, now) {
                        Ok(()) => Reply::Ok,
                        Err(e) => Reply::Refused(lock_refusal(e)),
                    },
                )
            }
            Request::ReleaseWriteLock { tag } => {
                self.release_write_lock(&tag);
                Handled::reply(Reply::Ok)
            }
            Request::Write {
                tag,
                key,
                value,
                lease_ms,
                token,
            } => committed(self.write_with_token(&tag, key, value, lease_ms, token, now)),
            Request::Update { tag, key, value } => {
                committed(self.update(&tag, key, value, now).map(|()| Vec::new()))
            }
            Request::ExtendLease {
                tag,
                key,
                value,
                lease_ms,
                token,
            } => committed(self.extend_lease(&tag, key, value, lease_ms, token, now)),
            Request::Release {
                key,
                value,
                tag,
                token,
            } => match self.release_with_token(&key, &value, &tag, token, now) {
                Ok(wakes) => Handled {
                    reply: Reply::Ok,
                    wakes,
                },
                Err(e) => Handled::reply(Reply::Refused(match e {
                    ReleaseError::NotOwner => R::NotOwner,
                    ReleaseError::NotFound => R::NotFound,
                    ReleaseError::NoPromise => R::NoPromise,
                })),
            },
            Request::CondWrite {
                tag,
                key,
                value,
                lease_ms,
                token,
            } => conditional(self.cond_write(&tag, key, value, lease_ms, token, now)),
            Request::CondUpdate {
                tag,
                key,
                value,
                new_value,
            } => conditional(self.cond_update(&tag, key, &value, new_value, now)),
            Request::CondExtend {
                tag,
                key,
                value,
                lease_ms,
            } => conditional(self.cond_extend(&tag, key, value, lease_ms, now)),
            Request::CondRelease { tag, key, value } => {
                conditional(self.cond_release(&tag, key, &value, now))
            }
            Request::Undo { tag, key } => Handled {
                reply: Reply::Ok,
                wakes: self.undo(&tag, &key, now),
            },
            Request::WaitFor {
                key,
                timeout_ms,
                waiter,
            } => Handled::reply(self.wait_for(key, waiter, timeout_ms, now).into()),
            Request::WaitForRelease {
                key,
                timeout_ms,
                waiter,
            } => Handled::reply(self.wait_for_release(key, waiter, timeout_ms, now).into()),
        }
    }

    /// Registers a waiter for `key` to get a value, unless it already has
    /// one (which closes the original's race between its dirty read and
    /// its call).
    pub fn wait_for(
        &mut self,
        key: K,
        id: WaiterId,
        timeout_ms: u64,
        now: Micros,
    ) -> WaitOutcome<V> {
        if let Some(v) = self.valid_value(&key, now) {
            return WaitOutcome::Value(v);
        }
        self.waiters
            .add(key, id, WaitKind::Value, now.saturating_add(ms(timeout_ms)));
        WaitOutcome::Pending
    }

    /// Registers a waiter for `key` to be released or to expire, unless it
    /// is already gone.
    pub fn wait_for_release(
        &mut self,
        key: K,
        id: WaiterId,
        timeout_ms: u64,
        now: Micros,
    ) -> WaitOutcome<V> {
        if self.valid_value(&key, now).is_none() {
            return WaitOutcome::Released;
        }
        self.waiters.add(
            key,
            id,
            WaitKind::Release,
            now.saturating_add(ms(timeout_ms)),
        );
        WaitOutcome::Pending
    }

    /// Deletes what expired by `now`: leases (waking their release waiters),
    /// promises, and waiters past their timeout. At most about `budget`
    /// items are handled per call so that the caller stays responsive; call
    /// again while `done` is false.
    pub fn sweep(&mut self, now: Micros, budget: usize) -> SweepReport<V> {
        let budget = budget.max(1);
        let mut report = SweepReport {
            leases_expired: 0,
            promises_expired: 0,
            wakes: Vec::new(),
            timed_out: Vec::new(),
            done: true,
        };
        let mut expired = Vec::new();
        let mut max_token = 0;
        let leases = Arc::clone(&self.leases);
        let leases_done = self.expiry.pop_due(now, budget, |hash| {
            leases.remove_expired_by_hash(hash, now, |key, old| {
                max_token = max_token.max(old.token);
                expired.push(key);
            });
        });
        self.raise_floor(max_token);
        report.leases_expired = expired.len();
        for key in &expired {
            self.wake_released(key, &mut report.wakes);
        }
        let (promises_expired, promise_token) = self.promises.expire(now, budget);
        report.promises_expired = promises_expired;
        self.raise_floor(promise_token);
        report.timed_out = self.waiters.expire(now, budget);
        self.expire_undo(now, budget);
        report.done =
            leases_done && report.promises_expired < budget && report.timed_out.len() < budget;
        report
    }

    /// The earliest instant at which a sweep has something to tell a
    /// waiter: a watched lease expiring (swept within the millisecond after
    /// its expiry) or a waiter timing out.
    pub fn next_wakeup(&self) -> Option<Micros> {
        let lease = self
            .waiters
            .release_keys()
            .filter_map(|k| self.leases.read(k, |l| due_at(l.expires_at)))
            .min();
        match (lease, self.waiters.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// How long from `now` a server's wake-up timer should run to find
    /// [`Engine::next_wakeup`] due: until it, plus [`WAKEUP_MARGIN`] (a
    /// shell's timer and this clock may disagree by up to a millisecond).
    /// `None` when no waiter needs an answer.
    pub fn wakeup_in(&self, now: Micros) -> Option<Micros> {
        self.next_wakeup()
            .map(|at| at.saturating_sub(now).saturating_add(WAKEUP_MARGIN))
    }

    /// Takes up to `max` log entries, oldest first.
    pub fn take_log(&mut self, max: usize) -> Vec<LogEntry<K, V>> {
        self.log.take(max)
    }

    /// Calls `f` with every promise: key, tag, deadline.
    pub fn for_each_promise(&self, mut f: impl FnMut(&K, &T, Micros)) {
        for (k, t, d) in self.promises.iter() {
            f(k, t, d);
        }
    }

    /// Sizes of the tables.
    pub fn summary(&self) -> Summary {
        Summary {
            leases: self.leases.len(),
            promises: self.promises.len(),
            waiters: self.waiters.len(),
            log: self.log.len(),
            log_dropped: self.log.dropped(),
            expiry_entries: self.expiry.len(),
            undo_records: self.undo.len(),
        }
    }

    /// Forgets promises and waiters (their owners are gone, e.g. after the
    /// server restarted); leases and the log stay.
    pub fn reset_volatile(&mut self) {
        self.promises.clear();
        self.waiters.clear();
        self.undo.clear();
        self.undo_queue.clear();
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.reset_volatile();
        self.leases.clear();
        self.expiry.clear();
        self.log.clear();
    }
}
