//! Directories a Periscope process keeps under `$TMPDIR` (a temporary session, the
//! addon runtime, a session being saved), and their removal when the process that
//! made one ended without removing it.
//!
//! A [`ScratchDir`] is removed when dropped, but a process killed with SIGKILL, by
//! the OOM killer or by a power cut drops nothing: a leftover temporary session is
//! a whole session (hundreds of megabytes after a long run), and a test suite or a
//! benchmark that kills proxies leaves thousands. So each directory carries a lock
//! file its process holds (`flock`, released by the kernel however the process
//! ends), and [`ScratchDir::create`] removes, in the background, the directories
//! of the same kind and user whose lock no process holds. Both removals (the owner's
//! on drop, the reclaimer's) take the lock file last, so a removal cut short still
//! leaves a directory the next process recognises. Opening a session file
//! that sits in such a directory ([`hold_shared`], `periscope -r`) keeps it too.

use std::fs::{self, File, TryLockError};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use tempfile::TempDir;

/// The lock file in a directory; only ever appears already locked (see `create_in`).
const OWNER_LOCK: &str = "owner.lock";

/// A directory held by this process: removed on drop, and left alone by other
/// processes' reclaiming until then.
#[derive(Debug)]
pub struct ScratchDir {
    // Field order is drop order: the directory goes before the lock is released.
    dir: LockLastDir,
    /// `None` where the file system has no `flock` (some network and FUSE file
    /// systems): the directory is then never reclaimed, rather than not made.
    _owner: Option<File>,
}

impl ScratchDir {
    /// A new directory `PREFIX<random>` under `$TMPDIR` (or `/tmp`); then, on a thread
    /// of its own, the abandoned directories with the same prefix there are removed
    /// ([`reclaim_abandoned`]) and what was freed is logged.
    pub fn create(prefix: &'static str) -> io::Result<ScratchDir> {
        let parent = std::env::temp_dir();
        let scratch = ScratchDir::create_in(&parent, prefix)?;
        let uid = fs::metadata(scratch.path())?.uid();
        let spawned = std::thread::Builder::new()
            .name("reclaim-scratch".into())
            .spawn(move || log_reclaimed(&parent, prefix, reclaim_abandoned(&parent, prefix, uid)));
        // Only housekeeping: a process without a thread to spare still runs.
        drop(spawned);
        Ok(scratch)
    }

    /// A new directory `PREFIX<random>` under `parent`, locked by this process.
    /// Locked under another name and then renamed, so that no other process can
    /// find `owner.lock` unlocked and take the new directory for an abandoned one.
    pub fn create_in(parent: &Path, prefix: &str) -> io::Result<ScratchDir> {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir_in(parent)?;
        let locking = dir.path().join("owner.lock.new");
        let owner = File::options()
            .write(true)
            .create_new(true)
            .open(&locking)?;
        match owner.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(io::Error::other("a new lock file is locked"));
            }
            Err(TryLockError::Error(e)) => {
                tracing::debug!(
                    "no lock in {} ({e}): it will not be reclaimed if this process is killed",
                    dir.path().display()
                );
                drop(owner);
                fs::remove_file(&locking)?;
                return Ok(ScratchDir {
                    dir: LockLastDir(Some(dir)),
                    _owner: None,
                });
            }
        }
        fs::rename(&locking, dir.path().join(OWNER_LOCK))?;
        Ok(ScratchDir {
            dir: LockLastDir(Some(dir)),
            _owner: Some(owner),
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A `TempDir` whose removal takes its lock file last, as the reclaimer's does:
/// `TempDir`'s own removal goes in directory order, and a process killed during it
/// (SIGKILL after a SIGTERM's grace, with a session of hundreds of megabytes to
/// unlink) could leave the session behind without its lock, which no later process
/// reclaims.
#[derive(Debug)]
struct LockLastDir(Option<TempDir>);

impl LockLastDir {
    fn path(&self) -> &Path {
        self.0.as_ref().map_or(Path::new(""), TempDir::path)
    }

    /// The directory left in place (a test's stand-in for a killed process).
    #[cfg(test)]
    fn keep(mut self) -> std::path::PathBuf {
        self.0.take().expect("kept once").keep()
    }
}

impl Drop for LockLastDir {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            // Without a lock (no flock on this file system) this stops at the lock
            // file, and `TempDir` removes what is left.
            let _ = remove_lock_last(dir.path());
        }
    }
}

/// When `file` is in a scratch directory (a killed proxy's temporary session being
/// read), a shared hold on its lock, so that no other process reclaims the directory
/// while the returned file is open; `None` elsewhere.
pub fn hold_shared(file: &Path) -> Option<File> {
    let lock = File::open(file.parent()?.join(OWNER_LOCK)).ok()?;
    lock.try_lock_shared().ok()?;
    Some(lock)
}

/// What [`reclaim_abandoned`] removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reclaimed {
    pub directories: usize,
    pub bytes: u64,
}

/// Removes the directories `PREFIX*` in `parent` that belong to `uid` and whose lock
/// no process holds. A directory without a lock file (made by a release before the
/// lock existed, or by something else with the same prefix) is kept; so is one that
/// disappears or fails to be removed meanwhile.
pub fn reclaim_abandoned(parent: &Path, prefix: &str, uid: u32) -> io::Result<Reclaimed> {
    let mut reclaimed = Reclaimed::default();
    for entry in fs::read_dir(parent)? {
        let Ok(entry) = entry else { continue };
        if !entry.file_name().to_string_lossy().starts_with(prefix) {
            continue;
        }
        let dir = entry.path();
        // symlink_metadata: a symlink named like a scratch directory is not followed.
        let Ok(meta) = fs::symlink_metadata(&dir) else {
            continue;
        };
        if !meta.is_dir() || meta.uid() != uid {
            continue;
        }
        let Ok(lock) = File::open(dir.join(OWNER_LOCK)) else {
            continue;
        };
        // Held while removing: a second process reclaiming at the same moment
        // finds it locked and moves on.
        if lock.try_lock().is_err() {
            continue;
        }
        let bytes = size_of_files(&dir);
        if remove_lock_last(&dir).is_ok() {
            reclaimed.directories += 1;
            reclaimed.bytes += bytes;
        }
    }
    Ok(reclaimed)
}

/// Removes `dir`, its lock file last: a removal that fails half-way leaves a
/// directory that is still recognised, and reclaimed next time.
fn remove_lock_last(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name() == OWNER_LOCK {
            continue;
        }
        if entry.file_type()?.is_dir() {
            fs::remove_dir_all(entry.path())?;
        } else {
            fs::remove_file(entry.path())?;
        }
    }
    fs::remove_file(dir.join(OWNER_LOCK))?;
    fs::remove_dir(dir)
}

fn log_reclaimed(parent: &Path, prefix: &str, reclaimed: io::Result<Reclaimed>) {
    match reclaimed {
        Ok(Reclaimed { directories: 0, .. }) => {}
        Ok(Reclaimed { directories, bytes }) => tracing::warn!(
            "removed {directories} abandoned {prefix}* director{} ({:.1} MiB) from {}: \
             left by Periscope processes that were killed (to keep a session, record \
             with -w FILE)",
            if directories == 1 { "y" } else { "ies" },
            bytes as f64 / (1024.0 * 1024.0),
            parent.display()
        ),
        Err(e) => tracing::debug!(
            "cannot look for abandoned {prefix}* directories in {}: {e}",
            parent.display()
        ),
    }
}

/// The bytes in the files of `dir` and its subdirectories (symlinks not followed).
fn size_of_files(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => size_of_files(&entry.path()),
            Ok(kind) if kind.is_file() => entry.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const PREFIX: &str = "periscope-test-";

    fn uid_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().uid()
    }

    /// A directory as a killed process leaves it: the lock file exists, nobody holds it.
    fn abandoned(parent: &Path) -> PathBuf {
        let held = ScratchDir::create_in(parent, PREFIX).unwrap();
        fs::create_dir(held.path().join("inner")).unwrap();
        fs::write(held.path().join("inner/session"), vec![0u8; 4096]).unwrap();
        // Keeping the directory while releasing the lock, as a SIGKILL would.
        let ScratchDir { dir, _owner } = held;
        assert!(_owner.is_some(), "this file system has flock");
        drop(_owner);
        dir.keep()
    }

    #[test]
    fn a_directory_nobody_holds_is_removed_and_a_held_one_kept() {
        let parent = tempfile::tempdir().unwrap();
        let uid = uid_of(parent.path());
        let left = abandoned(parent.path());
        let held = ScratchDir::create_in(parent.path(), PREFIX).unwrap();

        let reclaimed = reclaim_abandoned(parent.path(), PREFIX, uid).unwrap();

        assert_eq!(
            reclaimed,
            Reclaimed {
                directories: 1,
                bytes: 4096
            }
        );
        assert!(!left.exists());
        assert!(held.path().join(OWNER_LOCK).exists());
    }

    #[test]
    fn directories_without_a_lock_or_of_another_prefix_or_user_are_kept() {
        let parent = tempfile::tempdir().unwrap();
        let uid = uid_of(parent.path());
        let unlocked = parent.path().join(format!("{PREFIX}old"));
        fs::create_dir(&unlocked).unwrap();
        let other_prefix = ScratchDir::create_in(parent.path(), "periscope-other-").unwrap();
        let other_prefix = {
            let ScratchDir { dir, _owner } = other_prefix;
            dir.keep()
        };
        let other_user = abandoned(parent.path());
        // Its target elsewhere, abandoned: followed, it would be removed.
        let elsewhere = tempfile::tempdir().unwrap();
        let target = abandoned(elsewhere.path());
        let symlink = parent.path().join(format!("{PREFIX}link"));
        std::os::unix::fs::symlink(&target, &symlink).unwrap();

        let reclaimed = reclaim_abandoned(parent.path(), PREFIX, uid.wrapping_add(1)).unwrap();
        assert_eq!(reclaimed, Reclaimed::default());
        assert!(other_user.exists());

        let reclaimed = reclaim_abandoned(parent.path(), PREFIX, uid).unwrap();
        assert_eq!(reclaimed.directories, 1, "only the abandoned directory");
        assert!(unlocked.exists() && other_prefix.exists() && !other_user.exists());
        assert!(target.exists(), "a symlink is not followed");
    }

    #[test]
    fn a_session_being_read_is_not_reclaimed() {
        let parent = tempfile::tempdir().unwrap();
        let left = abandoned(parent.path());
        let held = hold_shared(&left.join("session.periscope")).expect("a scratch directory");
        let uid = uid_of(parent.path());
        assert_eq!(
            reclaim_abandoned(parent.path(), PREFIX, uid).unwrap(),
            Reclaimed::default()
        );
        drop(held);
        assert!(
            hold_shared(&left.join("inner/session")).is_none(),
            "not beside the lock"
        );
        let reclaimed = reclaim_abandoned(parent.path(), PREFIX, uid).unwrap();
        assert_eq!(reclaimed.directories, 1);
    }

    #[test]
    fn dropping_removes_the_directory() {
        let parent = tempfile::tempdir().unwrap();
        let held = ScratchDir::create_in(parent.path(), PREFIX).unwrap();
        let path = held.path().to_owned();
        drop(held);
        assert!(!path.exists());
    }
}
