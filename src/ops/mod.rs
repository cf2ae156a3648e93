//! Operator commands: checks, status, verification, cutover, replay.

pub mod check;
pub mod cutover;
pub mod generate;
pub mod health;
pub mod mapping;
pub mod metrics;
pub mod signal;
pub mod status;
pub mod tail;
pub mod verify;
