//! The log flags every binary of the project takes, and the subscriber they set up. One format
//! enum for all: `text` (alias `plain`) or `json`.

use std::io::IsTerminal;

use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[value(alias = "plain")]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// `--log` and `--log-format`, flattened into each binary's top-level arguments.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log filter in tracing's EnvFilter syntax, e.g. `info` or `agent=debug,info`.
    #[arg(long, global = true, env = "ROCKCHIP_LLAMA_LOG", default_value = "info")]
    pub log: String,
    /// Log line format.
    #[arg(long, global = true, env = "ROCKCHIP_LLAMA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The filter did not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid log filter {filter:?}: {source}")]
pub struct LogError {
    filter: String,
    #[source]
    source: tracing_subscriber::filter::ParseError,
}

impl LogArgs {
    /// Installs the global subscriber. Logs go to stderr so stdout carries only command output
    /// (CRD YAML, the OpenAPI document, the doctor report).
    pub fn init(&self) -> Result<(), LogError> {
        let filter = EnvFilter::try_new(&self.log).map_err(|source| LogError { filter: self.log.clone(), source })?;
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal());
        match self.log_format {
            LogFormat::Text => builder.init(),
            LogFormat::Json => builder.json().init(),
        }
        Ok(())
    }
}

/// Flags of `cmd` and its subcommands that read no environment variable. The chart and systemd
/// units configure both binaries through the environment only, so each binary's tests assert
/// this is empty.
pub fn flags_without_env(cmd: &clap::Command) -> Vec<String> {
    let mut out = Vec::new();
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        if id != "help" && id != "version" && !arg.is_positional() && arg.get_env().is_none() {
            out.push(format!("{} --{id}", cmd.get_name()));
        }
    }
    for sub in cmd.get_subcommands() {
        out.extend(flags_without_env(sub));
    }
    out
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        log: LogArgs,
    }

    #[test]
    fn flags_without_env_are_found() {
        #[derive(Parser)]
        struct Two {
            #[arg(long, env = "X_A")]
            a: Option<String>,
            #[arg(long)]
            b: Option<String>,
        }
        let found = flags_without_env(&<Two as clap::CommandFactory>::command());
        assert_eq!(found.len(), 1);
        assert!(found[0].ends_with("--b"), "{found:?}");
    }

    #[test]
    fn both_historical_spellings_parse() {
        for (arg, want) in [("text", LogFormat::Text), ("plain", LogFormat::Text), ("json", LogFormat::Json)] {
            let c = Cli::try_parse_from(["x", "--log-format", arg]).unwrap();
            assert_eq!(c.log.log_format, want);
        }
        assert!(Cli::try_parse_from(["x", "--log-format", "xml"]).is_err());
    }
}
