//! One server per SQLite file. Two servers on one file would each hold credits for jobs the
//! other cannot see coming; the embedded database is one node. `serve` and `demo` take an
//! exclusive lock on `<database file>.lock` before anything else touches the file, and a second
//! server on the same file stops at start, saying so. The operating system releases the lock
//! when the process ends, however it ends (`kill -9` included), so no stale lock is ever left.
//!
//! `gavel migrate` does not take the lock. `gavel admin grant` moves money, so it never writes
//! behind a running server's back: when the lock is taken it asks that server (`local_admin`),
//! and otherwise it holds the lock while it works on the file.

use std::collections::HashMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, Weak};

/// Held for as long as the server runs; dropping the last handle releases the lock.
#[derive(Debug)]
pub struct DataLock {
    path: PathBuf,
    _file: File,
}

/// Locks held by this process, by path: a demo locks before it writes its sample data, and the
/// server it then starts finds the lock already its own.
static HELD: LazyLock<Mutex<HashMap<PathBuf, Weak<DataLock>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process (a running server) holds it.
    #[error(
        "another Gavel server is running on {}: the embedded database takes one server. \
         Stop the other one, or run several servers on Postgres (database.url)",
        .0.display()
    )]
    Taken(PathBuf),
    #[error("{0}")]
    Io(String),
}

/// Takes the lock of the SQLite file `url` names, or says which file another server holds.
/// `None` when the database is not a SQLite file (Postgres runs many instances).
pub fn lock_database(url: &str) -> Result<Option<Arc<DataLock>>, LockError> {
    let Some(database) = registry::sqlite_file(url) else { return Ok(None) };
    let path = lock_path(&database);
    let mut held =
        HELD.lock().map_err(|_| LockError::Io("the data lock table is poisoned".into()))?;
    if let Some(lock) = held.get(&path).and_then(Weak::upgrade) {
        return Ok(Some(lock));
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|err| {
            LockError::Io(format!("could not create the directory {}: {err}", parent.display()))
        })?;
    }
    let file =
        OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(|err| {
            LockError::Io(format!("could not open the lock file {}: {err}", path.display()))
        })?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Err(LockError::Taken(database)),
        Err(TryLockError::Error(err)) => {
            return Err(LockError::Io(format!("could not lock {}: {err}", path.display())));
        }
    }
    let lock = Arc::new(DataLock { path: path.clone(), _file: file });
    // Locks already released leave the table, so it holds no more than the live ones.
    held.retain(|_, lock| lock.strong_count() > 0);
    held.insert(path, Arc::downgrade(&lock));
    Ok(Some(lock))
}

fn lock_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

impl DataLock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_shares_its_own_lock() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/gavel.db?mode=rwc", dir.path().display());
        let first = lock_database(&url).unwrap().unwrap();
        let second = lock_database(&url).unwrap().unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        assert!(first.path().ends_with("gavel.db.lock"));
    }
}
