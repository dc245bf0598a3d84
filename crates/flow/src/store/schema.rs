//! The session file's layout and how older layouts are brought forward.
//!
//! A session file is an SQLite database whose header carries Periscope's
//! `application_id` and, in `user_version`, the layout version. Version `n` is
//! reached from version `n - 1` by `MIGRATIONS[n - 1]`, each step in its own
//! transaction, so a file is always at some complete version. To change the layout,
//! append one function to [`MIGRATIONS`]; never edit a step that has shipped.

use rusqlite::{Connection, Transaction, TransactionBehavior};

/// `PSC1` in ASCII: tells a Periscope session from any other SQLite file.
pub(super) const APPLICATION_ID: i32 = 0x5053_4331;

/// One upgrade step: from version `i` to `i + 1` for the function at index `i`.
pub(super) type Migration = fn(&Transaction<'_>) -> rusqlite::Result<()>;

/// Every layout step, oldest first. The current version is the length.
pub(super) const MIGRATIONS: &[Migration] = &[create_version_1];

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
