//! Placeholder until the store work lands.
use super::{StoreError, StoreResult};

pub struct PostgresStore;

impl PostgresStore {
    pub async fn open(url: &str) -> StoreResult<Self> {
        Err(StoreError::UnsupportedUrl(url.to_string()))
    }
}
