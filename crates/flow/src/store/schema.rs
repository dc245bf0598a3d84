//! The session file's layout and how older layouts are brought forward.
//!
//! A session file is an SQLite database whose header carries Periscope's
//! `application_id` and, in `user_version`, the layout version. Version `n` is
//! reached from version `n - 1` by `MIGRATIONS[n - 1]`, each step in its own
//! transaction, so a file is always at some complete version. To change the layout,
//! append one function to [`MIGRATIONS`]; never edit a step that has shipped.

use rusqlite::{params, Connection, Transaction, TransactionBehavior};
use serde::Deserialize;

use crate::model::Annotations;

/// `PSC1` in ASCII: tells a Periscope session from any other SQLite file.
pub(super) const APPLICATION_ID: i32 = 0x5053_4331;

/// One upgrade step: from version `i` to `i + 1` for the function at index `i`.
pub(super) type Migration = fn(&Transaction<'_>) -> rusqlite::Result<()>;

/// Every layout step, oldest first. The current version is the length.
pub(super) const MIGRATIONS: &[Migration] = &[create_version_1, add_annotations_version_2];

/// Why a file could not be brought to the current layout.
#[derive(Debug)]
pub(super) enum SchemaError {
    /// Some other program's SQLite database.
    Foreign(String),
    /// Written by a newer Periscope.
    Newer {
        found: i64,
        supported: i64,
    },
    Sqlite(rusqlite::Error),
}

impl From<rusqlite::Error> for SchemaError {
    fn from(error: rusqlite::Error) -> Self {
        SchemaError::Sqlite(error)
    }
}

/// Checks that `conn` is a Periscope session (or an empty file) and upgrades it to
/// `migrations.len()`.
pub(super) fn migrate(conn: &mut Connection, migrations: &[Migration]) -> Result<(), SchemaError> {
    let supported = migrations.len() as i64;
    loop {
        // IMMEDIATE takes the write lock before reading the version, so two
        // processes opening one new file cannot both create the tables.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version = layout_version(&tx)?;
        if version > supported {
            return Err(SchemaError::Newer {
                found: version,
                supported,
            });
        }
        if version == supported {
            tx.commit()?;
            return Ok(());
        }
        migrations[version as usize](&tx)?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)?;
        tx.pragma_update(None, "user_version", version + 1)?;
        tx.commit()?;
    }
}

/// The file's layout version, after checking that it is ours.
fn layout_version(conn: &Connection) -> Result<i64, SchemaError> {
    let application_id: i32 = conn.pragma_query_value(None, "application_id", |r| r.get(0))?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if application_id == APPLICATION_ID {
        return Ok(version);
    }
    if application_id != 0 {
        return Err(SchemaError::Foreign(format!(
            "it is an SQLite database of another program (application id {application_id:#010x})"
        )));
    }
    let objects: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
    if version != 0 || objects != 0 {
        return Err(SchemaError::Foreign(
            "it is an SQLite database of another program".to_owned(),
        ));
    }
    // A new (or empty) file: version 0, nothing in it yet.
    Ok(0)
}

/// Version 1: the flow index, the flows without their bodies, the bodies, the log.
///
/// `flows` holds what the flow list shows and what cheap filters need, so listing
/// and counting read a few hundred bytes per flow. The rest of a flow lives in
/// `flow_heads` (JSON of the flow with empty bodies) and `flow_bodies` (raw bytes,
/// never base64), both keyed by `flows.seq`.
fn create_version_1(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE flows (
            seq INTEGER PRIMARY KEY,
            id BLOB NOT NULL UNIQUE,
            sort_key INTEGER NOT NULL,
            started_at INTEGER,
            method TEXT NOT NULL,
            scheme TEXT NOT NULL,
            host TEXT NOT NULL,
            port INTEGER NOT NULL,
            path TEXT NOT NULL,
            status INTEGER,
            response_size INTEGER,
            duration_ms REAL,
            has_tls_events INTEGER NOT NULL,
            has_renegotiation INTEGER NOT NULL,
            has_error INTEGER NOT NULL,
            marked INTEGER NOT NULL,
            content_type TEXT,
            client_peer TEXT,
            server_target TEXT,
            server_peer TEXT
        );
        CREATE INDEX flows_by_time ON flows (sort_key, seq);
        CREATE TABLE flow_heads (
            seq INTEGER PRIMARY KEY,
            head TEXT NOT NULL
        );
        CREATE TABLE flow_bodies (
            seq INTEGER PRIMARY KEY,
            request BLOB NOT NULL,
            response BLOB
        );
        CREATE TABLE event_log (
            seq INTEGER PRIMARY KEY,
            at INTEGER NOT NULL,
            level TEXT NOT NULL,
            message TEXT NOT NULL
        );",
    )
}

/// Version 2: the user's annotations as columns, and the recorded version of each
/// edited flow.
///
/// `comment`, `modified`, `replay_of` and `duplicate_of` are what the flow list shows
/// and what `~comment` and `~replay` filter on, so that neither reads a flow's JSON.
/// Like `marked`, `comment` is changed in its column alone and is the truth when it
/// differs from the JSON; the other three always equal the JSON's.
///
/// `flow_originals` keeps a flow as it was before its first edit (its JSON and bodies,
/// keyed by `flows.seq`, as `flow_heads` and `flow_bodies` are), for revert.
///
/// Version 1 files written after the model gained annotations may carry some in
/// their JSON: those are copied into the new columns.
fn add_annotations_version_2(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "ALTER TABLE flows ADD COLUMN comment TEXT NOT NULL DEFAULT '';
        ALTER TABLE flows ADD COLUMN modified INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE flows ADD COLUMN replay_of BLOB;
        ALTER TABLE flows ADD COLUMN duplicate_of BLOB;
        CREATE TABLE flow_originals (
            seq INTEGER PRIMARY KEY,
            head TEXT NOT NULL,
            request BLOB NOT NULL,
            response BLOB
        );",
    )?;
    #[derive(Deserialize)]
    struct HeadAnnotations {
        #[serde(default)]
        annotations: Annotations,
    }
    // `"annotations":` only occurs in a head as the field's key (inside a string its
    // quotes would be escaped), and only heads with annotations have it.
    let mut heads =
        tx.prepare("SELECT seq, head FROM flow_heads WHERE instr(head, '\"annotations\":') > 0")?;
    let mut update = tx.prepare(
        "UPDATE flows SET comment = ?2, modified = ?3, replay_of = ?4, duplicate_of = ?5
         WHERE seq = ?1",
    )?;
    let mut rows = heads.query([])?;
    while let Some(row) = rows.next()? {
        let seq: i64 = row.get(0)?;
        // A head that does not decode is reported when the flow is read; the
        // upgrade itself goes on.
        let Ok(HeadAnnotations { annotations }) =
            serde_json::from_str::<HeadAnnotations>(row.get_ref(1)?.as_str()?)
        else {
            continue;
        };
        let id_bytes = |id: Option<crate::model::FlowId>| id.map(|id| *id.0.as_bytes());
        update.execute(params![
            seq,
            annotations.comment,
            annotations.modified,
            id_bytes(annotations.replay_of),
            id_bytes(annotations.duplicate_of),
        ])?;
    }
    Ok(())
}
