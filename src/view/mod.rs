//! The served view: what the HTTP server answers from, built from the
//! shared caches ([`crate::cache`]) and nothing else. Compiled dials with
//! the alarms that fire now ([`dials`], [`firing`]), and the gates of merge
//! trains ([`gates`]). The server (`crate::server`) keeps the wire formats;
//! neither imports a controller.

pub mod dials;
pub mod exception_uses;
pub mod firing;
pub mod gates;
