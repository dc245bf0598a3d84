//! NSS key log lines (the `SSLKEYLOGFILE` format Wireshark reads) for every handshake
//! on both legs, renegotiations included, so a capture of either connection can be
//! decrypted from start to end.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openssl::ssl::SslContextBuilder;

pub struct KeyLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl KeyLog {
    /// Opens `path` for appending (creating it, readable only by its owner: it holds
    /// secrets that decrypt traffic).
    pub fn open(path: &Path) -> io::Result<Arc<Self>> {
        let mut options = OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(path)?;
        Ok(Arc::new(KeyLog {
            path: path.to_owned(),
            file: Mutex::new(file),
        }))
    }

    /// The key log named by `SSLKEYLOGFILE`, if set.
    pub fn from_env() -> io::Result<Option<Arc<Self>>> {
        match std::env::var_os("SSLKEYLOGFILE") {
            Some(path) if !path.is_empty() => Self::open(Path::new(&path)).map(Some),
            _ => Ok(None),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one line at once, so lines from concurrent handshakes never interleave
    /// and a reader tailing the file sees whole lines.
    pub fn write_line(&self, line: &str) {
        let mut record = String::with_capacity(line.len() + 1);
        record.push_str(line);
        record.push('\n');
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(error) = file.write_all(record.as_bytes()) {
            tracing::warn!(%error, path = %self.path.display(), "could not write the key log");
        }
    }

    pub fn install(self: &Arc<Self>, ctx: &mut SslContextBuilder) {
        let keylog = Arc::clone(self);
        ctx.set_keylog_callback(move |_, line| keylog.write_line(line));
    }
}
