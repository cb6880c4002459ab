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

/// The process allocator: job work makes many small, short-lived allocations (JSON, rows,
/// requests), which mimalloc serves at a fraction of the system allocator's cost.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Allocator settings, applied once at start: freed memory goes back to the system at once
/// rather than after a delay, so a long job's resident memory stays flat.
pub fn tune_allocator() {
    // `mi_option_purge_delay` in mimalloc.h (milliseconds; 0 = purge at once).
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: setting a mimalloc option has no preconditions; it is read on later purges.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
}
