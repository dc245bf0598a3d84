//! What a recording origin received: `fault_origin.py`'s `/record…` paths,
//! `addon_origin.py` and `h2_origin.py`'s `/record` print one `recorded: {json}` line
//! per request (method, target, headers as `[name, value]` pairs, body as text).

use std::time::Duration;

use serde_json::Value;

use super::python_peer::PythonPeer;
use super::tools::wait_until;

/// How long a request may take to reach the origin's output after the client has
/// its answer.
const RECORD_WAIT: Duration = Duration::from_secs(20);

/// What the origin received so far, one JSON object per request.
pub fn recorded(origin: &PythonPeer) -> Vec<Value> {
    origin
        .stdout
        .lines()
        .iter()
        .filter_map(|l| l.strip_prefix("recorded: "))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// What the origin received, once it has printed at least `count` requests (its
/// output reaches the test a moment after the client has its answer).
#[track_caller]
pub fn recorded_at_least(origin: &PythonPeer, count: usize) -> Vec<Value> {
    wait_until(RECORD_WAIT, || recorded(origin).len() >= count);
    recorded(origin)
}

/// A header of a recorded request (the name in any case).
pub fn recorded_header<'a>(recorded: &'a Value, name: &str) -> Option<&'a str> {
    recorded["headers"]
        .as_array()?
        .iter()
        .find(|h| h[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
        .and_then(|h| h[1].as_str())
}
