//! Where the package installs kextwatch: the Rust side of `packaging/scripts/layout.env`, which
//! the packaging scripts read (`tests/packaging.rs` checks each constant here against that file).

use std::path::Path;

/// The daemon-mode binary, which is also the admin CLI.
pub const BINARY: &str = "/Library/Application Support/kextwatch/kextwatch";
/// Its code-signing identifier (the TCC and service-management rules name it).
pub const BINARY_SIGNING_ID: &str = "com.kextwatch.kextwatch";
pub const CONFIG: &str = "/Library/Application Support/kextwatch/kextwatch.toml";
pub const STATE_DIR: &str = "/var/db/kextwatch";
pub const LOG_DIR: &str = "/var/log/kextwatch";
/// Where the daemon writes alerts when the config names no output (rotated by newsyslog).
pub const ALERT_LOG: &str = "/var/log/kextwatch/alerts.jsonl";
pub const LAUNCHD_LABEL: &str = "com.kextwatch.daemon";
pub const LAUNCHD_PLIST: &str = "/Library/LaunchDaemons/com.kextwatch.daemon.plist";
pub const APP: &str = "/Applications/Kextwatch.app";
pub const APP_BUNDLE_ID: &str = "com.kextwatch.app";
pub const SYSEXT_BUNDLE_ID: &str = "com.kextwatch.app.agent";
/// The system extension's executable inside the host app.
pub const SYSEXT_EXECUTABLE: &str = "/Applications/Kextwatch.app/Contents/Library/SystemExtensions/com.kextwatch.app.agent.systemextension/Contents/MacOS/com.kextwatch.app.agent";
/// The preference domain of the managed configuration (`kextwatch profile --config`).
pub const PREFERENCE_DOMAIN: &str = "com.kextwatch";
/// Where macOS puts the managed preferences MDM delivers for that domain.
pub const MANAGED_PREFERENCES: &str = "/Library/Managed Preferences/com.kextwatch.plist";

/// The bundle id of the system extension `exe` runs as, when it is the executable of a
/// `.systemextension` bundle (`…/ID.systemextension/Contents/MacOS/NAME`). sysextd starts an
/// extension with no arguments, so the bundle it runs from is what says it is one.
pub fn system_extension_of(exe: &Path) -> Option<&str> {
    let macos = exe.parent()?;
    let contents = macos.parent()?;
    if macos.file_name()? != "MacOS" || contents.file_name()? != "Contents" {
        return None;
    }
    let bundle = contents.parent()?.file_name()?.to_str()?;
    bundle
        .strip_suffix(".systemextension")
        .filter(|id| !id.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_installed_extension_is_recognised_and_nothing_else_is() {
        assert_eq!(
            system_extension_of(Path::new(SYSEXT_EXECUTABLE)),
            Some(SYSEXT_BUNDLE_ID)
        );
        // Wherever the app is (a copy under ~/Applications, a build folder).
        assert_eq!(
            system_extension_of(Path::new(
                "/tmp/b/Kextwatch.app/Contents/Library/SystemExtensions/x.y.systemextension/Contents/MacOS/x.y"
            )),
            Some("x.y")
        );
        for other in [
            BINARY,
            "/Applications/Kextwatch.app/Contents/MacOS/kextwatch",
            "/tmp/com.kextwatch.app.agent.systemextension/kextwatch",
            "/tmp/x.systemextension/Contents/Resources/kextwatch",
            "/tmp/.systemextension/Contents/MacOS/kextwatch",
            "/Contents/MacOS/kextwatch",
            "kextwatch",
            "",
        ] {
            assert_eq!(system_extension_of(Path::new(other)), None, "{other}");
        }
    }
}
