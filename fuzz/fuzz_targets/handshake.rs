//! `handshake`: erl_node's distribution handshake, both sides, fed from the
//! network side with fuzzed bytes, and its epmd client.
//!
//! erl_node's `handshake::accept` and `handshake::connect` take a real
//! `TcpStream`, so the target runs them unchanged on loopback sockets of
//! this process (one listener, sockets closed with RST so no TIME_WAIT
//! piles up) and plays the peer. Six modes, by the first byte:
//!
//! 0. raw server: the rest of the input is everything the connecting peer
//!    sends to `accept` (then it half-closes);
//! 1. raw client: the rest is everything the listening peer answers to
//!    `connect`;
//! 2. scripted server: a peer that follows the protocol with fuzzed fields
//!    (`n`/`N` name message, version, flags, creation, name bytes,
//!    complement, challenge reply with a right or wrong digest computed
//!    from the challenge erl_node sent, trailing garbage);
//! 3. scripted client: a listening peer that checks erl_node's name and
//!    challenge reply and answers with a fuzzed status (including
//!    `named:` and garbage), a fuzzed `n`/`N` challenge and a right or
//!    wrong acknowledgement digest.
//!
//! 4. epmd lookup: the rest is epmd's answer to `epmd::port_of`;
//! 5. epmd registration: the rest is epmd's answer to `epmd::register`
//!    (`ERL_EPMD_PORT` points erl_node's epmd client at the listener).
//!
//! Invariants (see fuzz/README.md): no panic, no hang (each call ends
//! within its own timeout); `accept` succeeds only with the right cookie
//! digest and an `ok`/`ok_simultaneous` decision, and then reports the
//! name, creation and flags the peer sent; the decision callback sees the
//! name that was sent; a well-formed exchange with the right cookie is
//! accepted; `connect` reports `Up` only after `ok`/`ok_simultaneous` and a
//! right acknowledgement, `Busy` exactly for `nok`/`alive`; erl_node's own
//! messages are well formed (its name message carries its name, creation
//! and `local_flags`; its challenge reply digest is right).

#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use erl_dist::node::NodeName;
use erl_dist::DistributionFlags;
use libfuzzer_sys::fuzz_target;
use erl_node::handshake::{self, Accept, ClientOutcome, Identity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

const COOKIE: &str = "fuzzcookie";
const ME: &str = "lockerd_fuzz@localhost";
const CREATION: u32 = 0x1234_5678;
/// erl_node's own handshake timeout in this harness.
const TIMEOUT: Duration = Duration::from_secs(2);
/// A hang past erl_node's own timeout is a bug.
const HANG: Duration = Duration::from_secs(10);

struct Env {
    rt: Runtime,
    listener: TcpListener,
    addr: SocketAddr,
    me: Identity,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("listen on loopback");
        let addr = listener.local_addr().expect("addr");
        // erl_node's epmd client reads its port from here on every call:
        // the listener then plays epmd too (modes 4 and 5).
        std::env::set_var("ERL_EPMD_PORT", addr.port().to_string());
        let me = Identity {
            name: ME.parse().expect("name"),
            creation: CREATION,
            cookie: COOKIE.to_string(),
        };
        Env {
            rt,
            listener,
            addr,
            me,
        }
    })
}

/// `LOCKER_FUZZ_TRACE=1`: print each outcome (to see which paths a corpus
/// reaches, e.g. with `-runs=0` over it).
fn trace(what: &str) {
    static ON: OnceLock<bool> = OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("LOCKER_FUZZ_TRACE").is_some()) {
        eprintln!("handshake outcome: {what}");
    }
}

fn digest(challenge: u32) -> [u8; 16] {
    md5::compute(format!("{COOKIE}{challenge}")).0
}

/// A connected pair: (erl_node's side, the fuzzing peer's side).
async fn pair(e: &Env) -> (TcpStream, TcpStream) {
    let (a, b) = tokio::join!(TcpStream::connect(e.addr), e.listener.accept());
    let peer = a.expect("connect");
    let (ours, _) = b.expect("accept");
    // As erl_node's acceptor does (and as an OTP peer does).
    ours.set_nodelay(true).expect("nodelay");
    peer.set_nodelay(true).expect("nodelay");
    peer.set_zero_linger().expect("linger");
    ours.set_zero_linger().expect("linger");
    (ours, peer)
}

/// One handshake message (2-byte length), or None at EOF.
async fn read_msg(s: &mut TcpStream) -> Option<Vec<u8>> {
    let n = s.read_u16().await.ok()? as usize;
    let mut buf = vec![0; n];
    s.read_exact(&mut buf).await.ok()?;
    Some(buf)
}

async fn write_msg(s: &mut TcpStream, body: &[u8]) -> bool {
    let mut out = Vec::with_capacity(body.len() + 2);
    out.extend_from_slice(&(body.len().min(u16::MAX as usize) as u16).to_be_bytes());
    out.extend_from_slice(body);
    s.write_all(&out).await.is_ok()
}

async fn drain(s: &mut TcpStream) {
    let mut sink = [0u8; 4096];
    while let Ok(n) = s.read(&mut sink).await {
        if n == 0 {
            break;
        }
    }
}

fn decision(b: u8) -> (Accept, bool) {
    match b % 4 {
        0 => (Accept::Ok, true),
        1 => (Accept::OkSimultaneous, true),
        2 => (Accept::Nok, false),
        _ => (Accept::NotAllowed, false),
    }
}

/// The peer's name message, as fuzzed fields.
#[derive(Arbitrary, Debug)]
struct NameMsg {
    /// `N` (OTP 23+) or the old `n`.
    new_style: bool,
    /// Version of an `n` message (5 is right).
    version: u16,
    flags: u64,
    creation: u32,
    /// Name bytes; `valid_name` replaces them with a plausible name.
    name: Vec<u8>,
    valid_name: bool,
}

#[derive(Arbitrary, Debug)]
struct ServerScript {
    decide: u8,
    msg: NameMsg,
    /// Send the complement message (needed after `n` with HANDSHAKE_23).
    complement: Option<(u32, u32)>,
    reply_challenge: u32,
    right_digest: bool,
    /// Flip to send the challenge reply with a wrong tag.
    wrong_tag: bool,
    garbage: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
enum Status {
    Ok,
    OkSimultaneous,
    Nok,
    NotAllowed,
    Alive,
    Named { name: Vec<u8>, creation: u32 },
    Other(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct ClientScript {
    status: Status,
    challenge_new_style: bool,
    version: u16,
    flags: u64,
    challenge: u32,
    creation: u32,
    name: Vec<u8>,
    valid_name: bool,
    right_ack: bool,
    garbage: Vec<u8>,
}

fn name_bytes(raw: &[u8], valid: bool) -> Vec<u8> {
    if valid {
        let alive: String = raw
            .iter()
            .map(|b| (b'a' + b % 26) as char)
            .take(40)
            .collect();
        format!("p{alive}@h").into_bytes()
    } else {
        raw.to_vec()
    }
}

/// Mode 0: raw bytes to `accept`.
async fn raw_server(e: &Env, decide: u8, bytes: &[u8]) {
    let (ours, mut peer) = pair(e).await;
    let (choice, _) = decision(decide);
    let mut seen = None;
    let ours = handshake::accept(ours, &e.me, TIMEOUT, |name, _| {
        seen = Some(name.to_string());
        choice
    });
    let feed = async {
        let _ = peer.write_all(bytes).await;
        let _ = peer.shutdown().await;
        drain(&mut peer).await;
    };
    let (r, ()) = tokio::join!(ours, feed);
    // Random bytes cannot know the challenge: never accepted.
    assert!(r.is_err(), "accepted a peer from raw bytes");
    if let Some(name) = seen {
        assert!(
            name.contains('@') && name.len() <= 255,
            "decided on {name:?}"
        );
    }
}

/// Mode 1: raw bytes answered to `connect`.
async fn raw_client(e: &Env, bytes: &[u8]) {
    let ours = handshake::connect("127.0.0.1", e.addr.port(), &e.me, TIMEOUT);
    let feed = async {
        let (mut peer, _) = e.listener.accept().await.expect("accept");
        peer.set_zero_linger().expect("linger");
        peer.set_nodelay(true).expect("nodelay");
        let _ = peer.write_all(bytes).await;
        let _ = peer.shutdown().await;
        drain(&mut peer).await;
        peer
    };
    let (r, _peer) = tokio::join!(ours, feed);
    assert!(
        !matches!(r, Ok(ClientOutcome::Up(..))),
        "connected to a peer of raw bytes"
    );
}

/// Mode 2: a protocol-following connecting peer with fuzzed fields.
async fn scripted_server(e: &Env, s: ServerScript) {
    let (ours, mut peer) = pair(e).await;
    let (choice, goes_on) = decision(s.decide);
    let name = name_bytes(&s.msg.name, s.msg.valid_name);
    let mut body = Vec::new();
    if s.msg.new_style {
        body.push(b'N');
        body.extend_from_slice(&s.msg.flags.to_be_bytes());
        body.extend_from_slice(&s.msg.creation.to_be_bytes());
        body.extend_from_slice(&(name.len().min(u16::MAX as usize) as u16).to_be_bytes());
        body.extend_from_slice(&name);
    } else {
        body.push(b'n');
        body.extend_from_slice(&s.msg.version.to_be_bytes());
        body.extend_from_slice(&(s.msg.flags as u32).to_be_bytes());
        body.extend_from_slice(&name);
    }
    let mut seen: Option<String> = None;
    let seen_ref = &mut seen;
    let ours = handshake::accept(ours, &e.me, TIMEOUT, move |n, _| {
        assert!(seen_ref.is_none(), "decide called twice");
        *seen_ref = Some(n.to_string());
        choice
    });
    let script = async {
        let mut acked = None;
        if !write_msg(&mut peer, &body).await {
            return acked;
        }
        let Some(status) = read_msg(&mut peer).await else {
            return acked;
        };
        assert_eq!(status.first(), Some(&b's'), "status message tag");
        let Some(ch) = read_msg(&mut peer).await else {
            return acked;
        };
        // erl_node's challenge: N (flags, challenge, creation, name) or n.
        let challenge = match ch.first() {
            Some(b'N') => {
                assert!(ch.len() >= 19, "short N challenge");
                let flags = u64::from_be_bytes(ch[1..9].try_into().unwrap());
                assert_eq!(flags, handshake::local_flags().bits(), "our flags");
                let creation = u32::from_be_bytes(ch[13..17].try_into().unwrap());
                assert_eq!(creation, CREATION, "our creation");
                assert_eq!(&ch[19..], ME.as_bytes(), "our name");
                u32::from_be_bytes(ch[9..13].try_into().unwrap())
            }
            Some(b'n') => {
                assert!(ch.len() >= 11, "short n challenge");
                assert_eq!(&ch[11..], ME.as_bytes(), "our name");
                u32::from_be_bytes(ch[7..11].try_into().unwrap())
            }
            other => panic!("challenge tag {other:?}"),
        };
        if let Some((hi, creation)) = s.complement {
            let mut c = vec![b'c'];
            c.extend_from_slice(&hi.to_be_bytes());
            c.extend_from_slice(&creation.to_be_bytes());
            if !write_msg(&mut peer, &c).await {
                return acked;
            }
        }
        let mut r = vec![if s.wrong_tag { b'R' } else { b'r' }];
        r.extend_from_slice(&s.reply_challenge.to_be_bytes());
        let mut d = digest(challenge);
        if !s.right_digest {
            d[0] ^= 1;
        }
        r.extend_from_slice(&d);
        if !write_msg(&mut peer, &r).await {
            return acked;
        }
        let _ = peer.write_all(&s.garbage).await;
        if let Some(ack) = read_msg(&mut peer).await {
            assert_eq!(ack.first(), Some(&b'a'), "ack tag");
            assert_eq!(&ack[1..], &digest(s.reply_challenge), "ack digest");
            acked = Some(());
        }
        acked
    };
    let (r, acked) = tokio::join!(ours, script);
    let flags = if s.msg.new_style {
        s.msg.flags
    } else {
        s.msg.flags & 0xffff_ffff
    };
    let dynamic = s.msg.new_style && flags & DistributionFlags::NAME_ME.bits() != 0;
    let parsed: Option<NodeName> = std::str::from_utf8(&name).ok().and_then(|n| n.parse().ok());
    trace(&format!(
        "server {}",
        if r.is_ok() { "accepted" } else { "refused" }
    ));
    match &r {
        Ok((_, peer_node)) => {
            assert!(goes_on, "accepted after deciding {:?}", s.decide % 4);
            assert!(s.right_digest && !s.wrong_tag, "accepted a wrong digest");
            assert!(acked.is_some(), "accepted without acknowledging");
            let name = parsed.as_ref().expect("accepted an unparsable name");
            assert_eq!(peer_node.name, name.to_string());
            assert_eq!(seen.as_deref(), Some(peer_node.name.as_str()));
            if s.msg.new_style {
                assert_eq!(peer_node.creation, s.msg.creation);
                assert_eq!(peer_node.flags, flags);
            }
        }
        Err(_) => {
            let handshake_23 = flags & DistributionFlags::HANDSHAKE_23.bits() != 0;
            let proper = parsed.is_some()
                && !dynamic
                && (s.msg.new_style || s.msg.version == 5)
                && s.complement.is_some() == (!s.msg.new_style && handshake_23)
                && s.right_digest
                && !s.wrong_tag
                && goes_on;
            assert!(!proper, "a proper handshake was refused: {r:?}");
        }
    }
    if let (Some(n), Some(p)) = (&seen, &parsed) {
        assert_eq!(n, &p.to_string(), "decided on another name");
    }
}

/// Mode 3: a protocol-following listening peer with fuzzed answers.
async fn scripted_client(e: &Env, s: ClientScript) {
    let ours = handshake::connect("127.0.0.1", e.addr.port(), &e.me, TIMEOUT);
    let name = name_bytes(&s.name, s.valid_name);
    let script = async {
        let (mut peer, _) = e.listener.accept().await.expect("accept");
        peer.set_zero_linger().expect("linger");
        peer.set_nodelay(true).expect("nodelay");
        let mut acked = false;
        // erl_node's name message: N, flags, creation, name.
        let msg = read_msg(&mut peer).await.expect("erl_node sent no name");
        assert_eq!(msg.first(), Some(&b'N'), "name tag");
        assert!(msg.len() >= 15);
        assert_eq!(
            u64::from_be_bytes(msg[1..9].try_into().unwrap()),
            handshake::local_flags().bits()
        );
        assert_eq!(u32::from_be_bytes(msg[9..13].try_into().unwrap()), CREATION);
        let n = u16::from_be_bytes([msg[13], msg[14]]) as usize;
        assert_eq!(&msg[15..], ME.as_bytes());
        assert_eq!(n, ME.len());
        let mut st = vec![b's'];
        match &s.status {
            Status::Ok => st.extend_from_slice(b"ok"),
            Status::OkSimultaneous => st.extend_from_slice(b"ok_simultaneous"),
            Status::Nok => st.extend_from_slice(b"nok"),
            Status::NotAllowed => st.extend_from_slice(b"not_allowed"),
            Status::Alive => st.extend_from_slice(b"alive"),
            Status::Named { name, creation } => {
                st.extend_from_slice(b"named:");
                st.extend_from_slice(&(name.len() as u16).to_be_bytes());
                st.extend_from_slice(name);
                st.extend_from_slice(&creation.to_be_bytes());
            }
            Status::Other(b) => st.extend_from_slice(b),
        }
        if !write_msg(&mut peer, &st).await {
            return (peer, acked);
        }
        let mut ch = Vec::new();
        if s.challenge_new_style {
            ch.push(b'N');
            ch.extend_from_slice(&s.flags.to_be_bytes());
            ch.extend_from_slice(&s.challenge.to_be_bytes());
            ch.extend_from_slice(&s.creation.to_be_bytes());
            ch.extend_from_slice(&(name.len().min(u16::MAX as usize) as u16).to_be_bytes());
            ch.extend_from_slice(&name);
        } else {
            ch.push(b'n');
            ch.extend_from_slice(&s.version.to_be_bytes());
            ch.extend_from_slice(&(s.flags as u32).to_be_bytes());
            ch.extend_from_slice(&s.challenge.to_be_bytes());
            ch.extend_from_slice(&name);
        }
        if !write_msg(&mut peer, &ch).await {
            return (peer, acked);
        }
        // erl_node's reply (maybe after a complement).
        loop {
            let Some(m) = read_msg(&mut peer).await else {
                return (peer, acked);
            };
            match m.first() {
                Some(b'c') => continue,
                Some(b'r') => {
                    assert_eq!(m.len(), 21, "reply length");
                    assert_eq!(&m[5..21], &digest(s.challenge), "erl_node's reply digest");
                    let theirs = u32::from_be_bytes(m[1..5].try_into().unwrap());
                    let mut a = vec![b'a'];
                    let mut d = digest(theirs);
                    if !s.right_ack {
                        d[15] ^= 0x80;
                    }
                    a.extend_from_slice(&d);
                    let _ = write_msg(&mut peer, &a).await;
                    let _ = peer.write_all(&s.garbage).await;
                    acked = s.right_ack;
                    break;
                }
                other => panic!("unexpected message from erl_node: {other:?}"),
            }
        }
        (peer, acked)
    };
    let (r, (_peer, acked)) = tokio::join!(ours, script);
    // What the status bytes say, however they were produced.
    let status = match &s.status {
        Status::Other(b) => match b.as_slice() {
            b"ok" => Status::Ok,
            b"ok_simultaneous" => Status::OkSimultaneous,
            b"nok" => Status::Nok,
            b"not_allowed" => Status::NotAllowed,
            b"alive" => Status::Alive,
            _ => Status::Other(Vec::new()),
        },
        Status::Named { .. } => Status::Other(Vec::new()),
        Status::Ok => Status::Ok,
        Status::OkSimultaneous => Status::OkSimultaneous,
        Status::Nok => Status::Nok,
        Status::NotAllowed => Status::NotAllowed,
        Status::Alive => Status::Alive,
    };
    let status_ok = matches!(status, Status::Ok | Status::OkSimultaneous);
    let parsed: Option<NodeName> = std::str::from_utf8(&name).ok().and_then(|n| n.parse().ok());
    trace(match &r {
        Ok(ClientOutcome::Up(..)) => "client up",
        Ok(ClientOutcome::Busy) => "client busy",
        Err(_) => "client failed",
    });
    match &r {
        Ok(ClientOutcome::Up(_, peer_node)) => {
            assert!(status_ok, "up after status {:?}", s.status);
            assert!(acked, "up without a right acknowledgement");
            let name = parsed.expect("up with an unparsable peer name");
            assert_eq!(peer_node.name, name.to_string());
            if s.challenge_new_style {
                assert_eq!(peer_node.creation, s.creation);
                assert_eq!(peer_node.flags, s.flags);
            }
        }
        Ok(ClientOutcome::Busy) => {
            assert!(
                matches!(status, Status::Nok | Status::Alive),
                "busy after status {:?}",
                s.status
            );
        }
        Err(_) => {
            assert!(
                !matches!(status, Status::Nok | Status::Alive),
                "error after status {:?}: {:?}",
                s.status,
                r.as_ref().err()
            );
            let proper = status_ok
                && parsed.is_some()
                && (s.challenge_new_style || s.version == 5)
                && s.right_ack;
            assert!(!proper, "a proper handshake failed: {:?}", r.as_ref().err());
        }
    }
}

/// Mode 4: epmd's answer to erl_node's `PORT_PLEASE2_REQ`.
async fn epmd_lookup(e: &Env, bytes: &[u8]) {
    let ours = erl_node::epmd::port_of("fuzzpeer", "127.0.0.1");
    let feed = async {
        let (mut peer, _) = e.listener.accept().await.expect("accept");
        peer.set_zero_linger().expect("linger");
        peer.set_nodelay(true).expect("nodelay");
        let req = read_msg(&mut peer).await.expect("erl_node sent no request");
        assert_eq!(req, b"zfuzzpeer", "PORT_PLEASE2_REQ");
        let _ = peer.write_all(bytes).await;
        let _ = peer.shutdown().await;
        drain(&mut peer).await;
        peer
    };
    let (r, _peer) = tokio::join!(ours, feed);
    trace(match &r {
        Ok(Some(_)) => "epmd port",
        Ok(None) => "epmd not registered",
        Err(_) => "epmd error",
    });
    match r {
        Ok(Some(port)) => {
            assert!(
                bytes.len() >= 4 && bytes[..2] == [119, 0],
                "port from {bytes:?}"
            );
            assert_eq!(port, u16::from_be_bytes([bytes[2], bytes[3]]));
        }
        Ok(None) => assert!(bytes.len() >= 2 && bytes[..2] == [119, 1]),
        Err(_) => {}
    }
}

/// Mode 5: epmd's answer to erl_node's `ALIVE2_REQ`.
async fn epmd_register(e: &Env, bytes: &[u8]) {
    let ours = erl_node::epmd::register("fuzzme", 4370);
    let feed = async {
        let (mut peer, _) = e.listener.accept().await.expect("accept");
        peer.set_zero_linger().expect("linger");
        peer.set_nodelay(true).expect("nodelay");
        let req = read_msg(&mut peer).await.expect("erl_node sent no request");
        assert_eq!(req.first(), Some(&120), "ALIVE2_REQ");
        assert_eq!(&req[1..3], &4370u16.to_be_bytes(), "port");
        assert_eq!(req[3], 72, "hidden node");
        assert_eq!(&req[9..11], &6u16.to_be_bytes(), "name length");
        assert_eq!(&req[11..17], b"fuzzme");
        let _ = peer.write_all(bytes).await;
        let _ = peer.shutdown().await;
        peer
    };
    let (r, _peer) = tokio::join!(ours, feed);
    trace(if r.is_ok() {
        "epmd registered"
    } else {
        "epmd refused"
    });
    if let Ok(reg) = r {
        match bytes.first() {
            Some(121) => {
                assert!(bytes.len() >= 4 && bytes[1] == 0);
                assert_eq!(
                    reg.creation,
                    u16::from_be_bytes([bytes[2], bytes[3]]) as u32
                );
            }
            Some(118) => {
                assert!(bytes.len() >= 6 && bytes[1] == 0);
                assert_eq!(
                    reg.creation,
                    u32::from_be_bytes(bytes[2..6].try_into().unwrap())
                );
            }
            other => panic!("registered after answer tag {other:?}"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let e = env();
    e.rt.block_on(async {
        let run = async {
            match mode % 6 {
                0 => {
                    let (&d, bytes) = rest.split_first().unwrap_or((&0, &[]));
                    raw_server(e, d, bytes).await
                }
                1 => raw_client(e, rest).await,
                2 => {
                    if let Ok(s) = ServerScript::arbitrary_take_rest(Unstructured::new(rest)) {
                        scripted_server(e, s).await
                    }
                }
                3 => {
                    if let Ok(s) = ClientScript::arbitrary_take_rest(Unstructured::new(rest)) {
                        scripted_client(e, s).await
                    }
                }
                4 => epmd_lookup(e, rest).await,
                _ => epmd_register(e, rest).await,
            }
        };
        tokio::time::timeout(HANG, run)
            .await
            .expect("the handshake hung past its own timeout");
    });
});
