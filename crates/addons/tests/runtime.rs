//! The Python runtime's own tests (`python/tests/`): the flow API scripts see and
//! the diff the worker sends back, run with the test venv's Python
//! (`$PERISCOPE_TEST_PYTHON`, else `python3`).

use std::path::Path;
use std::process::Command;

#[test]
fn the_python_runtime_passes_its_unit_tests() {
    let python = std::env::var_os("PERISCOPE_TEST_PYTHON").unwrap_or_else(|| "python3".into());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("python");
    let output = Command::new(&python)
        .args(["-m", "unittest", "-v", "tests.test_flow"])
        .current_dir(&dir)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("python runs");
    let report = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{report}");
    // Every test ran (a module that failed to import would run none).
    let ran: usize = report
        .lines()
        .find_map(|l| {
            l.strip_prefix("Ran ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    assert!(ran >= 13, "{report}");
}
