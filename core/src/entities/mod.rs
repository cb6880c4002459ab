//! sea-orm entities, one per table. Queries on tenant data live in the modules beside this one
//! (`tenants`, `tokens`, `jobs`, `licenses`, `audit`, `webhooks`), each taking the tenant id.

pub mod api_token;
pub mod audit_log;
pub mod idempotency_key;
pub mod job;
pub mod job_activity;
pub mod job_item;
pub mod job_run;
pub mod license;
pub mod license_assignment;
pub mod license_seat;
pub mod tenant;
pub mod tenant_writer;
pub mod webhook_delivery;
pub mod webhook_endpoint;
pub mod worker_process;
