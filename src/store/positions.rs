//! Read positions of the log sources: per file its identity (device, inode, a hash of
//! its first line) and the offset after the last complete line handled; for the journal
//! the cursor of the last entry handled. Each reader writes only its own key.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::{StoreError, FORMAT_VERSION};

/// Where a file reader stands, and which file it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePosition {
    pub dev: u64,
    pub ino: u64,
    /// Hash of the file's first line (its first 1 KiB), once it had one.
    pub head: Option<u64>,
    /// Bytes of complete lines handled.
    pub offset: u64,
}

/// Durable read positions; shared by all readers (each writes only its own key).
pub trait PositionStore: Send + Sync {
    fn file(&self, path: &Path) -> Result<Option<FilePosition>, StoreError>;
    fn save_file(&self, path: &Path, position: &FilePosition) -> Result<(), StoreError>;
    fn journal_cursor(&self) -> Result<Option<String>, StoreError>;
    fn save_journal_cursor(&self, cursor: &str) -> Result<(), StoreError>;
}

/// A position record on disk.
#[derive(Serialize, Deserialize)]
pub(super) struct PositionRecord {
    pub v: u32,
    #[serde(flatten)]
    pub position: FilePosition,
}

#[derive(Serialize, Deserialize)]
pub(super) struct CursorRecord {
    pub v: u32,
    pub cursor: String,
}

pub(super) fn file_key(path: &Path) -> Vec<u8> {
    let mut key = b"f/".to_vec();
    key.extend_from_slice(path.as_os_str().as_encoded_bytes());
    key
}

pub(super) const JOURNAL_KEY: &[u8] = b"journal";

pub(super) fn encode_file(position: &FilePosition) -> Vec<u8> {
    serde_json::to_vec(&PositionRecord {
        v: FORMAT_VERSION,
        position: *position,
    })
    .unwrap_or_default()
}

pub(super) fn encode_cursor(cursor: &str) -> Vec<u8> {
    serde_json::to_vec(&CursorRecord {
        v: FORMAT_VERSION,
        cursor: cursor.to_string(),
    })
    .unwrap_or_default()
}

/// Positions in memory, for unit tests.
#[derive(Default)]
pub struct MemoryPositions {
    values: Mutex<HashMap<Vec<u8>, Vec<u8>>>,
}

impl MemoryPositions {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.values
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    fn put(&self, key: Vec<u8>, value: Vec<u8>) {
        self.values
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, value);
    }
}

impl PositionStore for MemoryPositions {
    fn file(&self, path: &Path) -> Result<Option<FilePosition>, StoreError> {
        Ok(self
            .get(&file_key(path))
            .and_then(|v| serde_json::from_slice::<PositionRecord>(&v).ok())
            .map(|r| r.position))
    }

    fn save_file(&self, path: &Path, position: &FilePosition) -> Result<(), StoreError> {
        self.put(file_key(path), encode_file(position));
        Ok(())
    }

    fn journal_cursor(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .get(JOURNAL_KEY)
            .and_then(|v| serde_json::from_slice::<CursorRecord>(&v).ok())
            .map(|r| r.cursor))
    }

    fn save_journal_cursor(&self, cursor: &str) -> Result<(), StoreError> {
        self.put(JOURNAL_KEY.to_vec(), encode_cursor(cursor));
        Ok(())
    }
}
