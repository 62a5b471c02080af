//! The `kextwatch` command line: flags into settings, then the library does the work.
//!
//! Exit codes: 0 the job ran to the end; 1 it could not (invalid config, unreadable input or
//! database, an alert sink failed); 2 the command line was wrong.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use kextwatch::alert::Severity;
use kextwatch::config::AlertFormat;

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
    format: AlertFormat,
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
        return cli::run_system_extension(bundle);
    }
    let cli = Cli::parse();
    let daemon = matches!(cli.command, Command::Run { .. });
    cli::init_logging(daemon);
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            let chain = cli::error_chain(&e);
            if daemon {
                // Under launchd nobody reads stderr: the unified log must say why it stopped.
                tracing::error!(error = %chain, "daemon stopped");
            }
            eprintln!("kextwatch: {chain}");
            ExitCode::FAILURE
        }
    }
}

/// One command, one function in `cli`.
fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Completions { shell } => cli::completions(shell),
        Command::Man => cli::man(),
        Command::CheckConfig { file } => cli::check_config(file),
        Command::Replay {
            input,
            alerts,
            kext_policy,
            bundles_root,
            host_name,
            quiet,
        } => cli::replay(input, alerts, kext_policy, bundles_root, host_name, quiet),
        Command::Profile {
            team_id,
            bundle_id,
            config,
            organization,
            allow_user_overrides,
            output,
        } => cli::profile(
            team_id,
            bundle_id,
            config,
            organization,
            allow_user_overrides,
            output,
        ),
        Command::Sysext { command } => cli::sysext(command),
        Command::Run {
            config,
            source,
            eslogger,
            managed_prefs,
        } => cli::run_daemon(config, source, eslogger, managed_prefs),
        Command::Doctor { config, eslogger } => cli::doctor(config, eslogger),
        Command::Status { config, json } => cli::status(config, json),
        Command::TestAlert { config } => cli::test_alert(config),
        Command::Inventory {
            roots,
            format,
            baseline,
        } => cli::inventory(roots, format, baseline),
        Command::Policy {
            command: PolicyCommand::Show { db, config, format },
        } => cli::policy_show(db, config, format),
        Command::Policy {
            command: PolicyCommand::Diff { old, new, alerts },
        } => cli::policy_diff(old, new, alerts),
    }
}

#[cfg(test)]
mod tests {
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
}
