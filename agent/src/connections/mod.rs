//! Connections and who owns them: the bounded connection table and process identity.

pub mod hash;
pub mod identity;
pub mod table;
