//! Placeholder until the store work lands.
use super::{StoreError, StoreResult};

pub struct SqliteStore;

impl SqliteStore {
    pub async fn open(url: &str) -> StoreResult<Self> {
        Err(StoreError::UnsupportedUrl(url.to_string()))
    }
}
