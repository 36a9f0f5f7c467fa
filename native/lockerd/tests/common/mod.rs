//! What the integration tests share: epmd, and lockerd processes that are
//! killed when dropped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A lockerd process, killed when dropped.
pub struct Daemon(Child, u16);

#[allow(dead_code)] // not every test uses these
impl Daemon {
    /// Its OS process id.
    pub fn os_pid(&self) -> u32 {
        self.0.id()
    }

    /// Its distribution port.
    pub fn port(&self) -> u16 {
        self.1
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts epmd if needed; whether it answers.
pub fn epmd_up() -> bool {
    let _ = Command::new("epmd").arg("-daemon").status();
    for _ in 0..50 {
        if std::net::TcpStream::connect("127.0.0.1:4369").is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Starts lockerd with `args` (which must include `--announce`) and waits
/// for its "lockerd ready" line.
#[allow(dead_code)] // not every test uses it
pub fn start_lockerd(args: &[&str]) -> Daemon {
    start_lockerd_bin(env!("CARGO_BIN_EXE_lockerd"), args)
}

/// [`start_lockerd`] with another lockerd binary.
#[allow(dead_code)] // not every test uses it
pub fn start_lockerd_bin(bin: &str, args: &[&str]) -> Daemon {
    let mut child = Command::new(bin)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn lockerd");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.starts_with("lockerd ready"),
        "lockerd did not start: {line:?}"
    );
    let port = line.split_whitespace().nth(2).and_then(|p| p.parse().ok());
    Daemon(child, port.unwrap_or(0))
}
