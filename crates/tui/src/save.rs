//! `w`: the shown flows written to a new session file, or to a HAR 1.2 file when
//! the name ends in `.har`. Runs on a thread of its own (a session may hold
//! gigabytes) and streams: one flow in memory at a time.

use std::fs::File;
use std::io::BufWriter;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use periscope_flow::filter::Filter;
use periscope_flow::har::HarWriter;
use periscope_flow::store::FlowStore;
use periscope_flow::Flow;

/// Flows written per transaction of the new session.
const BATCH: usize = 256;

/// What a save wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Saved {
    pub path: PathBuf,
    pub flows: usize,
    pub har: bool,
}

/// Whether `path` names a HAR file (by its extension).
pub fn is_har(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("har"))
}

/// `~/x` and `~` are the home directory, as in a shell.
pub fn expand_home(input: &str) -> PathBuf {
    let home = std::env::var_os("HOME");
    match (input.strip_prefix('~'), home) {
        (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with('/') => {
            PathBuf::from(home).join(rest.trim_start_matches('/'))
        }
        _ => PathBuf::from(input),
    }
}

/// Writes the flows of `store` that match `filter` to `path` (replacing it), as HAR
/// when the name ends in `.har`, else as a session file `periscope -r` opens.
pub fn save(
    store: &FlowStore,
    filter: Option<&Filter>,
    path: &Path,
    version: &str,
) -> Result<Saved, String> {
    if same_file(store.path(), path) {
        return Err(format!(
            "{} is this session's own file: choose another name",
            path.display()
        ));
    }
    let har = is_har(path);
    let flows = if har {
        write_har(store, filter, path, version)?
    } else {
        write_session(store, filter, path)?
    };
    Ok(Saved {
        path: path.to_owned(),
        flows,
        har,
    })
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn write_har(
    store: &FlowStore,
    filter: Option<&Filter>,
    path: &Path,
    version: &str,
) -> Result<usize, String> {
    let cannot = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let file = File::create(path).map_err(cannot)?;
    let mut writer = HarWriter::new(BufWriter::new(file), version).map_err(cannot)?;
    let mut failure = None;
    store
        .try_for_each(filter, |flow| match writer.write_flow(&flow) {
            Ok(()) => ControlFlow::Continue(()),
            Err(error) => {
                failure = Some(error);
                ControlFlow::Break(())
            }
        })
        .map_err(|e| e.to_string())?;
    if let Some(error) = failure {
        return Err(cannot(error));
    }
    let written = writer.entries();
    writer.finish().map_err(cannot)?;
    Ok(written)
}

fn write_session(store: &FlowStore, filter: Option<&Filter>, path: &Path) -> Result<usize, String> {
    remove_session_files(path).map_err(|e| format!("cannot replace {}: {e}", path.display()))?;
    let target = FlowStore::open(path).map_err(|e| e.to_string())?;
    copy_flows(store, &target, filter)
}

/// Copies the flows of `from` that match `filter` into `to`, in batches; returns
/// how many. The console's `w` and `-r A -w B` both use it.
pub fn copy_flows(
    from: &FlowStore,
    to: &FlowStore,
    filter: Option<&Filter>,
) -> Result<usize, String> {
    let mut batch: Vec<Arc<Flow>> = Vec::with_capacity(BATCH);
    let mut written = 0;
    let mut failure = None;
    from.try_for_each(filter, |flow| {
        batch.push(Arc::new(flow));
        if batch.len() == BATCH {
            if let Err(error) = to.insert_many(&batch) {
                failure = Some(error.to_string());
                return ControlFlow::Break(());
            }
            written += batch.len();
            batch.clear();
        }
        ControlFlow::Continue(())
    })
    .map_err(|e| e.to_string())?;
    if let Some(error) = failure {
        return Err(error);
    }
    if !batch.is_empty() {
        to.insert_many(&batch).map_err(|e| e.to_string())?;
        written += batch.len();
    }
    Ok(written)
}

/// Removes a session file and its SQLite companions, if present.
fn remove_session_files(path: &Path) -> std::io::Result<()> {
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        match std::fs::remove_file(&name) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    fn store_with(n: usize) -> FlowStore {
        let store = FlowStore::temporary().unwrap();
        for i in 0..n {
            let status = if i % 2 == 0 { 200 } else { 400 };
            store
                .insert(&fixtures::flow_at(
                    "GET",
                    "a",
                    &format!("/{i}"),
                    Some(status),
                    i as i64,
                ))
                .unwrap();
        }
        store
    }

    #[test]
    fn saves_the_filtered_flows_as_a_new_session() {
        let store = store_with(600);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.periscope");
        std::fs::write(&path, b"old contents").unwrap();
        let filter = Filter::parse("~c 400").unwrap();
        let saved = save(&store, Some(&filter), &path, "test").unwrap();
        assert_eq!(saved.flows, 300);
        assert!(!saved.har);
        let reopened = FlowStore::open(&path).unwrap();
        assert_eq!(reopened.count(None).unwrap(), 300);
    }

    #[test]
    fn saves_har_when_the_name_says_so() {
        let store = store_with(3);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.HAR");
        let saved = save(&store, None, &path, "test").unwrap();
        assert!(saved.har);
        let har: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(har["log"]["entries"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn refuses_to_overwrite_its_own_session() {
        let store = store_with(1);
        let error = save(&store, None, store.path(), "test").unwrap_err();
        assert!(error.contains("own file"), "{error}");
    }

    #[test]
    fn home_is_expanded() {
        let home = std::env::var("HOME").unwrap_or_default();
        if !home.is_empty() {
            assert_eq!(expand_home("~/x.har"), PathBuf::from(&home).join("x.har"));
        }
        assert_eq!(expand_home("/tmp/~x"), PathBuf::from("/tmp/~x"));
    }
}
