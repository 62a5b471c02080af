//! At start: is kextwatch installed and its state as the last run left them? The binary signed by
//! kextwatch's Team ID (when `tamper.team_id` is set), the LaunchDaemon plist running it, and every
//! state file the last run recorded in its ledger still there. What is wrong is reported by
//! detection as tampering; a state directory with no ledger is a first start (or a wiped one).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::signing::Signature;

/// The ledger's file name in `state_dir`.
pub const LEDGER: &str = "run-ledger.json";

/// Files in `state_dir` that come and go by design, never recorded.
const TRANSIENT: [&str; 3] = [LEDGER, "status.json", "kextwatch.lock"];

#[derive(Debug, Default, Serialize, Deserialize)]
struct Ledger {
    /// State files present when the last run recorded them.
    files: Vec<String>,
}

/// What the start-up check found.
#[derive(Debug, Default, PartialEq)]
pub struct Integrity {
    /// Each thing not as it should be, in words.
    pub problems: Vec<String>,
    /// No ledger: the first start in this state directory, or its state was wiped.
    pub fresh: bool,
}

/// Check the installation and `state_dir` against `config` and the last run's ledger.
pub fn check(config: &Config, state_dir: &Path) -> Integrity {
    let mut problems = Vec::new();
    let t = &config.tamper;
    if let Some(team) = &t.team_id {
        for exe in t.executables.iter().map(Path::new).filter(|p| p.exists()) {
            match crate::signing::executable_signer(exe) {
                Ok((Signature::Developer, Some(signer))) if &signer == team => {}
                Ok((sig, signer)) => problems.push(format!(
                    "{} is not signed by kextwatch's team {team} (signature: {}{})",
                    exe.display(),
                    sig.as_str(),
                    signer.map(|s| format!(", team {s}")).unwrap_or_default()
                )),
                Err(e) => problems.push(format!("{} cannot be read: {e}", exe.display())),
            }
        }
    }
    let plist = Path::new(&t.launchd_plist);
    if plist.exists() {
        match launchd_program(plist) {
            Ok(program) if t.executables.contains(&program) => {}
            Ok(program) => problems.push(format!(
                "the LaunchDaemon {} runs {program}, not kextwatch",
                plist.display()
            )),
            Err(e) => problems.push(format!("the LaunchDaemon {}: {e}", plist.display())),
        }
    }
    let ledger = crate::files::read_regular(
        &state_dir.join(LEDGER),
        1 << 20,
        crate::files::Links::Refuse,
    );
    let fresh = match ledger {
        Ok(bytes) => {
            match serde_json::from_slice::<Ledger>(&bytes) {
                Ok(l) => {
                    for f in l.files {
                        if !state_dir.join(&f).exists() {
                            problems.push(format!(
                                "{} was removed since the last run",
                                state_dir.join(&f).display()
                            ));
                        }
                    }
                }
                Err(e) => problems.push(format!("the run ledger is damaged: {e}")),
            }
            false
        }
        Err(e) if e.is_not_found() => true,
        Err(e) => {
            problems.push(format!("the run ledger cannot be read: {e}"));
            false
        }
    };
    Integrity { problems, fresh }
}

/// The program a LaunchDaemon plist runs (`ProgramArguments[0]`, or `Program`).
fn launchd_program(plist: &Path) -> Result<String, String> {
    let bytes = crate::files::read_regular(plist, 1 << 20, crate::files::Links::Refuse)
        .map_err(|e| e.to_string())?;
    crate::signing::check_plist(&bytes).map_err(|e| e.to_string())?;
    let v: plist::Value = plist::from_bytes(&bytes).map_err(|e| e.to_string())?;
    let d = v.as_dictionary().ok_or("not a dictionary")?;
    let program = d
        .get("Program")
        .and_then(|p| p.as_string())
        .or_else(|| {
            d.get("ProgramArguments")
                .and_then(|a| a.as_array())
                .and_then(|a| a.first())
                .and_then(|p| p.as_string())
        })
        .ok_or("no Program or ProgramArguments")?;
    Ok(crate::path::normalize(program).into_owned())
}

/// The state files present now.
fn state_files(state_dir: &Path) -> std::io::Result<Vec<String>> {
    let mut files: Vec<String> = std::fs::read_dir(state_dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !TRANSIENT.contains(&n.as_str()) && !n.starts_with('.') && !n.contains(".tmp"))
        .collect();
    files.sort();
    Ok(files)
}

/// Record the state files present now, for the next start to compare with.
#[cfg(test)]
fn record(state_dir: &Path) -> std::io::Result<()> {
    LedgerWriter::default()
        .record_if_changed(state_dir)
        .map(drop)
}

/// Keeps the ledger current while the daemon runs, rewriting it only when the files changed.
#[derive(Debug, Default)]
pub struct LedgerWriter {
    last: Option<Vec<String>>,
}

impl LedgerWriter {
    /// Rewrite the ledger if the state files changed since the last call; whether it did.
    pub fn record_if_changed(&mut self, state_dir: &Path) -> std::io::Result<bool> {
        let files = state_files(state_dir)?;
        if self.last.as_ref() == Some(&files) {
            return Ok(false);
        }
        let bytes = serde_json::to_vec(&Ledger {
            files: files.clone(),
        })
        .map_err(std::io::Error::other)?;
        crate::files::replace_file(
            &state_dir.join(LEDGER),
            &bytes,
            0o600,
            crate::files::Durability::Synced,
        )?;
        self.last = Some(files);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_for(dir: &Path) -> Config {
        let mut c = Config::default_config();
        c.tamper.executables = vec![dir.join("kextwatch").display().to_string()];
        c.tamper.launchd_plist = dir.join("com.kextwatch.daemon.plist").display().to_string();
        c
    }

    fn write_plist(dir: &Path, program: &str) {
        let mut d = plist::Dictionary::new();
        d.insert("Label".into(), "com.kextwatch.daemon".into());
        d.insert(
            "ProgramArguments".into(),
            plist::Value::Array(vec![program.into(), "run".into()]),
        );
        plist::Value::Dictionary(d)
            .to_file_xml(dir.join("com.kextwatch.daemon.plist"))
            .unwrap();
    }

    #[test]
    fn a_first_start_is_fresh_and_a_removed_state_file_is_named_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_for(dir.path());
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        assert_eq!(
            check(&config, &state),
            Integrity {
                problems: vec![],
                fresh: true
            }
        );
        std::fs::write(state.join("kextpolicy-state.sqlite"), b"x").unwrap();
        std::fs::write(state.join("spool-siem.sqlite"), b"x").unwrap();
        std::fs::write(state.join("status.json"), b"{}").unwrap();
        record(&state).unwrap();
        assert_eq!(check(&config, &state), Integrity::default());
        // Status comes and goes; a removed spool or snapshot is reported, not re-baselined.
        std::fs::remove_file(state.join("status.json")).unwrap();
        std::fs::remove_file(state.join("spool-siem.sqlite")).unwrap();
        let found = check(&config, &state);
        assert!(!found.fresh);
        assert_eq!(found.problems.len(), 1, "{found:?}");
        assert!(found.problems[0].ends_with("spool-siem.sqlite was removed since the last run"));
        // A ledger replaced by a link (to hide what was there) is not read and not a fresh start.
        std::fs::remove_file(state.join(LEDGER)).unwrap();
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("/dev/null", state.join(LEDGER)).unwrap();
            let found = check(&config, &state);
            assert!(!found.fresh);
            assert_eq!(found.problems.len(), 1, "{found:?}");
            assert!(
                found.problems[0].starts_with("the run ledger cannot be read"),
                "{found:?}"
            );
        }
    }

    #[test]
    fn the_ledger_is_rewritten_only_when_the_state_files_change() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = LedgerWriter::default();
        assert!(w.record_if_changed(dir.path()).unwrap());
        assert!(!w.record_if_changed(dir.path()).unwrap());
        std::fs::write(dir.path().join("status.json"), b"{}").unwrap();
        assert!(
            !w.record_if_changed(dir.path()).unwrap(),
            "status is transient"
        );
        std::fs::write(dir.path().join("spool-a.sqlite"), b"x").unwrap();
        assert!(w.record_if_changed(dir.path()).unwrap());
    }

    #[test]
    fn the_launch_daemon_must_run_kextwatch() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_for(dir.path());
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        record(&state).unwrap();
        let exe = dir.path().join("kextwatch").display().to_string();
        write_plist(dir.path(), &exe);
        assert_eq!(check(&config, &state).problems, Vec::<String>::new());
        write_plist(dir.path(), "/private/tmp/.x/fake");
        let p = check(&config, &state).problems;
        assert_eq!(p.len(), 1);
        assert!(
            p[0].ends_with("runs /private/tmp/.x/fake, not kextwatch"),
            "{p:?}"
        );
    }

    #[test]
    fn with_a_team_id_the_installed_binary_must_carry_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config_for(dir.path());
        config.tamper.team_id = Some("ABCDE12345".into());
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        record(&state).unwrap();
        // A binary with a real developer signature (team K3XW9TESTQ, the fixture's).
        let signed = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/kexts/Developer.kext/Contents/MacOS/Developer"
        );
        std::fs::copy(signed, dir.path().join("kextwatch")).unwrap();
        let p = check(&config, &state).problems;
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].ends_with("is not signed by kextwatch's team ABCDE12345 (signature: developer, team K3XW9TESTQ)"), "{p:?}");
        config.tamper.team_id = Some("K3XW9TESTQ".into());
        assert_eq!(check(&config, &state).problems, Vec::<String>::new());
        // A script dropped in its place.
        std::fs::write(dir.path().join("kextwatch"), b"#!/bin/sh\nexit 0\n").unwrap();
        let p = check(&config, &state).problems;
        assert_eq!(p.len(), 1, "{p:?}");
    }
}
