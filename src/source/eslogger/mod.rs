//! eslogger, Apple's command-line Endpoint Security client: its JSON Lines (`json`, also what
//! `kextwatch replay` reads) and eslogger run as the daemon's event source (`process`).

pub mod json;
pub mod process;

pub use json::{decode_line, event_type, parse_time, DecodeError, Decoded, Meta};
pub use process::{eslogger_events, ESLOGGER_EVENTS, ESLOGGER_EVENTS_WHERE_KNOWN};
