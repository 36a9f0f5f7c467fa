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

impl Daemon {
    /// Sends the signal `name` (`STOP`, `CONT`...) to the process.
    #[allow(dead_code)] // not every test crate pauses daemons
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.0.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{name} failed");
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
    let (child, line) = spawn_first_line(bin, args, &[], Stdio::inherit());
    assert!(
        line.starts_with("lockerd ready"),
        "lockerd did not start: {line:?}"
    );
    let port = line.split_whitespace().nth(2).and_then(|p| p.parse().ok());
    Daemon(child, port.unwrap_or(0))
}

/// Starts `bin` with `args`, the environment variables `env` added and
/// its standard error to `stderr`; returns the process and the first
/// line of its standard output (lockerd's "lockerd ready" line with
/// `--announce`, or empty if it exited first). A piped `stderr` must be
/// read, or the process may block on it.
#[allow(dead_code)] // not every test uses it
pub fn spawn_first_line(
    bin: &str,
    args: &[&str],
    env: &[(&str, &str)],
    stderr: Stdio,
) -> (Child, String) {
    let mut child = Command::new(bin)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn lockerd");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line)
}
