//! The crate's one error type. The gateway maps it to wire error codes once;
//! nothing below it needs to know more than these six cases.

/// Result of every storage call.
pub type Result<T> = std::result::Result<T, StoreError>;

/// Why a storage call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The writer thread is gone (the store was closed or dropped), so the
    /// write was not, and will not be, applied.
    #[error("store is closed")]
    Closed,
    /// SQLite refused the statement, e.g. a duplicate primary key, or the
    /// disk failed under a commit.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The schema on disk cannot be brought to the version this build expects.
    #[error("migration: {0}")]
    Migration(String),
    /// The filesystem refused us (creating the data directory, starting the
    /// writer thread).
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// A stored row could not be decoded: the bytes on disk are not what
    /// this build wrote.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// A value the store cannot hold (an amount beyond a signed 64-bit
    /// integer); the caller's validation should have refused it first.
    #[error("invalid value: {0}")]
    Invalid(String),
}

impl StoreError {
    /// A copy of this error for each command of a group whose COMMIT failed:
    /// they all share one cause, but each caller owns its own error.
    /// `rusqlite::Error` is not `Clone`, so SQLite failures keep their codes
    /// and anything else keeps its message.
    pub(crate) fn duplicate(&self) -> StoreError {
        match self {
            StoreError::Closed => StoreError::Closed,
            StoreError::Sqlite(e) => StoreError::Sqlite(duplicate_sqlite(e)),
            StoreError::Migration(m) => StoreError::Migration(m.clone()),
            StoreError::Io(e) => StoreError::Io(std::io::Error::new(e.kind(), e.to_string())),
            StoreError::Corrupt(m) => StoreError::Corrupt(m.clone()),
            StoreError::Invalid(m) => StoreError::Invalid(m.clone()),
        }
    }
}

fn duplicate_sqlite(e: &rusqlite::Error) -> rusqlite::Error {
    match e {
        rusqlite::Error::SqliteFailure(code, message) => {
            rusqlite::Error::SqliteFailure(*code, message.clone())
        }
        other => rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(other.to_string()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicated_sqlite_failure_keeps_its_code() {
        let original = StoreError::Sqlite(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            Some("disk full".into()),
        ));
        match original.duplicate() {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(code, Some(message))) => {
                assert_eq!(code.code, rusqlite::ErrorCode::DiskFull);
                assert_eq!(message, "disk full");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn duplicated_other_errors_keep_their_message() {
        let original = StoreError::Sqlite(rusqlite::Error::QueryReturnedNoRows);
        match original.duplicate() {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(_, Some(message))) => {
                assert_eq!(message, rusqlite::Error::QueryReturnedNoRows.to_string());
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
