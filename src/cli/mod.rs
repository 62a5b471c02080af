//! The commands, one function each: `main` parses the command line into arguments and calls them.
//! What they print for people is rendered by the library (`offline::Summary`, `Status::render`,
//! the tables in `text`); here it is only put on the terminal.

mod logging;
mod sysext;

use std::fs::File;
use std::io::{self, BufReader, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use kextwatch::config::{Config, OutputSpec};
use kextwatch::detect::Engine;
use kextwatch::enrich::BundleEnricher;
use kextwatch::inventory;
use kextwatch::kextpolicy;
use kextwatch::offline::{
    policy_diff as diff_policy, replay as replay_capture, replay_parallel, ReplayError, Summary,
};
use kextwatch::output::{OutputError, Outputs};
use kextwatch::signing::IdentityCache;
use kextwatch::source::lines::Batching;

use crate::{AlertArgs, Cli, ShowFormat};
pub use logging::{error_chain, init_logging};
pub use sysext::{run_system_extension, sysext};

impl AlertArgs {
    /// The config with the command line's overrides applied, and its outputs opened.
    pub fn settings(&self) -> anyhow::Result<(Config, Outputs)> {
        let mut config = load_config(self.config.as_deref())?;
        if let Some(s) = self.min_severity {
            config.detection.min_severity = s;
        }
        let format = self.format;
        let mut specs = config.command_outputs();
        for o in &mut specs {
            if let OutputSpec::Stdout { format: f } = o {
                *f = format;
            }
        }
        let outputs = Outputs::open(&specs, Some(&config.daemon.state_dir))?;
        Ok((config, outputs))
    }
}

fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    Ok(match path {
        Some(path) => Config::load(path)?,
        None => Config::default_config(),
    })
}

/// Print a shell completion script.
pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<ExitCode> {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    // Into memory first: the generator panics on a write error (`| head` closing the pipe).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "kextwatch", &mut script);
    io::Write::write_all(&mut io::stdout(), &script)?;
    Ok(ExitCode::SUCCESS)
}

/// Print the manual page.
pub fn man() -> anyhow::Result<ExitCode> {
    clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).render(&mut io::stdout())?;
    Ok(ExitCode::SUCCESS)
}

/// Validate a config file.
pub fn check_config(file: PathBuf) -> anyhow::Result<ExitCode> {
    let config = Config::load(&file)?;
    let a = &config.allowlist;
    println!(
        "{}: ok ({} team ids, {} kexts, {} initiators allowlisted; {} outputs)",
        file.display(),
        a.team_ids.len(),
        a.kexts.len(),
        a.initiators.len(),
        config.daemon_outputs().len()
    );
    Ok(ExitCode::SUCCESS)
}

/// Analyse an eslogger capture.
pub fn replay(
    input: PathBuf,
    alerts: AlertArgs,
    kext_policy: Option<PathBuf>,
    bundles_root: Option<PathBuf>,
    host_name: Option<String>,
    quiet: bool,
) -> anyhow::Result<ExitCode> {
    let (config, mut outputs) = alerts.settings()?;
    let mut engine = Engine::new(config);
    if let Some(name) = &host_name {
        engine.set_host(kextwatch::alert::Host::named(name));
    }
    if let Some(db) = &kext_policy {
        engine.set_kext_policy(&kextpolicy::read_file(db)?);
    }
    let mut enricher = match &bundles_root {
        Some(root) => Some(
            BundleEnricher::new(root).map_err(|e| anyhow::anyhow!("{}: {e}", root.display()))?,
        ),
        None => None,
    };
    let summary = match replay_input(&input, engine, enricher.as_mut(), &mut outputs, quiet) {
        Ok(s) => s,
        // A reader that went away (`| head`) is not a failure of the analysis.
        Err(ReplayError::Output(OutputError::Write { source, .. }))
            if source.kind() == io::ErrorKind::BrokenPipe =>
        {
            return Ok(ExitCode::SUCCESS)
        }
        Err(ReplayError::Read(e)) => anyhow::bail!("cannot read {}: {e}", input.display()),
        Err(e) => return Err(e.into()),
    };
    if !quiet {
        eprint!("{summary}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Write the MDM configuration profile.
pub fn profile(
    team_id: String,
    bundle_id: String,
    config: Option<PathBuf>,
    organization: String,
    allow_user_overrides: bool,
    output: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let config_toml = match &config {
        Some(p) => Some(
            kextwatch::files::read_regular_text(
                p,
                kextwatch::config::MAX_CONFIG_BYTES,
                kextwatch::files::Links::Follow,
            )
            .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?,
        ),
        None => None,
    };
    let profile = kextwatch::profile::build(&kextwatch::profile::ProfileRequest {
        team_id: &team_id,
        bundle_id: &bundle_id,
        config_toml: config_toml.as_deref(),
        organization: &organization,
        allow_user_overrides,
    })?;
    let xml = kextwatch::profile::to_xml(&profile);
    match output {
        Some(path) => {
            std::fs::write(&path, &xml).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            eprintln!(
                "wrote {} (unsigned: sign it, or let your MDM sign it, before deploying)",
                path.display()
            );
        }
        None => {
            use std::io::Write as _;
            io::stdout().write_all(&xml)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Run the daemon in the foreground.
pub fn run_daemon(
    config: PathBuf,
    source: kextwatch::source::SourceSpec,
    eslogger: PathBuf,
    managed_prefs: PathBuf,
) -> anyhow::Result<ExitCode> {
    kextwatch::daemon::run(kextwatch::daemon::DaemonOptions {
        config_path: config,
        managed_prefs,
        source,
        eslogger,
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Check what the daemon needs.
pub fn doctor(config: PathBuf, eslogger: PathBuf) -> anyhow::Result<ExitCode> {
    use kextwatch::doctor::Verdict;
    let checks = kextwatch::doctor::run(&config, &eslogger);
    for c in &checks {
        let mark = match c.verdict {
            Verdict::Ok => "ok  ",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
        };
        println!("{mark} {}: {}", c.name, c.detail);
        if let Some(fix) = &c.fix {
            println!("     fix: {fix}");
        }
    }
    Ok(if checks.iter().any(|c| c.verdict == Verdict::Fail) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Show the running daemon's health.
pub fn status(config: Option<PathBuf>, json: bool) -> anyhow::Result<ExitCode> {
    let config = load_config(config.as_deref())?;
    let path = config.daemon.state_dir.join(kextwatch::daemon::STATUS_FILE);
    let mut status = kextwatch::daemon::Status::read(&path).map_err(|e| {
        anyhow::anyhow!("no status from a daemon ({e}); is `kextwatch run` running?")
    })?;
    // The file says what the daemon last wrote; the lock says whether it is alive now
    // (a SIGKILLed daemon never wrote "stopped").
    let alive = kextwatch::daemon::InstanceLock::is_held(&config.daemon.state_dir);
    let stale = status.running && !alive;
    status.running &= alive;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", status.render(stale));
    }
    Ok(if status.running {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Send a synthetic alert through the outputs.
pub fn test_alert(path: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let config = load_config(path.as_deref())?;
    // The route the daemon running with that config takes; without one, just stdout.
    let specs = match path {
        Some(_) => config.daemon_outputs(),
        None => config.command_outputs(),
    };
    let mut outputs = Outputs::open(&specs, Some(&config.daemon.state_dir))?;
    let alert = kextwatch::alert::test_alert(
        kextwatch::wallclock::now_rfc3339(),
        kextwatch::host::this_host(),
    );
    outputs.write(&alert)?;
    outputs.finish(std::time::Duration::from_secs(10))?;
    let (writers, syslog) = outputs.report();
    for w in writers {
        match &w.last_error {
            None => eprintln!("test alert written to {}", w.name),
            Some(e) => eprintln!("test alert NOT written to {}: {e}", w.name),
        }
    }
    let mut failed = false;
    for s in syslog {
        if s.spool_depth == 0 && s.written > 0 {
            eprintln!("test alert delivered to {}", s.name);
        } else {
            failed = true;
            eprintln!(
                "test alert NOT delivered to {} ({}); it is spooled and will be retried",
                s.name,
                s.last_error.as_deref().unwrap_or("no error recorded")
            );
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// List kexts with their signing identity.
pub fn inventory(
    roots: Vec<PathBuf>,
    format: ShowFormat,
    baseline: bool,
) -> anyhow::Result<ExitCode> {
    let roots = if roots.is_empty() {
        vec![PathBuf::from("/Library/Extensions")]
    } else {
        roots
    };
    if let Some(missing) = roots.iter().find(|r| !r.exists()) {
        anyhow::bail!("{}: no such file or directory", missing.display());
    }
    let (kexts, errors) = inventory::inventory(&roots, &mut IdentityCache::new());
    if baseline {
        print!("{}", inventory::baseline_toml(&kexts, &roots));
    } else {
        match format {
            ShowFormat::Table => print!("{}", inventory::render_table(&kexts)),
            ShowFormat::Json => {
                for k in &kexts {
                    println!("{}", serde_json::to_string(k)?);
                }
            }
        }
    }
    for e in &errors {
        eprintln!("kextwatch: {e}");
    }
    let invalid = kexts.iter().filter(|k| k.error.is_some()).count();
    eprintln!(
        "{} kexts ({invalid} with errors); {} unreadable paths",
        kexts.len(),
        errors.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// Print the KextPolicy tables.
pub fn policy_show(
    db: Option<PathBuf>,
    config: Option<PathBuf>,
    format: ShowFormat,
) -> anyhow::Result<ExitCode> {
    let db = match db {
        Some(db) => db,
        None => load_config(config.as_deref())?.kextpolicy.path,
    };
    let snapshot = kextpolicy::read_file(&db)?;
    match format {
        ShowFormat::Table => print!("{}", kextpolicy::render_table(&snapshot)),
        ShowFormat::Json => {
            println!("{}", serde_json::to_string_pretty(&snapshot.tables())?)
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Print the alerts a KextPolicy change raises.
pub fn policy_diff(old: PathBuf, new: PathBuf, alerts: AlertArgs) -> anyhow::Result<ExitCode> {
    let (config, mut outputs) = alerts.settings()?;
    let before = kextpolicy::read_file(&old)?;
    let after = kextpolicy::read_file(&new)?;
    // Approvals carry no time: they are stamped with the time the NEW copy was last written.
    let observed_ns = std::fs::metadata(&new)
        .and_then(|m| m.modified())
        .map_or(0, kextwatch::wallclock::epoch_ns);
    let summary = diff_policy(
        &before,
        &after,
        Engine::new(config),
        observed_ns,
        &mut outputs,
    )?;
    eprintln!("{} -> {}: {summary}", old.display(), new.display());
    Ok(ExitCode::SUCCESS)
}

/// The replay's progress bar; alerts are written while it is hidden.
struct Bar<'a>(&'a indicatif::ProgressBar);

impl kextwatch::offline::Progress for Bar<'_> {
    fn position(&mut self, bytes: u64) {
        self.0.set_position(bytes);
    }

    fn around_output(
        &mut self,
        write: &mut dyn FnMut() -> Result<(), kextwatch::output::OutputError>,
    ) -> Result<(), kextwatch::output::OutputError> {
        self.0.suspend(write)
    }
}

/// Replay a file (with a progress bar when stderr is a terminal) or standard input (`-`).
fn replay_input(
    input: &Path,
    engine: Engine,
    enricher: Option<&mut BundleEnricher>,
    outputs: &mut Outputs,
    quiet: bool,
) -> Result<Summary, ReplayError> {
    if input.as_os_str() == "-" {
        return replay_capture(io::stdin().lock(), engine, enricher, outputs, None);
    }
    let file = File::open(input).map_err(ReplayError::Read)?;
    let len = file
        .metadata()
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len());
    // A FIFO (or a device) is read line by line, so alerts come as their events do; a file is
    // read in large blocks and decoded on every core.
    let Some(len) = len else {
        let reader = BufReader::with_capacity(1 << 20, file);
        return replay_capture(reader, engine, enricher, outputs, None);
    };
    let reader = file;
    let batching = Batching::per_core();
    if !io::stderr().is_terminal() || quiet {
        return replay_parallel(reader, engine, enricher, outputs, None, batching);
    }
    let bar = indicatif::ProgressBar::new(len).with_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let r = replay_parallel(
        reader,
        engine,
        enricher,
        outputs,
        Some(&mut Bar(&bar)),
        batching,
    );
    bar.finish_and_clear();
    r
}
