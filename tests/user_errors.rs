//! A user's mistake reads as one line: the real `periscope` binary, given a bad
//! filter, a session file that is not one (or is missing), or a client certificate
//! path that does not exist, prints exactly `periscope: error: …` (the causes joined)
//! on stderr and exits with a failure status — also with `RUST_BACKTRACE=1`, which
//! used to add the error's Debug form and a backtrace.

use std::path::Path;
use std::process::Command;

/// Runs `periscope ARGS...` in `dir` with `RUST_BACKTRACE=1` and asserts the one-line
/// error: returns that line.
#[track_caller]
fn one_line_error(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_periscope"))
        .current_dir(dir)
        .arg("--confdir")
        .arg(dir.join("confdir"))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .env_remove("RUST_LIB_BACKTRACE")
        .env_remove("PERISCOPE_LOG")
        .output()
        .expect("run periscope");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && out.status.code() != Some(101),
        "periscope {args:?} should fail without a panic, got {}:\n{stderr}",
        out.status
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "periscope {args:?} printed {} lines:\n{stderr}",
        lines.len()
    );
    let line = lines[0];
    assert!(line.starts_with("periscope: error: "), "{line}");
    line.to_owned()
}

#[test]
fn a_bad_filter_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let line = one_line_error(dir.path(), &["dump", "~q ("]);
    assert!(line.contains("invalid filter \"~q (\""), "{line}");
    assert!(line.contains("never closed"), "{line}");
}

#[test]
fn a_corrupt_session_file_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("corrupt.periscope");
    std::fs::write(&file, [0x5a_u8; 4096]).unwrap();
    let line = one_line_error(dir.path(), &["dump", "-r", "corrupt.periscope"]);
    assert!(
        line.contains("corrupt.periscope is not a Periscope session"),
        "{line}"
    );
    let line = one_line_error(
        dir.path(),
        &["export", "corrupt.periscope", "--har", "o.har"],
    );
    assert!(line.contains("not a Periscope session"), "{line}");
}

#[test]
fn an_unreadable_session_file_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("a-directory")).unwrap();
    let line = one_line_error(dir.path(), &["dump", "-r", "a-directory"]);
    assert!(
        line.contains("cannot open session file a-directory"),
        "{line}"
    );
    assert!(line.contains("Is a directory"), "{line}");
}

#[test]
fn exporting_a_missing_session_is_one_line_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let line = one_line_error(
        dir.path(),
        &["export", "missing.periscope", "--har", "out.har"],
    );
    assert_eq!(
        line,
        "periscope: error: cannot open session file missing.periscope: \
         No such file or directory (os error 2)",
        "the cause is named once"
    );
    assert!(!dir.path().join("missing.periscope").exists());
    assert!(!dir.path().join("out.har").exists());
    let line = one_line_error(dir.path(), &["dump", "-r", "missing.periscope"]);
    assert!(line.contains("No such file or directory"), "{line}");
    assert!(!dir.path().join("missing.periscope").exists());
}

#[test]
fn a_bad_client_certs_path_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let line = one_line_error(
        dir.path(),
        &[
            "dump",
            "--listen-host",
            "127.0.0.1",
            "-p",
            "0",
            "--client-certs",
            "no-such-client.pem",
        ],
    );
    assert!(
        line.contains("cannot read client certificate no-such-client.pem"),
        "{line}"
    );
    // A file that is not a certificate says so.
    std::fs::write(dir.path().join("not-a-cert.pem"), "hello\n").unwrap();
    let line = one_line_error(
        dir.path(),
        &["dump", "-p", "0", "--client-certs", "not-a-cert.pem"],
    );
    assert!(line.contains("not-a-cert.pem is not usable"), "{line}");
}
