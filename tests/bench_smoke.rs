//! Runs `scripts/bench.sh --smoke` and checks that the benchmark works end to end: it
//! exits 0 and prints the results table with its three columns (direct, periscope,
//! mitmdump). Timings are never asserted: the smoke mode measures nothing.
//!
//! The script installs its own tools when missing (nginx from apt, oha with `cargo
//! install`, mitmproxy in bench/.venv), so the first run on a fresh machine takes a
//! few minutes longer. It runs against the binary cargo built for this test run
//! (`PERISCOPE_BIN`), not a release build.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Generous: on a fresh machine the first run compiles oha (5-10 minutes on 2 quiet
/// cores, 25 seen while the rest of the suite compiles and runs) and installs mitmproxy;
/// once they are installed the smoke run itself takes about 3 minutes.
const TIME_LIMIT: Duration = Duration::from_secs(40 * 60);

#[test]
fn bench_smoke_mode_runs_and_prints_the_three_column_table() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = repo.join("scripts/bench.sh");
    assert!(script.exists(), "{} missing", script.display());

    let log_dir = repo.join("bench/work");
    std::fs::create_dir_all(&log_dir).unwrap();
    let out_path = log_dir.join("smoke-test.stdout");
    let err_path = log_dir.join("smoke-test.stderr");
    let stdout = std::fs::File::create(&out_path).unwrap();
    let stderr = std::fs::File::create(&err_path).unwrap();

    let mut child = Command::new("bash")
        .arg(&script)
        .arg("--smoke")
        .env("PERISCOPE_BIN", env!("CARGO_BIN_EXE_periscope"))
        .current_dir(repo)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .expect("start scripts/bench.sh");

    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > TIME_LIMIT {
            // The whole process group: bench.sh and the servers it started. TERM first
            // (bench.sh then stops its servers), KILL what is left after 10 s.
            signal_group(child.id(), libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(200));
            }
            signal_group(child.id(), libc::SIGKILL);
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(500));
    };

    let read = |p: &Path| {
        let mut s = String::new();
        std::fs::File::open(p)
            .and_then(|mut f| f.read_to_string(&mut s))
            .ok();
        s
    };
    let out = read(&out_path);
    let err = read(&err_path);
    let tail = |s: &str| {
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    };
    let context = format!(
        "--- stdout ---\n{out}\n--- stderr (last 60 lines) ---\n{}",
        tail(&err)
    );

    let status = status.unwrap_or_else(|| {
        panic!(
            "scripts/bench.sh --smoke did not finish within {:?}\n{context}",
            TIME_LIMIT
        )
    });
    assert!(
        status.success(),
        "scripts/bench.sh --smoke failed: {status}\n{context}"
    );

    let header = out
        .lines()
        .find(|l| l.starts_with("metric "))
        .unwrap_or_else(|| panic!("no table header in the output\n{context}"));
    let columns: Vec<&str> = header.split('|').map(str::trim).collect();
    assert_eq!(
        columns,
        [
            "metric",
            "direct",
            "periscope",
            "mitmdump",
            "periscope/direct",
            "target",
            "pass/fail"
        ],
        "{context}"
    );

    // Every scenario put a row in the table, with a number for direct or Periscope.
    for row in [
        "keep-alive 1 KiB, c=1: req/s",
        "keep-alive 1 KiB, c=16: req/s",
        "keep-alive 1 KiB, c=64: req/s",
        "new connection per request, c=16: req/s",
        "large download: throughput",
        "large upload: throughput",
        "idle connections: proxy RSS with all open",
        "long session: RSS after all flows",
    ] {
        let line = out
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("row `{row}` missing\n{context}"));
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 7, "row `{row}`: {line}\n{context}");
        assert!(
            cells[2].chars().next().is_some_and(|c| c.is_ascii_digit()),
            "row `{row}` has no Periscope number: {line}\n{context}"
        );
    }

    // mitmdump may only be missing when installing it failed, and then loudly.
    let mitm_ran = out
        .lines()
        .filter(|l| l.starts_with("keep-alive 1 KiB"))
        .any(|l| {
            l.split('|')
                .nth(3)
                .map(str::trim)
                .and_then(|c| c.chars().next())
                .is_some_and(|c| c.is_ascii_digit())
        });
    if !mitm_ran {
        assert!(
            err.contains("MITMDUMP SKIPPED") && out.contains("MITMDUMP SKIPPED"),
            "mitmdump column empty without the loud skip message\n{context}"
        );
    }

    let report = repo.join("bench/work/RESULTS.smoke.md");
    let md = std::fs::read_to_string(&report)
        .unwrap_or_else(|e| panic!("{}: {e}\n{context}", report.display()));
    assert!(
        md.contains("| metric | direct | periscope | mitmdump |"),
        "{md}"
    );
}

/// Signals the process group made for the script (process_group(0) made it the
/// leader).
fn signal_group(pid: u32, signal: libc::c_int) {
    let Some(leader) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    let signal = rustix::process::Signal::from_named_raw(signal)
        .unwrap_or_else(|| panic!("{signal} is not a signal"));
    let _ = rustix::process::kill_process_group(leader, signal);
}
