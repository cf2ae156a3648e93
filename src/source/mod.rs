//! The source: a consistent snapshot of the selected tenants' tables, then the
//! binlog from exactly the position the snapshot corresponds to.
//!
//! Values are decoded once, here, into the typed [`crate::event::Value`]; the
//! snapshot and the binlog decode through the same conversions so a row reads
//! the same whichever path brought it.

pub mod charset;
pub mod convert;
pub mod schema;
