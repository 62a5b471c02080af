//! The `kextwatch` command line: flags into settings, then the library does the work.
//!
//! Exit codes: 0 the job ran to the end; 1 it could not (invalid config, unreadable input, an alert
//! sink failed); 2 the command line was wrong.

use std::fs::File;
use std::io::{self, BufReader, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use kextwatch::alert::Severity;
use kextwatch::config::{Config, OutputSpec, TextOrJson};
use kextwatch::output::{OutputError, Outputs};
use kextwatch::replay::{replay, ReplayError};

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
        /// Config file (allowlist, detection settings, outputs); default: the shipped config.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Only report alerts at or above this severity (overrides the config).
        #[arg(long, value_enum)]
        min_severity: Option<SeverityArg>,
        /// Format of alerts on stdout.
        #[arg(long, value_enum, default_value = "json")]
        format: FormatArg,
        /// Do not print the summary on stderr.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Validate a config file; exits non-zero with the error's file, line and key.
    CheckConfig { file: PathBuf },
}

#[derive(Clone, Copy, ValueEnum)]
enum SeverityArg {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl From<SeverityArg> for Severity {
    fn from(s: SeverityArg) -> Severity {
        match s {
            SeverityArg::Info => Severity::Info,
            SeverityArg::Low => Severity::Low,
            SeverityArg::Medium => Severity::Medium,
            SeverityArg::High => Severity::High,
            SeverityArg::Critical => Severity::Critical,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Json,
    Text,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KEXTWATCH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kextwatch: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::CheckConfig { file } => {
            let config = Config::load(&file)?;
            let a = &config.allowlist;
            println!(
                "{}: ok ({} team ids, {} kexts, {} initiators allowlisted; {} outputs)",
                file.display(),
                a.team_ids.len(),
                a.kexts.len(),
                a.initiators.len(),
                config.outputs.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay {
            input,
            config,
            min_severity,
            format,
            quiet,
        } => {
            let mut config = match &config {
                Some(path) => Config::load(path)?,
                None => Config::default_config(),
            };
            if let Some(s) = min_severity {
                config.detection.min_severity = s.into();
            }
            let format = match format {
                FormatArg::Json => TextOrJson::Json,
                FormatArg::Text => TextOrJson::Text,
            };
            for o in &mut config.outputs {
                if let OutputSpec::Stdout { format: f } = o {
                    *f = format;
                }
            }
            let mut outputs = Outputs::open(&config.outputs)?;
            let result = if input.as_os_str() == "-" {
                replay(io::stdin().lock(), config, &mut outputs, None)
            } else {
                let file = File::open(&input)
                    .with_context(|| format!("cannot open {}", input.display()))?;
                let len = file
                    .metadata()
                    .ok()
                    .filter(|m| m.is_file())
                    .map(|m| m.len());
                let reader = BufReader::with_capacity(1 << 20, file);
                match len.filter(|_| io::stderr().is_terminal() && !quiet) {
                    Some(len) => {
                        let bar = indicatif::ProgressBar::new(len).with_style(
                            indicatif::ProgressStyle::with_template(
                                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                            )
                            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                        );
                        let r = replay(
                            reader,
                            config,
                            &mut outputs,
                            Some(&mut |b| bar.set_position(b)),
                        );
                        bar.finish_and_clear();
                        r
                    }
                    None => replay(reader, config, &mut outputs, None),
                }
            };
            let summary = match result {
                Ok(s) => s,
                // A reader that went away (`| head`) is not a failure of the analysis.
                Err(ReplayError::Output(OutputError::Write { source, .. }))
                    if source.kind() == io::ErrorKind::BrokenPipe =>
                {
                    return Ok(ExitCode::SUCCESS)
                }
                Err(e) => return Err(e.into()),
            };
            if !quiet {
                eprint!("{summary}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
