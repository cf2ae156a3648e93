//! The v1→v2 transform: the conversions a mapping names ([`convert`]) and the
//! deterministic v2 identities ([`keys`]). The declarative mapping files and
//! mapping mode build on these.

pub mod convert;
pub mod hooks;
pub mod keys;
pub mod mapping;
