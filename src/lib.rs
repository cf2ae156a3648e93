//! cdc-bridge: change-data-capture from v1 MySQL/MariaDB databases (one per
//! tenant) through Kafka into the v2 schema, with regenerated documents.
//!
//! Modules follow the flow of data: [`event`] is the envelope every stage
//! speaks, [`transport`] is Kafka, [`ops`] holds the operator commands,
//! [`config`] and [`cli`] the edges.

pub mod cli;
pub mod config;
pub mod documents;
pub mod event;
pub mod ops;
pub mod sink;
pub mod source;
pub mod transform;
pub mod transport;
