//! The system extension: running as it, and asking macOS to activate or deactivate it.

use std::process::ExitCode;

use super::logging::{error_chain, init_logging};
use crate::SysextCommand;

/// The Endpoint Security system extension: the daemon with the ES source, the installed config
/// (or MDM's managed preferences, which take precedence), logging to the unified log.
pub fn run_system_extension(bundle: &str) -> ExitCode {
    init_logging(true);
    let ignored: Vec<String> = std::env::args().skip(1).collect();
    tracing::info!(bundle, ?ignored, "starting as the system extension");
    let options = kextwatch::daemon::DaemonOptions {
        config_path: kextwatch::layout::CONFIG.into(),
        managed_prefs: kextwatch::layout::MANAGED_PREFERENCES.into(),
        source: kextwatch::source::SourceSpec::Es,
        eslogger: "/usr/bin/eslogger".into(),
    };
    match kextwatch::daemon::run(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %error_chain(&e.into()), "system extension stopped");
            ExitCode::FAILURE
        }
    }
}

#[cfg(target_os = "macos")]
pub fn sysext(command: SysextCommand) -> anyhow::Result<ExitCode> {
    use kextwatch::layout::{APP_BUNDLE_ID as APP, SYSEXT_BUNDLE_ID as AGENT};
    use kextwatch::sysext::{request, status, Progress};
    let secs = std::time::Duration::from_secs;
    let say = |p: &Progress| {
        match p {
        Progress::NeedsUserApproval => eprintln!(
            "waiting for approval: System Settings > General > Login Items & Extensions (or an MDM system-extension profile)"
        ),
        Progress::Completed => eprintln!("done"),
        Progress::WillCompleteAfterReboot => eprintln!("done; takes effect after a reboot"),
        Progress::Failed(e) => eprintln!("failed: {e}"),
    }
    };
    let outcome = match command {
        SysextCommand::Activate { wait } => request(AGENT, true, secs(wait), say)?,
        SysextCommand::Deactivate { wait } => request(AGENT, false, secs(wait), say)?,
        SysextCommand::Status => {
            for (id, version, enabled) in status(APP)? {
                println!(
                    "{id} {version} {}",
                    if enabled { "enabled" } else { "not enabled" }
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    Ok(match outcome {
        Progress::Completed | Progress::WillCompleteAfterReboot => ExitCode::SUCCESS,
        Progress::NeedsUserApproval => {
            eprintln!(
                "not approved yet: the request stays pending until a user or MDM approves it"
            );
            ExitCode::FAILURE
        }
        Progress::Failed(_) => ExitCode::FAILURE,
    })
}

#[cfg(not(target_os = "macos"))]
pub fn sysext(_: SysextCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`kextwatch sysext` manages a macOS system extension and runs only on macOS")
}
