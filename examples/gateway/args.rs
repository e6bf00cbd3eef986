//! The command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use portcullis::policy::ServerSettings;

/// What the command line asks for; what it leaves out comes from the policy, else defaults.
#[derive(Debug, Default)]
pub(crate) struct Args {
    /// `--policy FILE`; none for demo mode.
    pub(crate) policy: Option<PathBuf>,
    pub(crate) listen: Option<String>,
    pub(crate) upstream: Option<String>,
    pub(crate) upstream_timeout: Option<Duration>,
    /// The connection flags, which win over the policy's `[server]`.
    pub(crate) server: ServerSettings,
}

impl Args {
    /// Reads `args` (without the program name); `None` when they are not understood.
    pub(crate) fn parse(args: impl IntoIterator<Item = String>) -> Option<Self> {
        let mut parsed = Args::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let value = args.next()?;
            let secs = || value.parse().ok().map(Duration::from_secs);
            let count = || value.parse::<u32>().ok().filter(|n| *n > 0);
            let server = &mut parsed.server;
            match arg.as_str() {
                "--policy" => parsed.policy = Some(PathBuf::from(&value)),
                "--listen" => parsed.listen = Some(value),
                "--upstream" => parsed.upstream = Some(value),
                "--upstream-timeout" => parsed.upstream_timeout = Some(secs()?),
                "--header-read-timeout" => server.header_read_timeout = Some(secs()?),
                "--idle-timeout" => server.idle_timeout = Some(secs()?),
                "--max-connections" => server.max_connections = Some(count()?),
                "--max-header-bytes" => server.max_header_bytes = Some(count()?),
                "--workers" => server.workers = Some(count()?),
                "--underscore-headers" => {
                    server.keep_underscore_headers = match value.as_str() {
                        "keep" => Some(true),
                        "drop" => Some(false),
                        _ => return None,
                    }
                }
                _ => return None,
            }
        }
        Some(parsed)
    }
}

/// Prints the usage; the exit code for a bad command line.
pub(crate) fn usage() -> ExitCode {
    eprintln!(
        "usage: gateway [--policy FILE] [--listen ADDR] [--upstream URL] [--upstream-timeout SECS]\n\
         \x20              [--header-read-timeout SECS] [--idle-timeout SECS] [--max-connections N]\n\
         \x20              [--max-header-bytes N] [--underscore-headers drop|keep] [--workers N]"
    );
    ExitCode::from(2)
}
