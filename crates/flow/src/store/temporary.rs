//! The directories of temporary sessions, and their removal when the process that
//! made one ended without removing it.
//!
//! A temporary session is removed when its store is dropped, but a process killed
//! with SIGKILL, by the OOM killer or by a power cut drops nothing: each leftover
//! holds a whole session (hundreds of megabytes after a long run), and a test suite
//! or a benchmark that kills proxies leaves thousands. So each directory carries a
//! lock file its process holds (`flock`, released by the kernel however the process
//! ends), and every new temporary session removes, in the background, the
//! directories of its user whose lock no process holds.

use std::fs::{self, File, TryLockError};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

/// What every temporary session directory is called, before its random part.
pub(crate) const PREFIX: &str = "periscope-session-";
/// The lock file in a directory; only ever appears already locked (see `create`).
const OWNER_LOCK: &str = "owner.lock";

/// A temporary session directory held by this process: removed on drop, and left
/// alone by other processes' reclaiming until then.
#[derive(Debug)]
pub(crate) struct TemporaryDir {
    // Field order is drop order: the directory goes before the lock is released.
    dir: TempDir,
    _owner: File,
}

impl TemporaryDir {
    /// A new directory under `parent`, locked by this process. Locked under another
    /// name and then renamed, so that no other process can find `owner.lock`
    /// unlocked and take the new directory for an abandoned one.
    pub(crate) fn create(parent: &Path) -> io::Result<TemporaryDir> {
        let dir = tempfile::Builder::new().prefix(PREFIX).tempdir_in(parent)?;
        let locking = dir.path().join("owner.lock.new");
        let owner = File::options()
            .write(true)
            .create_new(true)
            .open(&locking)?;
        owner.try_lock().map_err(|e| match e {
            TryLockError::Error(e) => e,
            TryLockError::WouldBlock => io::Error::other("a new lock file is locked"),
        })?;
        fs::rename(&locking, dir.path().join(OWNER_LOCK))?;
        Ok(TemporaryDir { dir, _owner: owner })
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The user id this process creates files as (the owner of its own directory):
    /// only that user's abandoned directories are reclaimed.
    pub(crate) fn owner_uid(&self) -> io::Result<u32> {
        Ok(fs::metadata(self.dir.path())?.uid())
    }
}

/// What [`reclaim_abandoned`] removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reclaimed {
    pub directories: usize,
    pub bytes: u64,
}

/// Removes the temporary session directories in `parent` that belong to `uid` and
/// whose lock no process holds. A directory without a lock file (made by a release
/// before the lock existed, or by something else with the same prefix) is kept;
/// so is one that disappears or fails to be removed meanwhile.
pub fn reclaim_abandoned(parent: &Path, uid: u32) -> io::Result<Reclaimed> {
    let mut reclaimed = Reclaimed::default();
    for entry in fs::read_dir(parent)? {
        let Ok(entry) = entry else { continue };
        if !entry.file_name().to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        let dir = entry.path();
        // symlink_metadata: a symlink named like a session is not followed.
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
        if fs::remove_dir_all(&dir).is_ok() {
            reclaimed.directories += 1;
            reclaimed.bytes += bytes;
        }
    }
    Ok(reclaimed)
}

fn size_of_files(dir: &PathBuf) -> u64 {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.metadata().ok())
        .filter(|meta| meta.is_file())
        .map(|meta| meta.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uid_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().uid()
    }

    /// A directory as a killed process leaves it: the lock file exists, nobody holds it.
    fn abandoned(parent: &Path) -> PathBuf {
        let held = TemporaryDir::create(parent).unwrap();
        fs::write(held.path().join("session.periscope"), vec![0u8; 4096]).unwrap();
        // Keeping the directory while releasing the lock, as a SIGKILL would.
        let TemporaryDir { dir, _owner } = held;
        drop(_owner);
        dir.keep()
    }

    #[test]
    fn a_directory_nobody_holds_is_removed_and_a_held_one_kept() {
        let parent = tempfile::tempdir().unwrap();
        let uid = uid_of(parent.path());
        let left = abandoned(parent.path());
        let held = TemporaryDir::create(parent.path()).unwrap();

        let reclaimed = reclaim_abandoned(parent.path(), uid).unwrap();

        assert_eq!(
            reclaimed,
            Reclaimed {
                directories: 1,
                bytes: 4096
            }
        );
        assert!(!left.exists());
        assert!(held.path().join(OWNER_LOCK).exists());
        assert_eq!(held.owner_uid().unwrap(), uid);
    }

    #[test]
    fn directories_without_a_lock_or_of_another_name_or_user_are_kept() {
        let parent = tempfile::tempdir().unwrap();
        let uid = uid_of(parent.path());
        let unlocked = parent.path().join(format!("{PREFIX}old"));
        fs::create_dir(&unlocked).unwrap();
        let other_name = parent.path().join("periscope-confdir-x");
        fs::create_dir(&other_name).unwrap();
        File::create(other_name.join(OWNER_LOCK)).unwrap();
        let other_user = abandoned(parent.path());
        let symlink = parent.path().join(format!("{PREFIX}link"));
        std::os::unix::fs::symlink(&other_user, &symlink).unwrap();

        let reclaimed = reclaim_abandoned(parent.path(), uid.wrapping_add(1)).unwrap();
        assert_eq!(reclaimed, Reclaimed::default());
        assert!(other_user.exists());

        let reclaimed = reclaim_abandoned(parent.path(), uid).unwrap();
        assert_eq!(reclaimed.directories, 1, "only the abandoned session");
        assert!(unlocked.exists() && other_name.exists() && !other_user.exists());
        assert!(
            symlink.symlink_metadata().is_ok(),
            "a symlink is not followed"
        );
    }

    #[test]
    fn dropping_removes_the_directory() {
        let parent = tempfile::tempdir().unwrap();
        let held = TemporaryDir::create(parent.path()).unwrap();
        let path = held.path().to_owned();
        drop(held);
        assert!(!path.exists());
    }
}
