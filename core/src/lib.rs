//! licensor-core: configuration, domain types, storage and the queue that the API, the workers
//! and the CLI share.

pub mod audit;
pub mod config;
pub mod crypto;
pub mod db;
pub mod directory;
pub mod domain;
pub mod entities;
pub mod error;
pub mod idempotency;
pub mod jobs;
pub mod licenses;
pub mod page;
pub mod queue;
pub mod tasks;
pub mod tenants;
pub mod tokens;
pub mod webhooks;

pub use config::{ConfigError, Settings};
pub use error::{StoreError, StoreResult};
