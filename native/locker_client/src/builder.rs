//! [`ClientBuilder`]: how a client joins, checked before anything starts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use erl_node::metrics::Metrics;
use erl_node::{Atom, ConnectError, Node, NodeConfig};
use tokio::time::Instant;

use crate::links::{Backoff, Links, Status};
use crate::{Client, Error};

/// The smallest quorum that is a majority of `n` masters: `n / 2 + 1`.
/// Any two majorities share a master, which is what makes a lease held
/// by one caller at a time.
///
/// ```
/// assert_eq!(locker_client::majority(3), 2);
/// assert_eq!(locker_client::majority(4), 3);
/// ```
pub fn majority(n: usize) -> usize {
    n / 2 + 1
}

/// Checks a node name: `alive@host`, `alive` of letters, digits, `_` and
/// `-`, a host, at most 255 characters.
pub(crate) fn check_node_name(arg: &'static str, name: &str) -> Result<(), Error> {
    let bad = |why: &str| Error::invalid(arg, format!("a node name alive@host, {why}: {name:?}"));
    let Some((alive, host)) = name.split_once('@') else {
        return Err(bad("no @"));
    };
    if alive.is_empty()
        || !alive
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(bad("its alive part of letters, digits, _ and -"));
    }
    if host.is_empty() || host.contains('@') || host.chars().any(char::is_whitespace) {
        return Err(bad("one host after the @"));
    }
    if name.chars().count() > 255 {
        return Err(bad("at most 255 characters"));
    }
    Ok(())
}

/// How a [`Client`] joins a cluster; [`ClientBuilder::start`] checks
/// every setting, starts the client's hidden node, and connects.
///
/// ```no_run
/// # async fn demo() -> Result<(), locker_client::Error> {
/// use std::time::Duration;
/// let client = locker_client::Client::builder("svc@127.0.0.1")
///     .cookie("secret")
///     .masters(["a@127.0.0.1", "b@127.0.0.1", "c@127.0.0.1"]) // W: 2, a majority
///     .start_timeout(Duration::from_secs(5))
///     .start()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until started"]
pub struct ClientBuilder {
    name: String,
    cookie: Option<String>,
    cookie_from_env: bool,
    masters: Vec<String>,
    replicas: Vec<String>,
    w: Option<usize>,
    start_timeout: Duration,
    backoff: (Duration, Duration),
    listen: SocketAddr,
    net_ticktime: Duration,
    handshake_timeout: Duration,
}

impl ClientBuilder {
    pub(crate) fn new(name: &str) -> Self {
        ClientBuilder {
            name: name.to_string(),
            cookie: None,
            cookie_from_env: false,
            masters: Vec::new(),
            replicas: Vec::new(),
            w: None,
            start_timeout: Duration::from_secs(10),
            backoff: (Duration::from_millis(100), Duration::from_secs(5)),
            listen: SocketAddr::from(([0, 0, 0, 0], 0)),
            net_ticktime: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(5),
        }
    }

    /// The cluster's distribution cookie (this or
    /// [`Self::cookie_from_env`] is required).
    pub fn cookie(mut self, cookie: impl Into<String>) -> Self {
        self.cookie = Some(cookie.into());
        self
    }

    /// Without [`Self::cookie`], takes the cookie from `$LOCKER_COOKIE`,
    /// else from `$HOME/.erlang.cookie` (as `erl` does), when started.
    pub fn cookie_from_env(mut self) -> Self {
        self.cookie_from_env = true;
        self
    }

    /// The cookie given, else the environment's if asked for.
    fn find_cookie(&self) -> Result<Option<String>, Error> {
        if self.cookie.is_some() || !self.cookie_from_env {
            return Ok(self.cookie.clone());
        }
        if let Ok(c) = std::env::var("LOCKER_COOKIE") {
            return Ok(Some(c));
        }
        let home = std::env::var("HOME").map_err(|_| {
            Error::invalid(
                "cookie",
                "a cookie in $LOCKER_COOKIE or $HOME/.erlang.cookie ($HOME unset)",
            )
        })?;
        let path = std::path::Path::new(&home).join(".erlang.cookie");
        std::fs::read_to_string(&path)
            .map(|s| Some(s.trim().to_string()))
            .map_err(|e| {
                Error::invalid(
                    "cookie",
                    format!("a cookie in $LOCKER_COOKIE or {}: {e}", path.display()),
                )
            })
    }

    /// The masters, `alive@host` each (at least one).
    pub fn masters<I, S>(mut self, masters: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.masters = masters.into_iter().map(Into::into).collect();
        self
    }

    /// The replicas (releases go to them too); none by default.
    pub fn replicas<I, S>(mut self, replicas: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.replicas = replicas.into_iter().map(Into::into).collect();
        self
    }

    /// The write quorum W: a majority of the masters at least (the
    /// default: [`majority`]), at most their number.
    pub fn w(mut self, w: usize) -> Self {
        self.w = Some(w);
        self
    }

    /// How long [`Self::start`] tries to reach the masters (10 s).
    pub fn start_timeout(mut self, t: Duration) -> Self {
        self.start_timeout = t;
        self
    }

    /// Delays between connection attempts to a node that is down: the
    /// first after `min`, doubling up to `max`, each with jitter
    /// (drawn from the upper half of the delay). 100 ms to 5 s.
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff = (min, max);
        self
    }

    /// Where the client's node listens (`0.0.0.0:0`).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// OTP's `net_ticktime`, as the cluster's (60 s).
    pub fn net_ticktime(mut self, t: Duration) -> Self {
        self.net_ticktime = t;
        self
    }

    /// Time allowed for one handshake (5 s).
    pub fn handshake_timeout(mut self, t: Duration) -> Self {
        self.handshake_timeout = t;
        self
    }

    /// The settings checked: masters and replicas deduplicated and
    /// sorted, W resolved.
    fn check(&self) -> Result<Checked, Error> {
        check_node_name("name", &self.name)?;
        let cookie = match &self.find_cookie()? {
            Some(c)
                if !c.is_empty() && c.len() <= 255 && c.bytes().all(|b| b.is_ascii_graphic()) =>
            {
                c.clone()
            }
            Some(_) => {
                return Err(Error::invalid(
                    "cookie",
                    "1 to 255 printable ASCII characters without spaces",
                ))
            }
            None => {
                return Err(Error::invalid(
                    "cookie",
                    "a cookie (ClientBuilder::cookie or cookie_from_env)",
                ))
            }
        };
        if self.masters.is_empty() {
            return Err(Error::invalid("masters", "at least one master"));
        }
        let mut masters = Vec::new();
        for m in &self.masters {
            check_node_name("masters", m)?;
            if *m == self.name {
                return Err(Error::invalid(
                    "masters",
                    format!("nodes other than the client's own, got {m}"),
                ));
            }
            if masters.contains(m) {
                return Err(Error::invalid(
                    "masters",
                    format!("each master once, got {m} twice"),
                ));
            }
            masters.push(m.clone());
        }
        let mut replicas = Vec::new();
        for r in &self.replicas {
            check_node_name("replicas", r)?;
            if masters.contains(r) || replicas.contains(r) || *r == self.name {
                return Err(Error::invalid(
                    "replicas",
                    format!("each replica once, neither a master nor the client, got {r}"),
                ));
            }
            replicas.push(r.clone());
        }
        let n = masters.len();
        let w = self.w.unwrap_or(majority(n));
        if w < majority(n) || w > n {
            return Err(Error::invalid(
                "w",
                format!(
                    "W from {} (a majority) to {n} for N = {n} masters, got W = {w}",
                    majority(n)
                ),
            ));
        }
        if self.start_timeout.is_zero() {
            return Err(Error::invalid("start_timeout", "a positive duration"));
        }
        if self.handshake_timeout.is_zero() {
            return Err(Error::invalid("handshake_timeout", "a positive duration"));
        }
        if self.net_ticktime < Duration::from_secs(1) {
            return Err(Error::invalid("net_ticktime", "at least 1 s"));
        }
        let (min, max) = self.backoff;
        if min.is_zero() || max < min {
            return Err(Error::invalid(
                "reconnect_backoff",
                format!("0 < min <= max, got min {min:?}, max {max:?}"),
            ));
        }
        masters.sort();
        replicas.sort();
        Ok(Checked {
            cookie,
            masters: masters.iter().map(|s| Atom::new(s)).collect(),
            replicas: replicas.iter().map(|s| Atom::new(s)).collect(),
            w,
        })
    }

    /// Checks the settings, starts the client's hidden node (registered
    /// with the local epmd) and connects to the masters and replicas.
    ///
    /// Returns once every master is connected, or W are and every other
    /// was tried at least once. Fails with [`Error::BadCookie`] when
    /// every master refused the cookie, or when no master could be
    /// reached within the start timeout and one refused the cookie; with
    /// [`Error::Unreachable`] (each master and why) when none could be
    /// reached otherwise. Masters that are down are retried in the
    /// background with the backoff, as are those that fail later.
    pub async fn start(self) -> Result<Client, Error> {
        let c = self.check()?;
        let deadline = Instant::now() + self.start_timeout;
        let mut cfg = NodeConfig::new(&self.name, &c.cookie);
        cfg.listen = self.listen;
        cfg.net_ticktime = self.net_ticktime;
        cfg.handshake_timeout = self.handshake_timeout;
        let node = Node::start(cfg, Arc::new(Metrics::default()))
            .await
            .map_err(|e| {
                if e.contains("name in use") {
                    Error::NodeNameTaken {
                        name: self.name.clone(),
                    }
                } else {
                    Error::NodeStart(e)
                }
            })?;
        erl_node::net_kernel::spawn(&node).map_err(Error::NodeStart)?;
        let links = Arc::new(Links::default());
        let backoff = Backoff {
            min: self.backoff.0,
            max: self.backoff.1,
        };
        let client = Client::from_parts(node, c.masters, c.replicas, c.w, links, backoff);
        match client.await_masters(deadline).await {
            Ok(()) => Ok(client),
            Err(e) => {
                client.stop().await;
                Err(e)
            }
        }
    }
}

struct Checked {
    cookie: String,
    masters: Vec<Atom>,
    replicas: Vec<Atom>,
    w: usize,
}

impl Client {
    /// [`ClientBuilder::start`]'s wait: see there.
    async fn await_masters(&self, deadline: Instant) -> Result<(), Error> {
        loop {
            let changed = self.links().changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let statuses: Vec<(Atom, Status)> = self
                .masters()
                .iter()
                .map(|m| (m.clone(), self.links().status(m)))
                .collect();
            let up = statuses.iter().filter(|(_, s)| *s == Status::Up).count();
            let pending = statuses
                .iter()
                .filter(|(_, s)| *s == Status::Pending)
                .count();
            let bad_cookie = statuses
                .iter()
                .find(|(_, s)| *s == Status::Failed(ConnectError::BadCookie))
                .map(|(n, _)| n.to_string());
            let all_bad_cookie = statuses
                .iter()
                .all(|(_, s)| *s == Status::Failed(ConnectError::BadCookie));
            if up == statuses.len() || (up >= self.w() && pending == 0) {
                return Ok(());
            }
            if all_bad_cookie {
                return Err(Error::BadCookie {
                    node: bad_cookie.unwrap_or_default(),
                });
            }
            if Instant::now() >= deadline {
                if up > 0 {
                    tracing::warn!(
                        up,
                        masters = statuses.len(),
                        "started with masters still unreachable (retried in the background)"
                    );
                    return Ok(());
                }
                if let Some(node) = bad_cookie {
                    return Err(Error::BadCookie { node });
                }
                return Err(Error::Unreachable {
                    nodes: statuses
                        .into_iter()
                        .map(|(n, s)| {
                            let why = match s {
                                Status::Failed(e) => e.to_string(),
                                _ => "no answer within the start timeout".to_string(),
                            };
                            (n.to_string(), why)
                        })
                        .collect(),
                });
            }
            let _ = tokio::time::timeout_at(deadline, changed).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b() -> ClientBuilder {
        ClientBuilder::new("svc@127.0.0.1")
            .cookie("c")
            .masters(["a@h", "b@h", "c@h"])
    }

    fn arg_of(r: Result<Checked, Error>) -> &'static str {
        match r {
            Err(Error::InvalidArgument { arg, .. }) => arg,
            Err(e) => panic!("not an argument error: {e}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn w_defaults_to_a_majority() {
        assert_eq!(b().check().unwrap().w, 2);
        assert_eq!(b().masters(["a@h"]).check().unwrap().w, 1);
        assert_eq!(
            b().masters(["a@h", "b@h", "c@h", "d@h", "e@h"])
                .check()
                .unwrap()
                .w,
            3
        );
    }

    #[test]
    fn w_must_be_a_majority_and_at_most_n() {
        let e = b().w(1).check().err().unwrap();
        assert_eq!(
            e.to_string(),
            "invalid argument w: expected W from 2 (a majority) to 3 for N = 3 masters, got W = 1"
        );
        assert_eq!(arg_of(b().w(4).check()), "w");
        assert_eq!(b().w(3).check().unwrap().w, 3);
    }

    #[test]
    fn names_and_lists_are_checked() {
        assert_eq!(
            arg_of(
                ClientBuilder::new("svc")
                    .cookie("c")
                    .masters(["a@h"])
                    .check()
            ),
            "name"
        );
        assert_eq!(arg_of(b().masters(Vec::<String>::new()).check()), "masters");
        assert_eq!(arg_of(b().masters(["a@h", "a@h"]).check()), "masters");
        assert_eq!(arg_of(b().masters(["@h"]).check()), "masters");
        assert_eq!(arg_of(b().masters(["a@"]).check()), "masters");
        assert_eq!(arg_of(b().masters(["a b@h"]).check()), "masters");
        assert_eq!(arg_of(b().masters(["svc@127.0.0.1"]).check()), "masters");
        assert_eq!(arg_of(b().replicas(["a@h"]).check()), "replicas");
        assert_eq!(
            arg_of(ClientBuilder::new("s@h").masters(["a@h"]).check()),
            "cookie"
        );
        assert_eq!(arg_of(b().cookie("").check()), "cookie");
        // Given wins over the environment.
        assert_eq!(
            b().cookie("given")
                .cookie_from_env()
                .check()
                .unwrap()
                .cookie,
            "given"
        );
        assert_eq!(arg_of(b().cookie("has space").check()), "cookie");
        assert_eq!(
            arg_of(b().start_timeout(Duration::ZERO).check()),
            "start_timeout"
        );
        assert_eq!(
            arg_of(
                b().reconnect_backoff(Duration::from_secs(2), Duration::from_secs(1))
                    .check()
            ),
            "reconnect_backoff"
        );
    }
}
