//! Endpoint Security adapter (macOS only). The only module that knows `endpoint_sec` types.
//!
//! For now it holds what the rest of the crate needs to agree on with the live client: the event
//! subscriptions and a readable explanation of client-creation failures. The live client (a thread
//! owning `Client`, converting each message into `crate::event::Event` and `try_send`ing it) is
//! built on top of this.

use endpoint_sec::sys::{es_event_type_t, NewClientError};
use endpoint_sec::{version, Client, Message};

/// NOTIFY events detection consumes (the same set eslogger captures are decoded from).
pub const SUBSCRIPTIONS: [es_event_type_t; 11] = [
    es_event_type_t::ES_EVENT_TYPE_NOTIFY_EXEC,
    es_event_type_t::ES_EVENT_TYPE_NOTIFY_CREATE,
    es_event_type_t::ES_EVENT_TYPE_NOTIFY_WRITE,
    es_event_type_t::ES_EVENT_TYPE_NOTIFY_CLOSE,
    es_event_type_t::ES_EVENT_TYPE_NOTIFY_RENAME,
    es_event_type_t::ES_EVENT_TYPE_NOTIFY_UNLINK,
    es_event_type_t::ES_EVENT_TYPE_NOTIFY_SETMODE,
    es_event_type_t::ES_EVENT_TYPE_NOTIFY_SETOWNER,
    es_event_type_t::ES_EVENT_TYPE_NOTIFY_SETEXTATTR,
    es_event_type_t::ES_EVENT_TYPE_NOTIFY_KEXTLOAD,
    es_event_type_t::ES_EVENT_TYPE_NOTIFY_KEXTUNLOAD,
];

/// What to tell an admin when the client cannot be created.
pub fn explain(e: NewClientError) -> &'static str {
    match e {
        NewClientError::NotPrivileged => "not running as root: Endpoint Security clients must run as root",
        NewClientError::NotPermitted => {
            "Full Disk Access is missing: grant it to kextwatch (TCC / PPPC profile SystemPolicyAllFiles)"
        }
        NewClientError::NotEntitled => {
            "the binary lacks the com.apple.developer.endpoint-security.client entitlement; use --source eslogger"
        }
        NewClientError::TooManyClients => "too many Endpoint Security clients are connected",
        _ => "Endpoint Security refused the client (internal error or invalid argument)",
    }
}

/// Create a client subscribed to [`SUBSCRIPTIONS`] whose handler passes each message's event type and
/// global sequence number to `on_message`; proves the subscription set is valid on this Mac.
pub fn probe(
    macos: (u64, u64, u64),
    on_message: impl Fn(u32, Option<u64>) + std::panic::RefUnwindSafe + 'static,
) -> Result<(), String> {
    version::set_runtime_version(macos.0, macos.1, macos.2);
    let handler = move |_: &mut Client<'_>, msg: Message| {
        on_message(msg.event_type().0, msg.global_seq_num());
    };
    let mut client = Client::new(handler).map_err(|e| explain(e).to_string())?;
    client
        .subscribe(&SUBSCRIPTIONS)
        .map_err(|e| format!("subscribe failed: {e:?}"))?;
    Ok(())
}
