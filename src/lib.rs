//! licensor: group license jobs, seat inventory and started licenses for organisations.
//!
//! The binary's `main` only parses the command line and calls [`cli::run`]; everything that runs
//! can be started from a test through [`app::Application`].

pub mod api;
pub mod app;
pub mod cli;
pub mod telemetry;
pub mod web;

pub use app::{Application, Roles};
