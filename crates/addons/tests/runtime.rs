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
    assert!(report.contains("Ran 8 tests"), "{report}");
}
