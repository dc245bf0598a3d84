//! Small shared helpers: ports, tool lookup, waiting, temp dirs.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A TCP port on 127.0.0.1 that was free when this returned.
pub fn free_port() -> u16 {
    free_ports(1, false)[0]
}

/// `count` distinct ports free on 127.0.0.1 and, when `also_ipv6`, on [::1] too. The
/// listeners are all held until every port is found, so the ports are distinct.
///
/// The ports come from below the kernel's ephemeral range, as `scripts/lib/listen_ports.py`
/// picks them: a port from bind(0) is in that range, and before the test's server binds
/// it, it can become the local end of one of the many outgoing loopback connections the
/// tests running beside this one make. The kernel never hands out a port below the range.
pub(crate) fn free_ports(count: usize, also_ipv6: bool) -> Vec<u16> {
    let candidates = ports_outside_the_ephemeral_range();
    let start = next_start(&candidates);
    let mut held = Vec::new();
    let mut ports = Vec::new();
    for &port in candidates.iter().cycle().skip(start).take(candidates.len()) {
        if ports.len() == count {
            break;
        }
        let Ok(v4) = TcpListener::bind(("127.0.0.1", port)) else {
            continue;
        };
        if also_ipv6 {
            match TcpListener::bind(("::1", port)) {
                Ok(v6) => held.push(v6),
                Err(_) => continue,
            }
        }
        held.push(v4);
        ports.push(port);
        NEXT_CANDIDATE.store(usize::from(port) + 1, Ordering::Relaxed);
    }
    assert_eq!(
        ports.len(),
        count,
        "could not find {count} free loopback ports"
    );
    ports
}

fn ports_outside_the_ephemeral_range() -> Vec<u16> {
    let (low, high) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut bounds = text.split_whitespace().map(|n| n.parse::<u16>().ok());
            Some((bounds.next()??, bounds.next()??))
        })
        .unwrap_or((32768, 60999));
    let outside = |floor: u16| -> Vec<u16> {
        (floor..=u16::MAX)
            .filter(|port| !(low..=high).contains(port))
            .collect()
    };
    let preferred = outside(10000);
    if preferred.len() >= 1000 {
        preferred
    } else {
        outside(1024)
    }
}

/// The port after the last one handed out in this process, so that two calls in a row
/// never return the same port; 0 until the first call.
static NEXT_CANDIDATE: AtomicUsize = AtomicUsize::new(0);

/// Where to start in the candidates: after this process's last port, or, on the first
/// call, somewhere that differs between the test processes that run at once, so they do
/// not all probe the same ports first.
fn next_start(candidates: &[u16]) -> usize {
    let next = NEXT_CANDIDATE.load(Ordering::Relaxed);
    let index = if next != 0 {
        candidates.partition_point(|&port| usize::from(port) < next)
    } else {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|since| since.subsec_nanos() as usize)
            .unwrap_or(0);
        (std::process::id() as usize).wrapping_mul(2_654_435_761) ^ nanos
    };
    index % candidates.len().max(1)
}

/// Whether [::1] can be bound here (IPv6 loopback present).
pub(crate) fn ipv6_loopback_available() -> bool {
    TcpListener::bind("[::1]:0").is_ok()
}

const INSTALL_HINT: &str = "run `scripts/test.sh` once: it installs every test peer \
     (apache2 curl openssl tshark tmux python3-venv python3-openssl jq nodejs nghttp2-server tinyproxy microsocks iptables) and the Python venv";

/// The absolute path of a required program, searched in PATH and the sbin directories
/// (apache2 lives in /usr/sbin, which is not in every user's PATH). Panics with an
/// install hint when missing: a missing peer is a failed test, never a skipped one.
pub fn require_tool(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for extra in [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ] {
        dirs.push(PathBuf::from(extra));
    }
    for dir in dirs {
        let candidate = dir.join(name);
        if is_executable(&candidate) {
            return candidate;
        }
    }
    panic!("required test tool `{name}` not found in PATH or /usr/sbin: {INSTALL_HINT}");
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The Python interpreter of the test venv (`$PERISCOPE_TEST_PYTHON`, exported by
/// scripts/test.sh). Panics with a hint when unset or missing.
pub fn python() -> PathBuf {
    let Some(value) = std::env::var_os("PERISCOPE_TEST_PYTHON") else {
        panic!(
            "PERISCOPE_TEST_PYTHON is not set: run the tests through `scripts/test.sh` \
             (it creates .venv with tests/requirements.txt and exports it), or export \
             PERISCOPE_TEST_PYTHON=$REPO/.venv/bin/python after running it once"
        );
    };
    let path = PathBuf::from(value);
    assert!(
        is_executable(&path),
        "PERISCOPE_TEST_PYTHON={} does not exist or is not executable: {INSTALL_HINT}",
        path.display()
    );
    path
}

/// Polls `condition` every 10 ms until it returns true or `timeout` passes; returns
/// whether it became true.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The entries of `dir` whose names start with `prefix`, sorted.
pub fn entries_named(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut found: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .collect();
    found.sort();
    found
}

/// Lowercase hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    let digest = openssl::sha::sha256(data);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A temp dir (under the system temp dir) with mode 0755, so that daemons that drop
/// privileges (Apache's www-data children) can traverse it. `tempfile` makes 0700 dirs.
pub fn world_readable_tempdir(prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("create temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod temp dir");
    dir
}

/// Writes `contents` to `path` (creating parent dirs) with mode 0644.
pub(crate) fn write_file(path: &Path, contents: impl AsRef<[u8]>) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create parent dir");
        let _ = std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755));
    }
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// Sends `signal` (`libc::SIGTERM`, ...) to `pid`, ignoring errors: the process may
/// be gone already.
pub fn send_signal(pid: u32, signal: i32) {
    let signal = rustix::process::Signal::from_named_raw(signal)
        .unwrap_or_else(|| panic!("{signal} is not a signal"));
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    let _ = rustix::process::kill_process(pid, signal);
}

/// Stops a child: SIGTERM, up to `grace` for it to exit, then SIGKILL; always reaps it.
pub(crate) fn terminate_child(
    child: &mut std::process::Child,
    grace: Duration,
) -> Option<std::process::ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    send_signal(child.id(), libc::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    child.wait().ok()
}
