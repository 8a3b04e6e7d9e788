//! The read pool. WAL lets readers run beside the writer without blocking it
//! or each other, so reads never queue behind a group commit. A semaphore
//! bounds how many run at once (each holds a blocking-pool thread); each read
//! runs in one read transaction, so a multi-statement read (a bucket walk)
//! sees one snapshot.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::Semaphore;

use crate::{Result, StoreError};

pub(crate) struct Readers {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

impl Readers {
    /// Opens one connection now, so a database readers cannot open fails at
    /// `open` rather than on the first read; the rest open on demand.
    pub(crate) fn open(path: PathBuf, size: usize, busy_timeout: Duration) -> Result<Arc<Self>> {
        let size = size.max(1);
        let readers = Readers {
            path,
            busy_timeout,
            idle: Mutex::new(Vec::with_capacity(size)),
            permits: Arc::new(Semaphore::new(size)),
        };
        let first = readers.connect()?;
        readers.put(first);
        Ok(Arc::new(readers))
    }

    /// Runs `read` on a pooled connection in the blocking pool.
    ///
    /// The permit and the connection travel into the blocking task and come
    /// back to the pool there, so a caller that stops waiting loses nothing.
    pub(crate) async fn read<T, F>(self: &Arc<Self>, read: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Closed)?;
        let pool = Arc::clone(self);
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let conn = pool.take()?;
            let result = conn
                .unchecked_transaction()
                .map_err(StoreError::from)
                .and_then(|snapshot| read(&snapshot));
            pool.put(conn);
            result
        });
        match task.await {
            Ok(result) => result,
            // A panic in a read is a bug in this crate: surface it as one.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(StoreError::Closed),
        }
    }

    /// An idle connection, or a new one: a connection lost to a panicking
    /// read is replaced here rather than shrinking the pool.
    fn take(&self) -> Result<Connection> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        match idle {
            Some(conn) => Ok(conn),
            None => self.connect(),
        }
    }

    fn put(&self, conn: Connection) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(conn);
    }

    fn connect(&self) -> Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(self.busy_timeout)?;
        Ok(conn)
    }
}
