//! Read positions of the log sources, as the sources encode them: opaque bytes per
//! source key (a file's identity and offset, the journal's cursor), each key written
//! by one source only. The sled implementation is in `sled_store.rs`; this is the
//! in-memory fake for unit tests.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::source::{PositionError, Positions};

/// Positions in memory, for unit tests.
#[derive(Default)]
pub struct MemoryPositions {
    values: Mutex<HashMap<Vec<u8>, Vec<u8>>>,
}

impl Positions for MemoryPositions {
    fn load(&self, key: &[u8]) -> Result<Option<Vec<u8>>, PositionError> {
        Ok(self
            .values
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned())
    }

    fn save(&self, key: &[u8], position: &[u8]) -> Result<(), PositionError> {
        self.values
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_vec(), position.to_vec());
        Ok(())
    }
}
