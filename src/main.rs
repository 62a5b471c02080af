//! The `kextwatch` command line: flags into settings, then the library does the work.
//!
//! Exit codes: 0 the job ran to the end; 1 it could not (invalid config, unreadable input or
//! database, an alert sink failed); 2 the command line was wrong.

use std::fs::File;
use std::io::{self, BufRead, BufReader, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use kextwatch::alert::Severity;
use kextwatch::config::{AlertFormat, Config, OutputSpec};
use kextwatch::detect::Engine;
use kextwatch::enrich::BundleEnricher;
use kextwatch::inventory;
use kextwatch::kextpolicy;
use kextwatch::offline::{policy_diff, replay, ReplayError, Summary};
use kextwatch::output::{OutputError, Outputs};
use kextwatch::signing::IdentityCache;

#[derive(Parser)]
#[command(
    name = "kextwatch",
    version,
    about = "Detection for the macOS kernel-extension attack surface"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Analyse an eslogger capture (JSON Lines) and print the alerts it raises.
    Replay {
        /// eslogger output file, or `-` for standard input (`eslogger exec ... | kextwatch replay -`).
        input: PathBuf,
        #[command(flatten)]
        alerts: AlertArgs,
        /// A KextPolicy database (or a copy) whose Team IDs enrich kext load events.
        #[arg(long, value_name = "DB")]
        kext_policy: Option<PathBuf>,
        /// A collected copy of the Mac's file system (or `/` on the Mac itself): kext bundles that
        /// events stage or load are read from under it for their signing identity.
        #[arg(long, value_name = "DIR")]
        bundles_root: Option<PathBuf>,
        /// The Mac the capture came from, named in every alert (`host.name`, CEF `dvchost`).
        #[arg(long, value_name = "NAME")]
        host_name: Option<String>,
        /// Do not print the summary on stderr.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Run the detection daemon in the foreground (launchd runs it; stop with SIGTERM, reload the
    /// config with SIGHUP).
    Run {
        /// Config file (the installed one: /Library/Application Support/kextwatch/kextwatch.toml).
        #[arg(long, short)]
        config: PathBuf,
        /// Event source: es (Endpoint Security), eslogger, or replay:PATH (a file, or a FIFO that is
        /// followed).
        #[arg(long, default_value = "eslogger")]
        source: kextwatch::source::SourceSpec,
        /// The eslogger binary.
        #[arg(long, default_value = "/usr/bin/eslogger", hide = true)]
        eslogger: PathBuf,
        /// Managed preferences whose ConfigTOML (from `kextwatch profile --config`) overrides --config.
        #[arg(long, default_value = kextwatch::layout::MANAGED_PREFERENCES, hide = true)]
        managed_prefs: PathBuf,
    },
    /// Check what the daemon needs (root, Full Disk Access, Endpoint Security, SIP, config, outputs,
    /// state directory) and say how to fix each failure.
    Doctor {
        /// Config file the daemon runs with.
        #[arg(long, short)]
        config: PathBuf,
        /// The eslogger binary.
        #[arg(long, default_value = "/usr/bin/eslogger", hide = true)]
        eslogger: PathBuf,
    },
    /// Print a shell completion script (`kextwatch completions zsh > _kextwatch`).
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), as the package installs it in man1.
    #[command(hide = true)]
    Man,
    /// Show the running daemon's health and counters (from its status file).
    Status {
        /// Config file (for the state directory); default: the shipped config.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Validate a config file; exits non-zero with the error's file, line and key.
    CheckConfig {
        /// The config file to check.
        file: PathBuf,
    },
    /// Send a clearly marked synthetic alert through the daemon's outputs, to prove the route to
    /// the SIEM end to end; prints where it went and exits 1 if any output could not deliver it.
    TestAlert {
        /// Config file (its [[output]] tables, or with none the daemon's alert log); default:
        /// stdout only.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// List every kext under the roots with its signing identity (default root: /Library/Extensions).
    Inventory {
        /// Folders to search for .kext bundles (a collected copy of a Mac's works too).
        roots: Vec<PathBuf>,
        /// Output: a table for people, or JSON Lines (one kext per line) for tools.
        #[arg(long, value_enum, default_value = "table")]
        format: ShowFormat,
        /// Print an [allowlist] block for the developer-signed kexts found, for the config file.
        #[arg(long, conflicts_with = "format")]
        baseline: bool,
    },
    /// Write a .mobileconfig for MDM: system extension policy, Full Disk Access, background items.
    Profile {
        /// Your Developer Team ID (the one that signs kextwatch).
        #[arg(long)]
        team_id: String,
        /// The system extension's bundle id (com.kextwatch.app.agent as packaged).
        #[arg(long)]
        bundle_id: String,
        /// A config file to deliver as managed preferences (validated first).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// PayloadOrganization shown to users.
        #[arg(long, default_value = "kextwatch")]
        organization: String,
        /// Whether users may still approve system extensions this profile does not name (true is
        /// Apple's default; false leaves only extensions that MDM profiles allow).
        #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
        allow_user_overrides: bool,
        /// Write here instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Activate, deactivate or show the Endpoint Security system extension (macOS; run from
    /// Kextwatch.app's own binary).
    Sysext {
        #[command(subcommand)]
        command: SysextCommand,
    },
    /// Inspect the KextPolicy database.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
}

#[derive(Subcommand, Clone, Copy)]
enum SysextCommand {
    /// Ask macOS to activate the extension (waits for user or MDM approval).
    Activate {
        /// Seconds to wait for the outcome (an installer script: short; the request stays
        /// pending until a user or MDM approves it).
        #[arg(long, value_name = "SECS", default_value_t = 600)]
        wait: u64,
    },
    /// Ask macOS to deactivate it.
    Deactivate {
        /// Seconds to wait for the outcome.
        #[arg(long, value_name = "SECS", default_value_t = 600)]
        wait: u64,
    },
    /// Show the app's extensions and whether they are enabled.
    Status,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Print the approval and load-history tables.
    Show {
        /// Database to read (default: the config's kextpolicy.path, normally
        /// /var/db/SystemPolicyConfiguration/KextPolicy).
        #[arg(long)]
        db: Option<PathBuf>,
        /// Config file (for the default database path).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Output: tables for people, or JSON for tools.
        #[arg(long, value_enum, default_value = "table")]
        format: ShowFormat,
    },
    /// Print the alerts the change from OLD to NEW (two copies of KextPolicy) would raise.
    Diff {
        /// The earlier copy of KextPolicy (a baseline).
        old: PathBuf,
        /// The later copy (collected from the Mac under investigation).
        new: PathBuf,
        #[command(flatten)]
        alerts: AlertArgs,
    },
}

/// Flags shared by the commands that report alerts.
#[derive(Args)]
struct AlertArgs {
    /// Config file (allowlist, detection settings, outputs); default: the shipped config.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Only report alerts at or above this severity (overrides the config).
    #[arg(long, value_enum)]
    min_severity: Option<Severity>,
    /// Format of alerts on stdout.
    #[arg(long, value_enum, default_value = "json")]
    format: FormatArg,
}

impl AlertArgs {
    /// The config with the command line's overrides applied, and its outputs opened.
    fn settings(&self) -> anyhow::Result<(Config, Outputs)> {
        let mut config = load_config(self.config.as_deref())?;
        if let Some(s) = self.min_severity {
            config.detection.min_severity = s;
        }
        let format = match self.format {
            FormatArg::Json => AlertFormat::Json,
            FormatArg::Text => AlertFormat::Text,
            FormatArg::Cef => AlertFormat::Cef,
        };
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

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    /// JSON Lines (the alert contract).
    Json,
    /// One readable line per alert.
    Text,
    /// ArcSight CEF, one line per alert.
    Cef,
}

#[derive(Clone, Copy, ValueEnum)]
enum ShowFormat {
    Table,
    Json,
}

fn main() -> ExitCode {
    // sysextd starts the extension with no arguments: the bundle it runs from says what it is.
    let exe = std::env::current_exe().ok();
    if let Some(bundle) = exe
        .as_deref()
        .and_then(kextwatch::layout::system_extension_of)
    {
        return run_system_extension(bundle);
    }
    let cli = Cli::parse();
    let daemon = matches!(cli.command, Command::Run { .. });
    init_logging(daemon);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            let chain = error_chain(&e);
            if daemon {
                // Under launchd nobody reads stderr: the unified log must say why it stopped.
                tracing::error!(error = %chain, "daemon stopped");
            }
            eprintln!("kextwatch: {chain}");
            ExitCode::FAILURE
        }
    }
}

/// The Endpoint Security system extension: the daemon with the ES source, the installed config
/// (or MDM's managed preferences, which take precedence), logging to the unified log.
fn run_system_extension(bundle: &str) -> ExitCode {
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
            tracing::error!(error = %error_chain(&e), "system extension stopped");
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each said once: our errors often already include their source's text
/// (`cannot open alert file X: No such file ...`), and `{:#}` would repeat it.
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Structured logs to stderr and, on macOS, to the unified log (`log show --predicate
/// 'subsystem == "com.kextwatch"'`), where the daemon's logs are read: launchd gives neither the
/// LaunchDaemon nor the system extension a log file. A panic is logged there too. KEXTWATCH_LOG
/// overrides the level.
fn init_logging(daemon: bool) {
    use tracing_subscriber::prelude::*;
    let default = if daemon { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEXTWATCH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = log_colour(
        io::IsTerminal::is_terminal(&io::stderr()),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let registry = tracing_subscriber::registry().with(filter).with(
        tracing_subscriber::fmt::layer()
            .with_writer(io::stderr)
            .with_ansi(ansi),
    );
    #[cfg(target_os = "macos")]
    let registry = registry.with(tracing_oslog::OsLogger::new("com.kextwatch", "default"));
    registry.init();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        tracing::error!(panic = %info, "kextwatch panicked");
        default_hook(info);
    }));
}

/// Colour only for a person at a terminal: never in launchd's log file or a pipe, and never when
/// `NO_COLOR` is set to anything (no-color.org).
fn log_colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            // Into memory first: the generator panics on a write error (`| head` closing the pipe).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "kextwatch", &mut script);
            io::Write::write_all(&mut io::stdout(), &script)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
                .render(&mut io::stdout())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { file } => {
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
        Command::Replay {
            input,
            alerts,
            kext_policy,
            bundles_root,
            host_name,
            quiet,
        } => {
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
                    BundleEnricher::new(root)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", root.display()))?,
                ),
                None => None,
            };
            let summary = match replay_input(&input, engine, enricher.as_mut(), &mut outputs, quiet)
            {
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
        Command::Profile {
            team_id,
            bundle_id,
            config,
            organization,
            allow_user_overrides,
            output,
        } => {
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
                    std::fs::write(&path, &xml)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
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
        Command::Sysext { command } => sysext(command),
        Command::Run {
            config,
            source,
            eslogger,
            managed_prefs,
        } => {
            kextwatch::daemon::run(kextwatch::daemon::DaemonOptions {
                config_path: config,
                managed_prefs,
                source,
                eslogger,
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Doctor { config, eslogger } => {
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
        Command::Status { config, json } => {
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
        Command::TestAlert { config: path } => {
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
        Command::Inventory {
            roots,
            format,
            baseline,
        } => {
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
        Command::Policy {
            command: PolicyCommand::Show { db, config, format },
        } => {
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
        Command::Policy {
            command: PolicyCommand::Diff { old, new, alerts },
        } => {
            let (config, mut outputs) = alerts.settings()?;
            let before = kextpolicy::read_file(&old)?;
            let after = kextpolicy::read_file(&new)?;
            // Approvals carry no time: they are stamped with the time the NEW copy was last written.
            let observed_ns = std::fs::metadata(&new)
                .and_then(|m| m.modified())
                .map_or(0, kextwatch::wallclock::epoch_ns);
            let summary = policy_diff(
                &before,
                &after,
                Engine::new(config),
                observed_ns,
                &mut outputs,
            )?;
            eprintln!("{} -> {}: {summary}", old.display(), new.display());
            Ok(ExitCode::SUCCESS)
        }
    }
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
        return replay(io::stdin().lock(), engine, enricher, outputs, None);
    }
    let file = File::open(input).map_err(ReplayError::Read)?;
    let len = file
        .metadata()
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len());
    let reader: Box<dyn BufRead> = Box::new(BufReader::with_capacity(1 << 20, file));
    match len.filter(|_| io::stderr().is_terminal() && !quiet) {
        Some(len) => {
            let bar = indicatif::ProgressBar::new(len).with_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let r = replay(reader, engine, enricher, outputs, Some(&mut Bar(&bar)));
            bar.finish_and_clear();
            r
        }
        None => replay(reader, engine, enricher, outputs, None),
    }
}

#[cfg(target_os = "macos")]
fn sysext(command: SysextCommand) -> anyhow::Result<ExitCode> {
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
        SysextCommand::Activate { wait } => {
            request(AGENT, true, secs(wait), say).map_err(anyhow::Error::msg)?
        }
        SysextCommand::Deactivate { wait } => {
            request(AGENT, false, secs(wait), say).map_err(anyhow::Error::msg)?
        }
        SysextCommand::Status => {
            for (id, version, enabled) in status(APP).map_err(anyhow::Error::msg)? {
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
fn sysext(_: SysextCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`kextwatch sysext` manages a macOS system extension and runs only on macOS")
}

#[cfg(test)]
mod tests {
    use super::log_colour;
    use std::ffi::OsStr;

    #[test]
    fn every_command_argument_and_option_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", cmd.get_name());
            if cmd.get_about().is_none() {
                missing.push(format!("{path}: no about"));
            }
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id != "help" && id != "version" && arg.get_help().is_none() {
                    missing.push(format!("{path}: {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &path, missing);
            }
        }
        let cmd = <super::Cli as clap::CommandFactory>::command();
        cmd.clone().debug_assert();
        let mut missing = Vec::new();
        walk(&cmd, "", &mut missing);
        assert!(missing.is_empty(), "without help text: {missing:#?}");
    }

    #[test]
    fn an_os_error_is_said_once_and_distinct_causes_all_are() {
        let io = std::io::Error::from_raw_os_error(2);
        let e = anyhow::Error::new(kextwatch::output::OutputError::Open {
            path: "/x/alerts.jsonl".into(),
            source: io,
        });
        assert_eq!(
            super::error_chain(&e),
            "cannot open alert file /x/alerts.jsonl: No such file or directory (os error 2)"
        );
        let e = anyhow::anyhow!("disk gone").context("cannot save state");
        assert_eq!(super::error_chain(&e), "cannot save state: disk gone");
    }

    #[test]
    fn logs_are_coloured_only_for_a_terminal_without_no_color() {
        assert!(log_colour(true, None));
        assert!(
            log_colour(true, Some(OsStr::new(""))),
            "an empty NO_COLOR does not count"
        );
        assert!(!log_colour(true, Some(OsStr::new("1"))));
        assert!(!log_colour(false, None), "launchd's log file, a pipe");
    }
}
