//! The in-memory directory built from a [`Scenario`](crate::scenario::Scenario): users, groups,
//! devices, contacts and subscribed SKUs, with the license rules of Microsoft Entra ID.
//!
//! Layout is chosen for large tenants: users are kept in flat vectors indexed by a `u32`, names and
//! addresses are derived from that index instead of being stored, and each user has its own small
//! lock so that license writes on different users never contend. SKU seat counters are atomics, so
//! a seat is reserved with a compare-and-swap and can never be oversold.
//!
//! By subject: [`model`] (the types and lookups), [`build`] (from a scenario), [`json`] (Graph's
//! JSON shapes) and [`rules`] (license writes and the rules they obey).

mod build;
mod json;
mod model;
mod rules;

pub use json::USER_PROPS;
pub use model::{Directory, Members, ObjRef};
pub use rules::parse_country;
