//! Event sources. Each turns outside input into the shared event model.

pub mod replay;

#[cfg(target_os = "macos")]
pub mod es;

#[cfg(target_os = "macos")]
pub mod sip;
