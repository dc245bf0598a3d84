//! The session store: every flow of a session in one SQLite file, so memory stays
//! flat however long the proxy runs and a killed process loses nothing it had
//! committed.
//!
//! ```
//! use periscope_flow::store::FlowStore;
//!
//! let store = FlowStore::temporary()?; // removed when dropped
//! assert_eq!(store.count(None)?, 0);
//! let filter = periscope_flow::filter::Filter::parse("~d example.com")?;
//! assert!(store.summaries(Some(&filter), 0, 50)?.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Layout
//!
//! The file is SQLite in WAL mode with `synchronous=NORMAL`: a commit is in the
//! write-ahead log before [`FlowStore::insert_many`] returns, so a crash or a
//! `kill -9` of Periscope loses nothing committed (only an OS crash or power loss
//! can lose the last commits). A temporary session runs `synchronous=OFF`: it ends
//! with its process, and the next Periscope removes it if that was a kill (see
//! [`crate::scratch`]). Each flow is three rows:
//!
//! - `flows`: what the flow list shows and what cheap filters read (method, host,
//!   status, addresses, flags, the user's annotations), indexed by time;
//! - `flow_heads`: the flow as JSON with empty bodies;
//! - `flow_bodies`: the recorded request and response bodies as BLOBs.
//!
//! A flow the user has edited ([`FlowStore::replace_edited`]) has a fourth row, in
//! `flow_originals`: its JSON and bodies as recorded, until [`FlowStore::revert`].
//! The mark and the comment are changed in their `flows` columns alone, which are
//! the truth when the JSON says otherwise.
//!
//! # Filtering
//!
//! A filter is evaluated with [`Filter::matches`] on the least each flow needs
//! (see `plan.rs`): a flow rebuilt from the `flows` columns for `~d`, `~m`, `~u`,
//! `~c`, `~q`, `~s`, `~e`, `~marked`, `~comment`, `~replay`, `~replayq`, `~src` and
//! `~dst`; the JSON without bodies for header, content-type and TLS filters; the
//! whole flow for `~b`, `~bq`, `~bs`.
//!
//! The file is created with mode 0600 (SQLite gives its `-wal` and `-shm` files the
//! same mode): flows hold cookies and credentials.

mod head;
mod plan;
mod schema;

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::io;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use rusqlite::types::{ToSql, Value};
use rusqlite::{
    params, CachedStatement, Connection, ErrorCode, OpenFlags, OptionalExtension, Row, Transaction,
};
use serde::{Deserialize, Serialize};

use crate::events::{LogEntry, LogLevel};
use crate::filter::Filter;
use crate::model::{Annotations, Flow, FlowId, Timestamp};
use crate::scratch::ScratchDir;
use plan::{Columns, Need};

/// How long a statement waits for another connection's lock (another Periscope
/// process on the same file, or a checkpoint) before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Idle read connections kept for reuse; more may exist while busy.
const MAX_IDLE_READERS: usize = 4;

/// The page size of new session files.
const PAGE_SIZE: i64 = 32768;

/// The current layout version of session files this build writes.
pub const SCHEMA_VERSION: i64 = schema::MIGRATIONS.len() as i64;

/// Why the store could not do what was asked. Every variant names the session file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The file could not be created or opened (permissions, a directory, ...).
    #[error("cannot open session file {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file exists but holds something else.
    #[error("{} is not a Periscope session: {reason}", path.display())]
    NotASession { path: PathBuf, reason: String },
    /// The file was written by a newer Periscope, whose layout this build cannot read.
    #[error(
        "{} was written by a newer Periscope (session format {found}; this version reads up to {supported})",
        path.display()
    )]
    NewerFormat {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    /// The disk (or the file system's quota) is full: nothing more can be saved
    /// until space is freed. What was committed before is intact.
    #[error(
        "cannot {operation} in session file {}: the disk is full; free some space or save the session on another disk",
        path.display()
    )]
    DiskFull {
        path: PathBuf,
        operation: &'static str,
    },
    /// A stored flow could not be decoded (the file was damaged or edited).
    #[error("session file {}: flow {id} cannot be read back: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        id: String,
        reason: String,
    },
    /// A flow could not be encoded for storage.
    #[error("session file {}: flow {id} cannot be saved: {reason}", path.display())]
    Encode {
        path: PathBuf,
        id: FlowId,
        reason: String,
    },
    /// Any other database failure, with the operation that hit it.
    #[error("session file {}: cannot {operation}: {source}", path.display())]
    Database {
        path: PathBuf,
        operation: &'static str,
        #[source]
        source: rusqlite::Error,
    },
}

/// What the flow list shows for one flow, read from the index columns alone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowSummary {
    pub id: FlowId,
    pub started_at: Option<Timestamp>,
    pub method: String,
    pub scheme: String,
    pub host: String,
    pub port: u16,
    pub path: String,
    /// `None` while the flow has no response.
    pub status: Option<u16>,
    /// Response body bytes that passed through the proxy.
    pub response_size: Option<u64>,
    pub duration_ms: Option<f64>,
    pub has_tls_events: bool,
    pub has_renegotiation: bool,
    pub has_error: bool,
    pub marked: bool,
    /// The response's `Content-Type`.
    pub content_type: Option<String>,
    /// The user wrote a comment on the flow.
    pub has_comment: bool,
    /// The user changed the flow; [`FlowStore::revert`] puts back what was recorded.
    pub modified: bool,
    /// The flow is a replay of that one.
    pub replay_of: Option<FlowId>,
    /// The flow is a copy of that one.
    pub duplicate_of: Option<FlowId>,
}

impl FlowSummary {
    /// The summary of a flow in memory, equal to what the store returns for it.
    pub fn of(flow: &Flow) -> FlowSummary {
        let response = flow.response.as_ref();
        FlowSummary {
            id: flow.id,
            started_at: flow.started_at(),
            method: flow.request.method.clone(),
            scheme: flow.request.scheme.clone(),
            host: flow.request.host.clone(),
            port: flow.request.port,
            path: flow.request.path.clone(),
            status: response.map(|r| r.status),
            response_size: response.map(|r| r.body.size),
            duration_ms: flow.duration_millis(),
            has_tls_events: flow.timeline.has_tls_events(),
            has_renegotiation: flow.timeline.has_renegotiation(),
            has_error: flow.error.is_some(),
            marked: flow.marked,
            content_type: response
                .and_then(|r| r.headers.get_str("content-type"))
                .map(Cow::into_owned),
            has_comment: !flow.annotations.comment.is_empty(),
            modified: flow.annotations.modified,
            replay_of: flow.annotations.replay_of,
            duplicate_of: flow.annotations.duplicate_of,
        }
    }
}

/// What a flow list is sorted by (the columns of mitmweb's list).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SortBy {
    /// The first request byte (the order flows happened in).
    #[default]
    Time,
    Method,
    /// Scheme, host, port and path: the URL.
    Url,
    Status,
    /// Response body bytes.
    Size,
    Duration,
    /// Flows with TLS events first when descending.
    Tls,
}

impl SortBy {
    /// Parses a column name as the API takes it (`time`, `method`, `url`, `status`,
    /// `size`, `duration`, `tls`).
    pub fn parse(text: &str) -> Option<SortBy> {
        serde_json::from_value(serde_json::Value::String(text.to_owned())).ok()
    }

    fn column(self) -> &'static str {
        match self {
            SortBy::Time => "f.sort_key",
            SortBy::Method => "f.method",
            SortBy::Url => "f.scheme, f.host, f.port, f.path",
            SortBy::Status => "f.status",
            SortBy::Size => "f.response_size",
            SortBy::Duration => "f.duration_ms",
            SortBy::Tls => "f.has_tls_events",
        }
    }

    /// The order SQLite gives [`SortBy::column`] ascending: NULL first.
    fn compare(self, a: &FlowSummary, b: &FlowSummary) -> std::cmp::Ordering {
        match self {
            SortBy::Time => std::cmp::Ordering::Equal,
            SortBy::Method => a.method.cmp(&b.method),
            SortBy::Url => {
                (&a.scheme, &a.host, a.port, &a.path).cmp(&(&b.scheme, &b.host, b.port, &b.path))
            }
            SortBy::Status => a.status.cmp(&b.status),
            SortBy::Size => a.response_size.cmp(&b.response_size),
            SortBy::Duration => a
                .duration_ms
                .partial_cmp(&b.duration_ms)
                .unwrap_or(std::cmp::Ordering::Equal),
            SortBy::Tls => a.has_tls_events.cmp(&b.has_tls_events),
        }
    }
}

/// A column and a direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListOrder {
    pub by: SortBy,
    pub descending: bool,
}

/// A session's flows and event log in an SQLite file.
///
/// Cheap to share in an `Arc` and usable from any thread: writes go through one
/// connection, reads through a small pool of others, and in WAL mode readers never
/// wait for the writer (a long export does not stall recording).
pub struct FlowStore {
    // Field order is drop order: the connections close before a temporary
    // directory is removed.
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    path: PathBuf,
    _temporary: Option<ScratchDir>,
    /// The shared hold on the scratch directory of a session opened to be read.
    _reading: Option<std::fs::File>,
}

impl fmt::Debug for FlowStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlowStore")
            .field("path", &self.path)
            .field("temporary", &self._temporary.is_some())
            .finish()
    }
}

/// What the directory of a temporary session is called, before its random part.
const TEMPORARY_PREFIX: &str = "periscope-session-";

impl FlowStore {
    /// Opens the session at `path`, creating it (mode 0600) if it does not exist and
    /// upgrading an older layout.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, schema::MIGRATIONS, None)
    }

    /// Opens a saved session (`dump -r`, `export`): as [`FlowStore::open`], but a
    /// file that does not exist is an error rather than a new, empty session.
    /// A killed proxy's temporary session opened this way is not reclaimed while
    /// the store is open.
    pub fn open_existing(path: &Path) -> Result<Self, StoreError> {
        std::fs::File::open(path).map_err(|source| open_error(path, source))?;
        let mut store = Self::open(path)?;
        store._reading = crate::scratch::hold_shared(path);
        Ok(store)
    }

    /// A session in a new temporary directory, removed with everything in it when
    /// the store is dropped: the session Periscope records to when no file is given.
    /// The directory is under `$TMPDIR` (or `/tmp`); the temporary sessions that
    /// killed processes left there are removed (see [`crate::scratch`]).
    pub fn temporary() -> Result<Self, StoreError> {
        let dir = ScratchDir::create(TEMPORARY_PREFIX)
            .map_err(|source| open_error(&std::env::temp_dir(), source))?;
        let path = dir.path().join("session.periscope");
        Self::open_with(&path, schema::MIGRATIONS, Some(dir))
    }

    fn open_with(
        path: &Path,
        migrations: &[schema::Migration],
        temporary: Option<ScratchDir>,
    ) -> Result<Self, StoreError> {
        create_private_file(path).map_err(|source| open_error(path, source))?;
        let opening = |operation, source| classify(path, operation, source);
        let mut writer = connect(path).map_err(|e| opening("open the database", e))?;
        if std::fs::metadata(path).is_ok_and(|m| m.len() == 0) {
            // Before anything is written. Larger pages pack flows' bodies and heads
            // with less waste and write the log in fewer, larger frames: 8 KiB pages
            // against 4 KiB made files 30% smaller and inserts 35% faster; 32 KiB
            // against 8 KiB, 22% smaller files, 18% faster writes of 100,000 flows,
            // the writer's CPU per proxied request 16.5 -> 15.1 µs, open and filter
            // times within their noise; the web UI's first paint on 100,000 flows
            // leans ~0.1 s slower, unexplained (bench/RESULTS.md, "Session pages of
            // 32 KiB"). An older file keeps its page size.
            writer
                .pragma_update(None, "page_size", PAGE_SIZE)
                .map_err(|e| opening("set the page size", e))?;
        }
        schema::migrate(&mut writer, migrations).map_err(|error| match error {
            schema::SchemaError::Foreign(reason) => StoreError::NotASession {
                path: path.to_owned(),
                reason,
            },
            schema::SchemaError::Newer { found, supported } => StoreError::NewerFormat {
                path: path.to_owned(),
                found,
                supported,
            },
            schema::SchemaError::Sqlite(e)
                if e.sqlite_error_code() == Some(ErrorCode::NotADatabase) =>
            {
                StoreError::NotASession {
                    path: path.to_owned(),
                    reason: "it is not an SQLite database".to_owned(),
                }
            }
            schema::SchemaError::Sqlite(e) => opening("read the session format", e),
        })?;
        // Only now that the file is known to be ours: WAL is recorded in the file.
        let mode: String = writer
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(|e| opening("switch to WAL mode", e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Database {
                path: path.to_owned(),
                operation: "switch to WAL mode",
                source: rusqlite::Error::InvalidQuery,
            });
        }
        if temporary.is_some() {
            // A temporary session ends with its process and nothing reads it after a
            // power cut (the next start removes it), so the fsyncs of its
            // checkpoints buy nothing; a process crash still loses no commit.
            writer
                .pragma_update(None, "synchronous", "OFF")
                .map_err(|e| opening("set the sync mode", e))?;
        }
        Ok(FlowStore {
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
            path: path.to_owned(),
            _temporary: temporary,
            _reading: None,
        })
    }

    /// The session file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Saves `flow`, replacing a stored flow with the same id (the proxy saves a
    /// WebSocket flow again when it closes). What the user did in the store stays: a
    /// flow marked there stays marked (unmark with [`FlowStore::set_marked`]), its
    /// comment stays unless `flow` has one, and an edited flow keeps the edit while
    /// `flow` replaces the recorded version that [`FlowStore::revert`] puts back.
    pub fn insert(&self, flow: &Flow) -> Result<(), StoreError> {
        self.insert_rows(vec![self.encode(flow)?])
    }

    /// Saves `flows` in one transaction: all or none.
    pub fn insert_many(&self, flows: &[Arc<Flow>]) -> Result<(), StoreError> {
        let rows = flows
            .iter()
            .map(|flow| self.encode(flow))
            .collect::<Result<Vec<_>, _>>()?;
        self.insert_rows(rows)
    }

    fn encode(&self, flow: &Flow) -> Result<FlowRow, StoreError> {
        FlowRow::new(flow).map_err(|e| StoreError::Encode {
            path: self.path.clone(),
            id: flow.id,
            reason: e.to_string(),
        })
    }

    fn insert_rows(&self, rows: Vec<FlowRow>) -> Result<(), StoreError> {
        const OPERATION: &str = "save flows";
        let fail = |e| self.error(OPERATION, e);
        let mut conn = self.writer();
        let tx = conn.transaction().map_err(fail)?;
        {
            let mut inserts = Inserts::prepare(&tx).map_err(fail)?;
            for row in &rows {
                match inserts.insert(&tx, row) {
                    Ok(()) => {}
                    Err(error) if is_unique_violation(&error) => {
                        update_recorded(&tx, row).map_err(fail)?;
                    }
                    Err(error) => return Err(fail(error)),
                }
            }
        }
        tx.commit().map_err(fail)
    }

    /// The flow with this id, bodies included.
    pub fn get(&self, id: FlowId) -> Result<Option<Flow>, StoreError> {
        const OPERATION: &str = "read a flow";
        self.with_reader(OPERATION, |conn| self.load(conn, OPERATION, LOAD_FLOW, id))
    }

    /// What was recorded of a flow the user has edited since
    /// ([`FlowStore::replace_edited`]), with the flow's current mark and comment: it
    /// differs from the flow by the edit alone. `None` if the flow was not edited in
    /// this session, or there is no such flow.
    pub fn original(&self, id: FlowId) -> Result<Option<Flow>, StoreError> {
        const OPERATION: &str = "read the recorded version of a flow";
        self.with_reader(OPERATION, |conn| {
            self.load(conn, OPERATION, LOAD_ORIGINAL, id)
        })
    }

    /// Writes `flow`, changed by the user, over the stored flow with its id, and
    /// returns it as stored: with [`Annotations::modified`](crate::Annotations) set.
    /// The first edit keeps the flow as it was, for [`FlowStore::original`] and
    /// [`FlowStore::revert`]; later edits replace only the edit. Everything is taken
    /// from `flow`, its mark and comment too. `None` (and nothing written) if there
    /// is no such flow.
    pub fn replace_edited(&self, flow: &Flow) -> Result<Option<Flow>, StoreError> {
        const OPERATION: &str = "save an edited flow";
        let fail = |e| self.error(OPERATION, e);
        let mut edited = flow.clone();
        edited.annotations.modified = true;
        // As `get` returns it: the store keeps no intercept state.
        edited.intercepted = None;
        let row = self.encode(&edited)?;
        let mut conn = self.writer();
        let tx = conn.transaction().map_err(fail)?;
        let Some(seq) = seq_of(&tx, flow.id).map_err(fail)? else {
            return Ok(None);
        };
        tx.prepare_cached(
            "INSERT INTO flow_originals (seq, head, request, response)
             SELECT h.seq, h.head, b.request, b.response
             FROM flow_heads h JOIN flow_bodies b ON b.seq = h.seq
             WHERE h.seq = ?1
             ON CONFLICT (seq) DO NOTHING",
        )
        .and_then(|mut keep| keep.execute([seq]))
        .map_err(fail)?;
        overwrite(&tx, seq, &row).map_err(fail)?;
        tx.commit().map_err(fail)?;
        Ok(Some(edited))
    }

    /// Puts back what was recorded before the flow was first edited and forgets the
    /// kept copy; the flow's mark and comment stay as they are now (they are the
    /// user's, not the recording's). Returns the flow as it now is, unchanged if it
    /// was never edited; `None` if there is no such flow.
    pub fn revert(&self, id: FlowId) -> Result<Option<Flow>, StoreError> {
        const OPERATION: &str = "revert a flow";
        let fail = |e| self.error(OPERATION, e);
        let mut conn = self.writer();
        let tx = conn.transaction().map_err(fail)?;
        let Some(seq) = seq_of(&tx, id).map_err(fail)? else {
            return Ok(None);
        };
        let Some(original) = self.load(&tx, OPERATION, LOAD_ORIGINAL, id)? else {
            // Never edited: there is nothing to put back.
            return self.load(&tx, OPERATION, LOAD_FLOW, id);
        };
        let row = self.encode(&original)?;
        overwrite(&tx, seq, &row).map_err(fail)?;
        tx.execute("DELETE FROM flow_originals WHERE seq = ?1", [seq])
            .map_err(fail)?;
        tx.commit().map_err(fail)?;
        Ok(Some(original))
    }

    /// Saves a copy of a flow as a new flow, and returns it: a new (time-ordered) id,
    /// [`Annotations::duplicate_of`](crate::Annotations) naming the flow copied, and
    /// not modified (there is nothing to revert it to); everything else, mark and
    /// comment included, as the flow is now. It has the flow's start time, so lists
    /// show it right after the flow (and any earlier copy). `None` if there is no
    /// such flow.
    pub fn duplicate(&self, id: FlowId) -> Result<Option<Flow>, StoreError> {
        const OPERATION: &str = "duplicate a flow";
        let fail = |e| self.error(OPERATION, e);
        let mut conn = self.writer();
        let tx = conn.transaction().map_err(fail)?;
        let Some(mut copy) = self.load(&tx, OPERATION, LOAD_FLOW, id)? else {
            return Ok(None);
        };
        copy.id = FlowId::new();
        copy.annotations.duplicate_of = Some(id);
        copy.annotations.modified = false;
        let row = self.encode(&copy)?;
        Inserts::prepare(&tx)
            .and_then(|mut inserts| inserts.insert(&tx, &row))
            .map_err(fail)?;
        tx.commit().map_err(fail)?;
        Ok(Some(copy))
    }

    /// The flow `sql` selects by id as (marked, comment, head, request, response).
    fn load(
        &self,
        conn: &Connection,
        operation: &'static str,
        sql: &str,
        id: FlowId,
    ) -> Result<Option<Flow>, StoreError> {
        let fail = |e| self.error(operation, e);
        let mut stmt = conn.prepare_cached(sql).map_err(fail)?;
        let mut rows = stmt.query([id.0.as_bytes()]).map_err(fail)?;
        let Some(row) = rows.next().map_err(fail)? else {
            return Ok(None);
        };
        let decoded = (|| {
            let marks = UserMarks {
                marked: row.get(0)?,
                comment: row.get_ref(1)?.as_str()?,
            };
            let head = row.get_ref(2)?.as_str()?;
            let request = row.get_ref(3)?.as_blob()?;
            let response = row.get_ref(4)?.as_blob_or_null()?;
            Ok::<_, rusqlite::Error>(decode_flow(head, marks, request, response))
        })();
        match decoded {
            Ok(Ok(flow)) => Ok(Some(flow)),
            Ok(Err(reason)) => Err(self.corrupt(id.to_string(), reason)),
            Err(e) => Err(self.corrupt(id.to_string(), e.to_string())),
        }
    }

    /// One page of the flows that match `filter`, in time order.
    pub fn summaries(
        &self,
        filter: Option<&Filter>,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<FlowSummary>, StoreError> {
        self.summaries_in_time_order(filter, offset, limit, &HashSet::new())
    }

    /// [`FlowStore::summaries`] without the flows in `except`, left out before the
    /// page is cut.
    fn summaries_in_time_order(
        &self,
        filter: Option<&Filter>,
        offset: usize,
        limit: usize,
        except: &HashSet<FlowId>,
    ) -> Result<Vec<FlowSummary>, StoreError> {
        const OPERATION: &str = "list flows";
        let mut page = Vec::with_capacity(limit.min(1024));
        if limit == 0 {
            return Ok(page);
        }
        if filter.is_none() {
            // Let SQLite skip the offset on the index, without reading rows.
            return self.summary_page(OPERATION, "f.sort_key, f.seq", offset, limit, except);
        }
        let mut skip = offset;
        self.scan(OPERATION, filter, Need::Columns, |row, _| {
            if !except.is_empty()
                && except.contains(&read_id(row).map_err(|e| self.error(OPERATION, e))?)
            {
                return Ok(ControlFlow::Continue(()));
            }
            if skip > 0 {
                skip -= 1;
                return Ok(ControlFlow::Continue(()));
            }
            page.push(read_summary(row).map_err(|e| self.error(OPERATION, e))?);
            Ok(if page.len() == limit {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            })
        })?;
        Ok(page)
    }

    /// One page of the flows that match `filter`, in the order `order` says (ties in
    /// time order), leaving out the flows in `except` (those a caller lists on its own,
    /// such as the flows in flight) before the page is cut, so that pages neither skip
    /// nor repeat a flow. Time ascending reads only up to the page; another order reads
    /// every match: without a filter SQLite sorts the index columns, with one the
    /// matches are sorted in memory (a summary is a few hundred bytes).
    pub fn summaries_sorted(
        &self,
        filter: Option<&Filter>,
        order: ListOrder,
        offset: usize,
        limit: usize,
        except: &HashSet<FlowId>,
    ) -> Result<Vec<FlowSummary>, StoreError> {
        const OPERATION: &str = "list sorted flows";
        if order == ListOrder::default() {
            return self.summaries_in_time_order(filter, offset, limit, except);
        }
        if limit == 0 {
            return Ok(Vec::new());
        }
        if filter.is_none() {
            let direction = if order.descending { "DESC" } else { "ASC" };
            let column = order.by.column();
            let order_by =
                format!("{column} {direction}, f.sort_key {direction}, f.seq {direction}");
            return self.summary_page(OPERATION, &order_by, offset, limit, except);
        }
        let mut all = self.summaries_in_time_order(filter, 0, usize::MAX, except)?;
        // Stable: equal keys keep time order.
        all.sort_by(|a, b| order.by.compare(a, b));
        if order.descending {
            all.reverse();
        }
        Ok(all.into_iter().skip(offset).take(limit).collect())
    }

    /// How many flows match `filter` (all flows for `None`).
    pub fn count(&self, filter: Option<&Filter>) -> Result<usize, StoreError> {
        const OPERATION: &str = "count flows";
        if filter.is_none() {
            return self.with_reader(OPERATION, |conn| {
                conn.query_row("SELECT count(*) FROM flows", [], |r| r.get::<_, i64>(0))
                    .map(|n| n as usize)
                    .map_err(|e| self.error(OPERATION, e))
            });
        }
        let mut count = 0;
        self.scan(OPERATION, filter, Need::Columns, |_, _| {
            count += 1;
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(count)
    }

    /// [`FlowStore::count`] without the flows in `except` (the flows a caller counts
    /// on its own, such as those in flight), read in one statement so that a flow
    /// saved meanwhile is counted once, by one side or the other.
    pub fn count_except(
        &self,
        filter: Option<&Filter>,
        except: &HashSet<FlowId>,
    ) -> Result<usize, StoreError> {
        const OPERATION: &str = "count flows";
        if except.is_empty() {
            return self.count(filter);
        }
        if filter.is_none() {
            return self.with_reader(OPERATION, |conn| {
                let (excluded, ids) = excluding(except);
                let sql = format!("SELECT count(*) FROM flows f {excluded}");
                conn.query_row(&sql, rusqlite::params_from_iter(ids), |r| {
                    r.get::<_, i64>(0)
                })
                .map(|n| n as usize)
                .map_err(|e| self.error(OPERATION, e))
            });
        }
        let mut count = 0;
        self.scan(OPERATION, filter, Need::Columns, |row, _| {
            if !except.contains(&read_id(row).map_err(|e| self.error(OPERATION, e))?) {
                count += 1;
            }
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(count)
    }

    /// The ids of the flows that match `filter`, in time order.
    pub fn ids(&self, filter: Option<&Filter>) -> Result<Vec<FlowId>, StoreError> {
        const OPERATION: &str = "list flow ids";
        let mut ids = Vec::new();
        self.scan(OPERATION, filter, Need::Columns, |row, _| {
            ids.push(read_id(row).map_err(|e| self.error(OPERATION, e))?);
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(ids)
    }

    /// Calls `f` with each flow that matches `filter`, bodies included, in time
    /// order, one at a time: a session of any size streams in constant memory.
    pub fn for_each(
        &self,
        filter: Option<&Filter>,
        mut f: impl FnMut(Flow),
    ) -> Result<(), StoreError> {
        self.try_for_each(filter, |flow| {
            f(flow);
            ControlFlow::Continue(())
        })
    }

    /// [`FlowStore::for_each`] that `f` can stop early (an export whose output
    /// failed, a dump that printed enough).
    pub fn try_for_each(
        &self,
        filter: Option<&Filter>,
        mut f: impl FnMut(Flow) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        self.scan("read flows", filter, Need::Bodies, |_, flow| {
            Ok(match flow {
                Some(flow) => f(flow),
                None => ControlFlow::Continue(()),
            })
        })
    }

    /// Marks or unmarks a flow; false if there is no such flow.
    pub fn set_marked(&self, id: FlowId, marked: bool) -> Result<bool, StoreError> {
        let changed = self
            .writer()
            .prepare_cached("UPDATE flows SET marked = ?1 WHERE id = ?2")
            .and_then(|mut stmt| stmt.execute(params![marked, id.0.as_bytes()]))
            .map_err(|e| self.error("mark a flow", e))?;
        Ok(changed > 0)
    }

    /// Sets a flow's comment (empty: none); false if there is no such flow.
    pub fn set_comment(&self, id: FlowId, comment: &str) -> Result<bool, StoreError> {
        let changed = self
            .writer()
            .prepare_cached("UPDATE flows SET comment = ?1 WHERE id = ?2")
            .and_then(|mut stmt| stmt.execute(params![comment, id.0.as_bytes()]))
            .map_err(|e| self.error("comment on a flow", e))?;
        Ok(changed > 0)
    }

    /// Deletes a flow; false if there was no such flow.
    pub fn delete(&self, id: FlowId) -> Result<bool, StoreError> {
        let fail = |e| self.error("delete a flow", e);
        let mut conn = self.writer();
        let tx = conn.transaction().map_err(fail)?;
        let seq: Option<i64> = tx
            .query_row(
                "DELETE FROM flows WHERE id = ?1 RETURNING seq",
                [id.0.as_bytes()],
                |r| r.get(0),
            )
            .optional()
            .map_err(fail)?;
        if let Some(seq) = seq {
            tx.execute("DELETE FROM flow_heads WHERE seq = ?1", [seq])
                .map_err(fail)?;
            tx.execute("DELETE FROM flow_bodies WHERE seq = ?1", [seq])
                .map_err(fail)?;
            tx.execute("DELETE FROM flow_originals WHERE seq = ?1", [seq])
                .map_err(fail)?;
        }
        tx.commit().map_err(fail)?;
        Ok(seq.is_some())
    }

    /// Deletes every flow. The event log stays.
    pub fn clear(&self) -> Result<(), StoreError> {
        self.writer()
            .execute_batch(
                "BEGIN;
                 DELETE FROM flows;
                 DELETE FROM flow_heads;
                 DELETE FROM flow_bodies;
                 DELETE FROM flow_originals;
                 COMMIT;",
            )
            .map_err(|e| self.error("clear the flows", e))
    }

    /// Appends an entry to the session's event log.
    pub fn append_log(&self, entry: &LogEntry) -> Result<(), StoreError> {
        self.writer()
            .prepare_cached("INSERT INTO event_log (at, level, message) VALUES (?1, ?2, ?3)")
            .and_then(|mut stmt| {
                stmt.execute(params![entry.at.0, level_name(entry.level), entry.message])
            })
            .map(drop)
            .map_err(|e| self.error("save a log entry", e))
    }

    /// The last `limit` log entries, oldest first.
    pub fn log_entries(&self, limit: usize) -> Result<Vec<LogEntry>, StoreError> {
        const OPERATION: &str = "read the event log";
        self.with_reader(OPERATION, |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT at, level, message FROM
                       (SELECT seq, at, level, message FROM event_log ORDER BY seq DESC LIMIT ?1)
                     ORDER BY seq",
                )
                .map_err(|e| self.error(OPERATION, e))?;
            let rows = stmt
                .query_map([saturating_i64(limit)], |row| {
                    let level: String = row.get(1)?;
                    Ok(LogEntry {
                        at: Timestamp(row.get(0)?),
                        level: level_from_name(&level),
                        message: row.get(2)?,
                    })
                })
                .map_err(|e| self.error(OPERATION, e))?;
            rows.map(|row| row.map_err(|e| self.error(OPERATION, e)))
                .collect()
        })
    }

    /// Walks the flows in time order, calling `visit` with each row that matches
    /// `filter` and, when `load` asks for more than the columns (or the filter
    /// needed a flow), the flow loaded up to `load`.
    fn scan(
        &self,
        operation: &'static str,
        filter: Option<&Filter>,
        load: Need,
        mut visit: impl FnMut(&Row<'_>, Option<Flow>) -> Result<ControlFlow<()>, StoreError>,
    ) -> Result<(), StoreError> {
        // Read what the filter needs for every row, and anything more only for the
        // rows it lets through.
        let first = filter.map_or(load, plan::need);
        self.with_reader(operation, |conn| {
            let fail = |e| self.error(operation, e);
            let sql = scan_sql(first);
            let mut stmt = conn.prepare_cached(&sql).map_err(fail)?;
            let mut rows = stmt.query([]).map_err(fail)?;
            while let Some(row) = rows.next().map_err(fail)? {
                let flow = match (first, filter) {
                    (Need::Columns, None) => None,
                    (Need::Columns, Some(_)) => Some(read_columns(row).map_err(fail)?.skeleton()),
                    (Need::Head | Need::Bodies, _) => Some(self.read_row_flow(row, first)?),
                };
                if let (Some(filter), Some(flow)) = (filter, &flow) {
                    if !filter.matches(flow) {
                        continue;
                    }
                }
                let flow = if load > first {
                    Some(self.load_rest(conn, row, first, flow)?)
                } else {
                    flow
                };
                if visit(row, flow)?.is_break() {
                    break;
                }
            }
            Ok(())
        })
    }

    /// The flow from a scan row that carries its head (and bodies, for `Bodies`).
    fn read_row_flow(&self, row: &Row<'_>, need: Need) -> Result<Flow, StoreError> {
        let decoded = (|| {
            let marks = scan_user_marks(row)?;
            let head = row.get_ref(SCAN_COLUMN_COUNT)?.as_str()?;
            let (request, response) = if need == Need::Bodies {
                (
                    row.get_ref(SCAN_COLUMN_COUNT + 1)?.as_blob()?,
                    row.get_ref(SCAN_COLUMN_COUNT + 2)?.as_blob_or_null()?,
                )
            } else {
                (&[][..], None)
            };
            Ok::<_, rusqlite::Error>(decode_flow(head, marks, request, response))
        })();
        match decoded {
            Ok(Ok(flow)) => Ok(flow),
            Ok(Err(reason)) => Err(self.corrupt(row_id_text(row), reason)),
            Err(e) => Err(self.corrupt(row_id_text(row), e.to_string())),
        }
    }

    /// Loads the parts of a matching flow that the filter did not need.
    fn load_rest(
        &self,
        conn: &Connection,
        row: &Row<'_>,
        loaded: Need,
        flow: Option<Flow>,
    ) -> Result<Flow, StoreError> {
        let fail = |e| self.error("read a flow", e);
        let seq: i64 = row.get(SCAN_SEQ).map_err(fail)?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT h.head, b.request, b.response FROM flow_heads h
                 JOIN flow_bodies b ON b.seq = h.seq WHERE h.seq = ?1",
            )
            .map_err(fail)?;
        let mut rows = stmt.query([seq]).map_err(fail)?;
        let Some(data) = rows.next().map_err(fail)? else {
            return Err(self.corrupt(row_id_text(row), "its data rows are missing".into()));
        };
        let decoded = (|| {
            let request = data.get_ref(1)?.as_blob()?;
            let response = data.get_ref(2)?.as_blob_or_null()?;
            Ok::<_, rusqlite::Error>(match (loaded, flow) {
                (Need::Head, Some(mut flow)) => {
                    attach_bodies(&mut flow, request, response);
                    Ok(flow)
                }
                _ => decode_flow(
                    data.get_ref(0)?.as_str()?,
                    scan_user_marks(row)?,
                    request,
                    response,
                ),
            })
        })();
        match decoded {
            Ok(Ok(flow)) => Ok(flow),
            Ok(Err(reason)) => Err(self.corrupt(row_id_text(row), reason)),
            Err(e) => Err(self.corrupt(row_id_text(row), e.to_string())),
        }
    }

    fn writer(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock left no transaction open: rusqlite rolls
        // back on drop. The connection is still good.
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One page of summaries read straight from the flows table (no filter), in the
    /// order `order_by` (an SQL ORDER BY list) says.
    fn summary_page(
        &self,
        operation: &'static str,
        order_by: &str,
        offset: usize,
        limit: usize,
        except: &HashSet<FlowId>,
    ) -> Result<Vec<FlowSummary>, StoreError> {
        self.with_reader(operation, |conn| {
            let (excluded, mut values) = excluding(except);
            let sql = format!(
                "SELECT {SCAN_COLUMNS} FROM flows f {excluded} ORDER BY {order_by} LIMIT ? OFFSET ?"
            );
            let mut stmt = conn
                .prepare_cached(&sql)
                .map_err(|e| self.error(operation, e))?;
            values.push(Value::Integer(saturating_i64(limit)));
            values.push(Value::Integer(saturating_i64(offset)));
            let rows = stmt
                .query_map(rusqlite::params_from_iter(values), read_summary)
                .map_err(|e| self.error(operation, e))?;
            rows.map(|row| row.map_err(|e| self.error(operation, e)))
                .collect()
        })
    }

    fn with_reader<T>(
        &self,
        operation: &'static str,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let idle = self
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let conn = match idle {
            Some(conn) => conn,
            None => connect_reader(&self.path).map_err(|e| self.error(operation, e))?,
        };
        let result = f(&conn);
        let mut idle = self.readers.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
        result
    }

    fn error(&self, operation: &'static str, source: rusqlite::Error) -> StoreError {
        classify(&self.path, operation, source)
    }

    fn corrupt(&self, id: String, reason: String) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            id,
            reason,
        }
    }
}

// Every statement that writes a `flows` row takes [`FlowRow::columns`] as its
// parameters: ?1 id, ?2 sort_key, ?3 started_at, ?4 method, ?5 scheme, ?6 host,
// ?7 port, ?8 path, ?9 status, ?10 response_size, ?11 duration_ms,
// ?12 has_tls_events, ?13 has_renegotiation, ?14 has_error, ?15 marked,
// ?16 content_type, ?17 client_peer, ?18 server_target, ?19 server_peer,
// ?20 comment, ?21 modified, ?22 replay_of, ?23 duplicate_of.
const INSERT_FLOW: &str = "INSERT INTO flows (id, sort_key, started_at, method, scheme, host, port,
        path, status, response_size, duration_ms, has_tls_events, has_renegotiation,
        has_error, marked, content_type, client_peer, server_target, server_peer,
        comment, modified, replay_of, duplicate_of)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19,
        ?20, ?21, ?22, ?23)";
const INSERT_HEAD: &str = "INSERT INTO flow_heads (seq, head) VALUES (?1, ?2)";
const INSERT_BODIES: &str = "INSERT INTO flow_bodies (seq, request, response) VALUES (?1, ?2, ?3)";
/// The proxy's new version of a flow it saved before: the user's mark and comment
/// stay unless the proxy's copy has them too.
const UPDATE_RECORDED_FLOW: &str = "UPDATE flows SET
        sort_key = ?2, started_at = ?3, method = ?4, scheme = ?5, host = ?6, port = ?7,
        path = ?8, status = ?9, response_size = ?10, duration_ms = ?11,
        has_tls_events = ?12, has_renegotiation = ?13, has_error = ?14,
        marked = marked OR ?15,
        content_type = ?16, client_peer = ?17, server_target = ?18, server_peer = ?19,
        comment = CASE WHEN ?20 = '' THEN comment ELSE ?20 END,
        modified = ?21, replay_of = ?22, duplicate_of = ?23
    WHERE id = ?1";
/// A flow exactly as given: an edit, or a revert.
const OVERWRITE_FLOW: &str = "UPDATE flows SET
        sort_key = ?2, started_at = ?3, method = ?4, scheme = ?5, host = ?6, port = ?7,
        path = ?8, status = ?9, response_size = ?10, duration_ms = ?11,
        has_tls_events = ?12, has_renegotiation = ?13, has_error = ?14, marked = ?15,
        content_type = ?16, client_peer = ?17, server_target = ?18, server_peer = ?19,
        comment = ?20, modified = ?21, replay_of = ?22, duplicate_of = ?23
    WHERE id = ?1";
const UPSERT_HEAD: &str = "INSERT INTO flow_heads (seq, head) VALUES (?1, ?2)
    ON CONFLICT (seq) DO UPDATE SET head = excluded.head";
const UPSERT_BODIES: &str = "INSERT INTO flow_bodies (seq, request, response) VALUES (?1, ?2, ?3)
    ON CONFLICT (seq) DO UPDATE SET request = excluded.request, response = excluded.response";

/// A flow by id, as [`FlowStore::load`] reads it.
const LOAD_FLOW: &str = "SELECT f.marked, f.comment, h.head, b.request, b.response
    FROM flows f
    JOIN flow_heads h ON h.seq = f.seq
    JOIN flow_bodies b ON b.seq = f.seq
    WHERE f.id = ?1";
/// The recorded version of an edited flow, with the flow's current mark and comment.
const LOAD_ORIGINAL: &str = "SELECT f.marked, f.comment, o.head, o.request, o.response
    FROM flows f
    JOIN flow_originals o ON o.seq = f.seq
    WHERE f.id = ?1";

/// The statements that save a new flow, prepared once for a batch.
struct Inserts<'conn> {
    flow: CachedStatement<'conn>,
    head: CachedStatement<'conn>,
    bodies: CachedStatement<'conn>,
}

impl<'conn> Inserts<'conn> {
    // Plain INSERTs for the common case, a new flow: an upsert (or RETURNING) makes
    // SQLite keep a statement journal for every row it writes, which cost a fifth of
    // an insert. A flow seen before takes `update_recorded`.
    fn prepare(conn: &'conn Connection) -> rusqlite::Result<Self> {
        Ok(Inserts {
            flow: conn.prepare_cached(INSERT_FLOW)?,
            head: conn.prepare_cached(INSERT_HEAD)?,
            bodies: conn.prepare_cached(INSERT_BODIES)?,
        })
    }

    /// Saves a flow whose id is not stored yet; a unique violation, and nothing
    /// written, if it is.
    fn insert(&mut self, conn: &Connection, row: &FlowRow) -> rusqlite::Result<()> {
        self.flow.execute(&row.columns()[..])?;
        let seq = conn.last_insert_rowid();
        self.head.execute(params![seq, row.head])?;
        self.bodies.execute(params![
            seq,
            &row.request_body[..],
            row.response_body.as_deref()
        ])?;
        Ok(())
    }
}

/// Saves the proxy's new version of a stored flow. An edited flow keeps the user's
/// edit: the new version replaces the recorded one kept for revert.
fn update_recorded(tx: &Transaction<'_>, row: &FlowRow) -> rusqlite::Result<()> {
    let (seq, edited): (i64, bool) = tx
        .prepare_cached(
            "SELECT f.seq, o.seq IS NOT NULL FROM flows f
             LEFT JOIN flow_originals o ON o.seq = f.seq WHERE f.id = ?1",
        )?
        .query_row([&row.id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let bodies = (&row.request_body[..], row.response_body.as_deref());
    if edited {
        tx.prepare_cached(
            "UPDATE flow_originals SET head = ?2, request = ?3, response = ?4 WHERE seq = ?1",
        )?
        .execute(params![seq, row.head, bodies.0, bodies.1])?;
        return Ok(());
    }
    tx.prepare_cached(UPDATE_RECORDED_FLOW)?
        .execute(&row.columns()[..])?;
    tx.prepare_cached(UPSERT_HEAD)?
        .execute(params![seq, row.head])?;
    tx.prepare_cached(UPSERT_BODIES)?
        .execute(params![seq, bodies.0, bodies.1])?;
    Ok(())
}

/// Replaces the stored flow `seq` (whose id `row` has) with `row`, all of it.
fn overwrite(conn: &Connection, seq: i64, row: &FlowRow) -> rusqlite::Result<()> {
    conn.prepare_cached(OVERWRITE_FLOW)?
        .execute(&row.columns()[..])?;
    conn.prepare_cached(UPSERT_HEAD)?
        .execute(params![seq, row.head])?;
    conn.prepare_cached(UPSERT_BODIES)?.execute(params![
        seq,
        &row.request_body[..],
        row.response_body.as_deref()
    ])?;
    Ok(())
}

fn seq_of(conn: &Connection, id: FlowId) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT seq FROM flows WHERE id = ?1")?
        .query_row([id.0.as_bytes()], |r| r.get(0))
        .optional()
}

/// Every flow in time order with the [`SCAN_COLUMNS`] and, after them, what `need`
/// adds: the head, then the request and response bodies.
fn scan_sql(need: Need) -> String {
    match need {
        Need::Columns => {
            format!("SELECT {SCAN_COLUMNS} FROM flows f ORDER BY f.sort_key, f.seq")
        }
        Need::Head => format!(
            "SELECT {SCAN_COLUMNS}, (SELECT head FROM flow_heads WHERE seq = f.seq)
             FROM flows f ORDER BY f.sort_key, f.seq"
        ),
        Need::Bodies => format!(
            "SELECT {SCAN_COLUMNS}, h.head, b.request, b.response
             FROM flows f
             JOIN flow_heads h ON h.seq = f.seq
             JOIN flow_bodies b ON b.seq = f.seq
             ORDER BY f.sort_key, f.seq"
        ),
    }
}

/// The `flows` columns every scan reads, in the order [`read_summary`] and
/// [`read_columns`] expect.
const SCAN_COLUMNS: &str = "f.id, f.started_at, f.method, f.scheme, f.host, f.port, f.path,
    f.status, f.response_size, f.duration_ms, f.has_tls_events, f.has_renegotiation,
    f.has_error, f.marked, f.content_type, f.client_peer, f.server_target, f.server_peer,
    f.comment, f.modified, f.replay_of, f.duplicate_of, f.seq";
const SCAN_MARKED: usize = 13;
const SCAN_COMMENT: usize = 18;
const SCAN_SEQ: usize = 22;
const SCAN_COLUMN_COUNT: usize = 23;

/// A `WHERE` clause on the flows table (aliased `f`) that leaves out `except`, and its
/// parameters; nothing for an empty set.
fn excluding(except: &HashSet<FlowId>) -> (String, Vec<Value>) {
    if except.is_empty() {
        return (String::new(), Vec::new());
    }
    let marks = vec!["?"; except.len()].join(", ");
    let ids = except
        .iter()
        .map(|id| Value::Blob(id.0.as_bytes().to_vec()))
        .collect();
    (format!("WHERE f.id NOT IN ({marks})"), ids)
}

fn read_id(row: &Row<'_>) -> rusqlite::Result<FlowId> {
    let bytes: [u8; 16] = row.get(0)?;
    Ok(FlowId(uuid::Uuid::from_bytes(bytes)))
}

fn read_optional_id(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<FlowId>> {
    let bytes: Option<[u8; 16]> = row.get(index)?;
    Ok(bytes.map(|bytes| FlowId(uuid::Uuid::from_bytes(bytes))))
}

fn scan_user_marks<'row>(row: &'row Row<'_>) -> rusqlite::Result<UserMarks<'row>> {
    Ok(UserMarks {
        marked: row.get(SCAN_MARKED)?,
        comment: row.get_ref(SCAN_COMMENT)?.as_str()?,
    })
}

fn row_id_text(row: &Row<'_>) -> String {
    read_id(row).map_or_else(|_| "(unknown id)".to_owned(), |id| id.to_string())
}

fn read_summary(row: &Row<'_>) -> rusqlite::Result<FlowSummary> {
    Ok(FlowSummary {
        id: read_id(row)?,
        started_at: row.get::<_, Option<i64>>(1)?.map(Timestamp),
        method: row.get(2)?,
        scheme: row.get(3)?,
        host: row.get(4)?,
        port: row.get(5)?,
        path: row.get(6)?,
        status: row.get(7)?,
        response_size: row.get::<_, Option<i64>>(8)?.map(|n| n.max(0) as u64),
        duration_ms: row.get(9)?,
        has_tls_events: row.get(10)?,
        has_renegotiation: row.get(11)?,
        has_error: row.get(12)?,
        marked: row.get(SCAN_MARKED)?,
        content_type: row.get(14)?,
        has_comment: !row.get_ref(SCAN_COMMENT)?.as_str()?.is_empty(),
        modified: row.get(19)?,
        replay_of: read_optional_id(row, 20)?,
        duplicate_of: read_optional_id(row, 21)?,
    })
}

fn read_columns(row: &Row<'_>) -> rusqlite::Result<Columns> {
    Ok(Columns {
        method: row.get(2)?,
        scheme: row.get(3)?,
        host: row.get(4)?,
        port: row.get(5)?,
        path: row.get(6)?,
        status: row.get(7)?,
        has_error: row.get(12)?,
        marked: row.get(SCAN_MARKED)?,
        client_peer: row.get(15)?,
        server_target: row.get(16)?,
        server_peer: row.get(17)?,
        annotations: Annotations {
            comment: row.get(SCAN_COMMENT)?,
            modified: row.get(19)?,
            replay_of: read_optional_id(row, 20)?,
            duplicate_of: read_optional_id(row, 21)?,
        },
    })
}

/// A flow ready to be written: the index columns, the JSON and the bodies.
struct FlowRow {
    id: [u8; 16],
    sort_key: i64,
    summary: FlowSummary,
    client_peer: Option<String>,
    server_target: Option<String>,
    server_peer: Option<String>,
    comment: String,
    // The summary's values as SQLite stores them.
    started_at: Option<i64>,
    response_size: Option<i64>,
    replay_of: Option<[u8; 16]>,
    duplicate_of: Option<[u8; 16]>,
    head: String,
    request_body: Bytes,
    response_body: Option<Bytes>,
}

impl FlowRow {
    fn new(flow: &Flow) -> serde_json::Result<FlowRow> {
        let summary = FlowSummary::of(flow);
        let sort_key = summary
            .started_at
            .or_else(|| flow.timeline.entries().first().map(|e| e.at))
            .or_else(|| flow.error.as_ref().map(|e| e.at))
            .unwrap_or_else(Timestamp::now)
            .0;
        let server = flow.server.as_ref();
        let id_bytes = |id: Option<FlowId>| id.map(|id| *id.0.as_bytes());
        Ok(FlowRow {
            id: *flow.id.0.as_bytes(),
            sort_key,
            started_at: summary.started_at.map(|t| t.0),
            response_size: summary.response_size.map(saturating_i64),
            replay_of: id_bytes(summary.replay_of),
            duplicate_of: id_bytes(summary.duplicate_of),
            summary,
            client_peer: flow.client.peer.map(|p| p.to_string()),
            server_target: server.and_then(|s| s.target.clone()),
            server_peer: server.and_then(|s| s.peer).map(|p| p.to_string()),
            comment: flow.annotations.comment.clone(),
            // Everything but the body bytes; their size and truncation flag stay.
            head: head::to_json(flow)?,
            request_body: flow.request.body.content.clone(),
            response_body: flow.response.as_ref().map(|r| r.body.content.clone()),
        })
    }
}

impl FlowRow {
    /// The `flows` columns, as ?1 to ?23 of the statements that write them.
    fn columns(&self) -> [&dyn ToSql; 23] {
        let s = &self.summary;
        [
            &self.id,
            &self.sort_key,
            &self.started_at,
            &s.method,
            &s.scheme,
            &s.host,
            &s.port,
            &s.path,
            &s.status,
            &self.response_size,
            &s.duration_ms,
            &s.has_tls_events,
            &s.has_renegotiation,
            &s.has_error,
            &s.marked,
            &s.content_type,
            &self.client_peer,
            &self.server_target,
            &self.server_peer,
            &self.comment,
            &s.modified,
            &self.replay_of,
            &self.duplicate_of,
        ]
    }
}

/// What [`FlowStore::set_marked`] and [`FlowStore::set_comment`] change, in the
/// `flows` columns alone: those columns are the truth when the JSON differs.
struct UserMarks<'a> {
    marked: bool,
    comment: &'a str,
}

fn decode_flow(
    head: &str,
    marks: UserMarks<'_>,
    request: &[u8],
    response: Option<&[u8]>,
) -> Result<Flow, String> {
    let mut flow: Flow = serde_json::from_str(head).map_err(|e| e.to_string())?;
    flow.marked = marks.marked;
    if flow.annotations.comment != marks.comment {
        flow.annotations.comment = marks.comment.to_owned();
    }
    attach_bodies(&mut flow, request, response);
    Ok(flow)
}

fn attach_bodies(flow: &mut Flow, request: &[u8], response: Option<&[u8]>) {
    flow.request.body.content = Bytes::copy_from_slice(request);
    if let (Some(r), Some(bytes)) = (flow.response.as_mut(), response) {
        r.body.content = Bytes::copy_from_slice(bytes);
    }
}

/// A flow with this id is stored already.
fn is_unique_violation(error: &rusqlite::Error) -> bool {
    matches!(
        error,
        rusqlite::Error::SqliteFailure(e, _)
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
    )
}

fn saturating_i64(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

fn level_name(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error => "error",
    }
}

fn level_from_name(name: &str) -> LogLevel {
    match name {
        "debug" => LogLevel::Debug,
        "warn" => LogLevel::Warn,
        "error" => LogLevel::Error,
        _ => LogLevel::Info,
    }
}

/// Creates the file with mode 0600 if it does not exist, so SQLite never creates
/// it (nor its `-wal`/`-shm`, which copy its mode) readable by others.
fn create_private_file(path: &Path) -> io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map(drop)
}

fn connect(path: &Path) -> rusqlite::Result<Connection> {
    // No SQLITE_OPEN_CREATE: the file was created (0600) by create_private_file.
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Per connection, not stored in the file. In WAL mode NORMAL syncs at
    // checkpoints only: commits survive a process crash, not a power cut.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}

fn connect_reader(path: &Path) -> rusqlite::Result<Connection> {
    let conn = connect(path)?;
    conn.pragma_update(None, "query_only", true)?;
    Ok(conn)
}

fn open_error(path: &Path, source: io::Error) -> StoreError {
    if is_disk_full_io(&source) {
        StoreError::DiskFull {
            path: path.to_owned(),
            operation: "create the file",
        }
    } else {
        StoreError::Open {
            path: path.to_owned(),
            source,
        }
    }
}

fn is_disk_full_io(error: &io::Error) -> bool {
    // ENOSPC and EDQUOT on Linux; io::ErrorKind::StorageFull needs Rust 1.83.
    cfg!(target_os = "linux") && matches!(error.raw_os_error(), Some(28 | 122))
}

fn classify(path: &Path, operation: &'static str, source: rusqlite::Error) -> StoreError {
    match source.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => StoreError::DiskFull {
            path: path.to_owned(),
            operation,
        },
        Some(ErrorCode::NotADatabase) => StoreError::NotASession {
            path: path.to_owned(),
            reason: "it is not an SQLite database".to_owned(),
        },
        _ => StoreError::Database {
            path: path.to_owned(),
            operation,
            source,
        },
    }
}

#[cfg(test)]
mod tests;
