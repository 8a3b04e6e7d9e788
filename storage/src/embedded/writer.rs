//! The single writer and its group commit.
//!
//! SQLite allows one writer at a time and pays one fsync per COMMIT, so the
//! store funnels every write through one thread (`store-writer`) that owns the
//! write connection. Callers send a [`Command`] over a bounded channel (a slow
//! disk pushes back on callers instead of growing a queue) and await a
//! oneshot reply. The thread blocks for the first command, drains whatever
//! else is already queued (up to `max_group`) and runs the lot in ONE
//! transaction, so N concurrent writers share one fsync:
//!
//! ```text
//!  callers ──send──▶ [queue] ──▶ BEGIN IMMEDIATE
//!                                  SAVEPOINT job; work 1; RELEASE job
//!                                  SAVEPOINT job; work 2 fails; ROLLBACK TO job; RELEASE job
//!                                  ...
//!                                COMMIT ──▶ replies (acknowledged = durable) ──▶ notify relay
//! ```
//!
//! Each command runs inside its own savepoint, so one failing command (a
//! duplicate seq) is rolled back and answered with its own error while the
//! rest of the group commits. Replies go out only after COMMIT returns; if
//! COMMIT itself fails, every command of the group gets that error.
//!
//! The writer knows nothing of rooms or danmaku: a command is a closure over
//! the connection, so domain SQL lives beside its concept and the writer
//! stays a transaction pump.

use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Instant;

use rusqlite::Connection;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::{Result, StoreError};

/// What a write closure reports besides its answer: whether it inserted
/// outbox rows, so the relay is woken only when there is something to relay.
pub(crate) struct Written<T> {
    value: T,
    outbox: bool,
}

impl<T> Written<T> {
    /// The change happened and its event was inserted with it.
    pub(crate) fn announced(value: T) -> Self {
        Written {
            value,
            outbox: true,
        }
    }

    /// Nothing to announce: no change, or a change that carries no event.
    pub(crate) fn silent(value: T) -> Self {
        Written {
            value,
            outbox: false,
        }
    }
}

type Work<T> = Box<dyn FnOnce(&Connection) -> Result<Written<T>> + Send>;

/// A command with its answer type erased, so one queue carries them all.
trait Pending: Send {
    /// Runs the work on the open savepoint. `Some(wrote_outbox)` on success;
    /// `None` on failure, the error kept for the reply.
    fn run(&mut self, conn: &Connection) -> Option<bool>;
    /// Answers the caller once the group's fate is known.
    fn reply(self: Box<Self>, group: std::result::Result<(), &StoreError>);
}

struct Job<T> {
    work: Option<Work<T>>,
    outcome: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T: Send> Pending for Job<T> {
    fn run(&mut self, conn: &Connection) -> Option<bool> {
        let work = self.work.take()?;
        match work(conn) {
            Ok(written) => {
                self.outcome = Some(Ok(written.value));
                Some(written.outbox)
            }
            Err(e) => {
                self.outcome = Some(Err(e));
                None
            }
        }
    }

    fn reply(self: Box<Self>, group: std::result::Result<(), &StoreError>) {
        let answer = match (self.outcome, group) {
            // Its own failure explains it best, and it was rolled back either way.
            (Some(Err(own)), _) => Err(own),
            (Some(Ok(value)), Ok(())) => Ok(value),
            (_, Err(group)) => Err(group.duplicate()),
            // A committed group ran every job; this arm only satisfies the match.
            (None, Ok(())) => Err(StoreError::Closed),
        };
        // The caller may have stopped waiting; the write stands regardless.
        let _ = self.reply.send(answer);
    }
}

struct Command {
    job: Box<dyn Pending>,
    /// Set by `shutdown`: the writer commits this group and exits.
    last: bool,
}

/// The callers' side of the writer thread.
pub(crate) struct Writer {
    sender: mpsc::Sender<Command>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Writer {
    /// Starts the `store-writer` thread on an already migrated connection.
    pub(crate) fn spawn(conn: Connection, max_group: usize, notify: Arc<Notify>) -> Result<Self> {
        let max_group = max_group.max(1);
        let (sender, receiver) = mpsc::channel(max_group.saturating_mul(4));
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(conn, receiver, max_group, &notify))?;
        Ok(Writer {
            sender,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues `work` and waits until its group has committed.
    pub(crate) async fn submit<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<Written<T>> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            work: Some(Box::new(work)),
            outcome: None,
            reply,
        };
        self.send(job, false).await?;
        // A dropped reply means the writer exited before reaching this job.
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Flushes, stops the thread and joins it. Idempotent: a second call
    /// finds the writer gone and returns `Ok`.
    pub(crate) async fn shutdown(&self) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        let job: Job<()> = Job {
            work: Some(Box::new(|_| Ok(Written::silent(())))),
            outcome: None,
            reply,
        };
        let flushed = match self.send(job, true).await {
            Ok(()) => answer.await.unwrap_or(Ok(())),
            Err(_) => Ok(()),
        };
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            let joined = tokio::task::spawn_blocking(move || thread.join())
                .await
                .map_err(|e| StoreError::Io(std::io::Error::other(e)))?;
            if joined.is_err() {
                return Err(StoreError::Io(std::io::Error::other(
                    "store-writer thread panicked",
                )));
            }
        }
        flushed
    }

    async fn send<T: Send + 'static>(&self, job: Job<T>, last: bool) -> Result<()> {
        self.sender
            .send(Command {
                job: Box::new(job),
                last,
            })
            .await
            .map_err(|_| StoreError::Closed)
    }
}

/// The writer thread's loop. Ends on `shutdown` or when every sender is gone
/// (the store was dropped): queued commands are committed first, so a drop
/// loses nothing that was submitted. Commands still queued behind a shutdown
/// are dropped unanswered, which their callers see as `Closed`.
fn run(conn: Connection, mut receiver: mpsc::Receiver<Command>, max_group: usize, notify: &Notify) {
    let mut group: Vec<Box<dyn Pending>> = Vec::with_capacity(max_group);
    while let Some(last) = next_group(&mut receiver, max_group, &mut group) {
        commit_group(&conn, &mut group, notify);
        if last {
            break;
        }
    }
    tracing::debug!("store-writer stopped");
}

/// Blocks for one command, then takes whatever else is already queued, up to
/// `max_group` and never past a shutdown. `None` when every sender is gone
/// and the queue is empty; otherwise whether the group ends with a shutdown.
fn next_group(
    receiver: &mut mpsc::Receiver<Command>,
    max_group: usize,
    group: &mut Vec<Box<dyn Pending>>,
) -> Option<bool> {
    let first = receiver.blocking_recv()?;
    let mut last = first.last;
    group.push(first.job);
    while !last && group.len() < max_group {
        match receiver.try_recv() {
            Ok(command) => {
                last = command.last;
                group.push(command.job);
            }
            Err(_) => break,
        }
    }
    Some(last)
}

/// Runs one group in one transaction and answers every command in it.
/// Returns the group size, for tests.
fn commit_group(conn: &Connection, group: &mut Vec<Box<dyn Pending>>, notify: &Notify) -> usize {
    let size = group.len();
    metrics::histogram!("live_store_group_size").record(size as f64);
    let result = execute_group(conn, group);
    if let Err(e) = &result {
        tracing::warn!(error = %e, size, "store group failed; every command in it is refused");
    }
    let status = result.as_ref().map(|_| ());
    for job in group.drain(..) {
        job.reply(status);
    }
    // After the replies: the relay's read must see the rows, and it reads
    // through another connection, which sees only committed data.
    if matches!(result, Ok(true)) {
        // notify_one stores a permit, so a relay not yet waiting still wakes.
        notify.notify_one();
    }
    size
}

/// BEGIN, one savepoint per job, COMMIT. `Ok(true)` if a committed job
/// inserted outbox rows.
fn execute_group(conn: &Connection, group: &mut [Box<dyn Pending>]) -> Result<bool> {
    exec(conn, "BEGIN IMMEDIATE")?;
    let outbox = match run_jobs(conn, group) {
        Ok(outbox) => outbox,
        Err(e) => {
            rollback(conn);
            return Err(e);
        }
    };
    let started = Instant::now();
    if let Err(e) = exec(conn, "COMMIT") {
        rollback(conn);
        return Err(e);
    }
    metrics::histogram!("live_store_commit_seconds").record(started.elapsed().as_secs_f64());
    Ok(outbox)
}

fn run_jobs(conn: &Connection, group: &mut [Box<dyn Pending>]) -> Result<bool> {
    let mut outbox = false;
    for job in group.iter_mut() {
        exec(conn, "SAVEPOINT job")?;
        match job.run(conn) {
            Some(wrote) => {
                outbox |= wrote;
                exec(conn, "RELEASE job")?;
            }
            None => {
                // Some errors (disk full, I/O) make SQLite roll back the whole
                // transaction by itself; the savepoint is gone with it and so
                // is the work of every job before this one.
                if conn.is_autocommit() {
                    return Err(StoreError::Sqlite(rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
                        Some("SQLite rolled back the group after a failed command".into()),
                    )));
                }
                exec(conn, "ROLLBACK TO job")?;
                exec(conn, "RELEASE job")?;
            }
        }
    }
    Ok(outbox)
}

fn rollback(conn: &Connection) {
    if !conn.is_autocommit()
        && let Err(e) = exec(conn, "ROLLBACK")
    {
        tracing::error!(error = %e, "store rollback failed");
    }
}

fn exec(conn: &Connection, sql: &str) -> Result<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
            .unwrap();
        conn
    }

    fn insert(k: i64, outbox: bool) -> (Box<dyn Pending>, oneshot::Receiver<Result<i64>>) {
        let (reply, answer) = oneshot::channel();
        let job = Job::<i64> {
            work: Some(Box::new(move |conn: &Connection| {
                conn.execute("INSERT INTO t (k, v) VALUES (?1, 'x')", [k])?;
                // A second statement, so a rollback has more than one to undo.
                conn.execute("UPDATE t SET v = 'y' WHERE k = ?1", [k])?;
                Ok(if outbox {
                    Written::announced(k)
                } else {
                    Written::silent(k)
                })
            })),
            outcome: None,
            reply,
        };
        (Box::new(job), answer)
    }

    fn keys(conn: &Connection) -> Vec<i64> {
        let mut stmt = conn.prepare("SELECT k FROM t ORDER BY k").unwrap();
        stmt.query_map([], |row| row.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    #[test]
    fn a_failing_command_is_rolled_back_alone() {
        let conn = conn();
        let notify = Notify::new();
        let (a, ra) = insert(1, false);
        let (dup, rdup) = insert(1, false);
        let (b, rb) = insert(2, false);
        let mut group = vec![a, dup, b];
        assert_eq!(commit_group(&conn, &mut group, &notify), 3);
        assert_eq!(ra.blocking_recv().unwrap().unwrap(), 1);
        assert!(matches!(
            rdup.blocking_recv().unwrap(),
            Err(StoreError::Sqlite(_))
        ));
        assert_eq!(rb.blocking_recv().unwrap().unwrap(), 2);
        assert_eq!(keys(&conn), vec![1, 2]);
        assert!(conn.is_autocommit(), "the group transaction is closed");
    }

    #[test]
    fn a_failed_commit_refuses_every_command() {
        let conn = conn();
        let notify = Notify::new();
        // Deferred foreign keys are checked at COMMIT, which makes it fail.
        conn.execute_batch(
            "PRAGMA foreign_keys = ON;
             CREATE TABLE parent (id INTEGER PRIMARY KEY);
             CREATE TABLE child (p INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);",
        )
        .unwrap();
        let (a, ra) = insert(1, true);
        let (reply, rorphan) = oneshot::channel();
        let orphan = Job::<()> {
            work: Some(Box::new(|conn: &Connection| {
                conn.execute("INSERT INTO child (p) VALUES (42)", [])?;
                Ok(Written::silent(()))
            })),
            outcome: None,
            reply,
        };
        let mut group: Vec<Box<dyn Pending>> = vec![a, Box::new(orphan)];
        commit_group(&conn, &mut group, &notify);
        assert!(matches!(
            ra.blocking_recv().unwrap(),
            Err(StoreError::Sqlite(_))
        ));
        assert!(matches!(
            rorphan.blocking_recv().unwrap(),
            Err(StoreError::Sqlite(_))
        ));
        assert!(keys(&conn).is_empty());
        assert!(conn.is_autocommit());
    }

    #[tokio::test]
    async fn outbox_writes_leave_a_permit_for_the_relay() {
        let conn = conn();
        let notify = Arc::new(Notify::new());
        let (quiet, _r) = insert(1, false);
        commit_group(&conn, &mut vec![quiet], &notify);
        let (loud, _r) = insert(2, true);
        commit_group(&conn, &mut vec![loud], &notify);
        // The permit was stored before anyone waited.
        tokio::time::timeout(std::time::Duration::from_secs(5), notify.notified())
            .await
            .unwrap();
    }

    #[test]
    fn a_silent_group_does_not_wake_the_relay() {
        let conn = conn();
        let notify = Arc::new(Notify::new());
        let (quiet, _r) = insert(1, false);
        commit_group(&conn, &mut vec![quiet], &notify);
        let notified = notify.notified();
        let mut notified = std::pin::pin!(notified);
        // enable() reports whether a permit was already there.
        assert!(!notified.as_mut().enable());
    }

    fn command(k: i64, last: bool) -> (Command, oneshot::Receiver<Result<i64>>) {
        let (job, answer) = insert(k, false);
        (Command { job, last }, answer)
    }

    #[test]
    fn queued_commands_form_one_group_bounded_by_max_group() {
        let conn = conn();
        let notify = Notify::new();
        let (sender, mut receiver) = mpsc::channel(16);
        let mut answers = Vec::new();
        for k in [1, 2, 1, 3, 4] {
            let (cmd, answer) = command(k, false);
            sender.try_send(cmd).ok().unwrap();
            answers.push(answer);
        }
        let mut group = Vec::new();
        assert_eq!(next_group(&mut receiver, 4, &mut group), Some(false));
        assert_eq!(group.len(), 4, "capped at max_group");
        commit_group(&conn, &mut group, &notify);
        assert_eq!(next_group(&mut receiver, 4, &mut group), Some(false));
        assert_eq!(group.len(), 1, "the rest in the next group");
        commit_group(&conn, &mut group, &notify);
        let results: Vec<bool> = answers
            .into_iter()
            .map(|a| a.blocking_recv().unwrap().is_ok())
            .collect();
        assert_eq!(results, [true, true, false, true, true]);
        assert_eq!(keys(&conn), vec![1, 2, 3, 4]);
        drop(sender);
        assert_eq!(next_group(&mut receiver, 4, &mut group), None);
    }

    #[test]
    fn a_group_ends_at_shutdown() {
        let (sender, mut receiver) = mpsc::channel(16);
        for (k, last) in [(1, false), (2, true), (3, false)] {
            sender.try_send(command(k, last).0).ok().unwrap();
        }
        let mut group = Vec::new();
        assert_eq!(next_group(&mut receiver, 100, &mut group), Some(true));
        assert_eq!(group.len(), 2);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn writes_after_shutdown_are_refused() {
        let writer = Writer::spawn(conn(), 8, Arc::new(Notify::new())).unwrap();
        let k = writer
            .submit(|conn| {
                conn.execute("INSERT INTO t (k, v) VALUES (7, 'x')", [])?;
                Ok(Written::silent(7))
            })
            .await
            .unwrap();
        assert_eq!(k, 7);
        writer.shutdown().await.unwrap();
        writer.shutdown().await.unwrap();
        assert!(matches!(
            writer.submit(|_| Ok(Written::silent(()))).await,
            Err(StoreError::Closed)
        ));
    }
}
