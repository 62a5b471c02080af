//! kextwatch: detection for the macOS kernel-extension attack surface (ATT&CK T1547.006).
//!
//! See ARCHITECTURE.md for the data flow and the invariants the modules keep.

pub mod alert;
pub mod config;
pub mod daemon;
pub mod detect;
pub mod doctor;
pub mod enrich;
pub mod event;
pub mod files;
pub mod host;
pub mod inventory;
pub mod kextpolicy;
pub mod layout;
pub mod offline;
pub mod output;
pub mod path;
pub mod profile;
pub mod signing;
pub mod source;
#[cfg(target_os = "macos")]
pub mod sysext;
pub mod text;
pub mod wallclock;
