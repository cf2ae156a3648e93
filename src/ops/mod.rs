//! Operator commands: checks, status, verification, cutover, replay.

pub mod check;
pub mod metrics;
pub mod tail;
