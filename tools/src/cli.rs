//! The `hark` command line: every command as a function with an output writer.
//!
//! [`run`] parses arguments and runs one command; the `hark` binary calls it and prints
//! [`CliError`] as one line. Tests call [`run`] or the per-command functions
//! ([`talk::talk`], [`listen::listen`]) directly, the latter with a [`conn::RelaySource`] that
//! follows a relay restarted on another port.

pub mod conn;
pub mod drain;
mod error;
pub mod history;
pub mod listen;
pub mod ring;
pub mod status;
pub mod store;
pub mod talk;
#[cfg(test)]
mod test_relay;
pub mod time;
pub mod token;

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::{Parser, Subcommand};

pub use error::CliError;

/// The client name `hark` announces in its hello.
pub const CLIENT_NAME: &str = concat!("hark-cli/", env!("CARGO_PKG_VERSION"));

/// Default `--reconnect-timeout`.
const RECONNECT_PATIENCE_DEFAULT_S: u64 = 30;

/// hark: talk, listen and inspect a hark relay.
#[derive(Debug, Parser)]
#[command(name = "hark", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options every relay-facing command shares.
#[derive(Debug, Clone, clap::Args)]
pub struct RelayOpts {
    /// Relay addresses `host:port`, comma-separated or repeated: the hosts a connection may
    /// go to (the given order first, then avoiding hosts that failed; see docs/cli.md).
    #[arg(long, required = true, value_delimiter = ',')]
    relay: Vec<String>,
    /// The conversation.
    #[arg(long)]
    conv: String,
    /// A token; without it one is minted from `<data-dir>/secret`.
    #[arg(long)]
    token: Option<String>,
    /// The relay's data directory, whose `secret` mints a token when --token is not given.
    #[arg(long, default_value = "./hark-data")]
    data_dir: PathBuf,
    /// Subject of a minted token (default: $USER, else hark-cli).
    #[arg(long = "as")]
    subject: Option<String>,
    /// One JSON object per event instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Talk an Ogg Opus file as one message.
    Talk {
        #[command(flatten)]
        relay: RelayOpts,
        /// Send as fast as the relay's frame rate allows instead of in real time.
        #[arg(long)]
        fast: bool,
        /// Seconds to keep trying to reconnect and resume after the connection breaks.
        #[arg(long, default_value_t = RECONNECT_PATIENCE_DEFAULT_S)]
        reconnect_timeout: u64,
        /// The Ogg Opus file (as opusenc or ffmpeg write it).
        file: PathBuf,
    },
    /// Write each message heard as DIR/MSGID.opus.
    Listen {
        #[command(flatten)]
        relay: RelayOpts,
        /// live, start, a message id (32 hex digits) or a time (RFC 3339, µs, or 10m ago).
        #[arg(long, default_value = "live")]
        from: String,
        /// Directory for the .opus files.
        #[arg(long)]
        out: PathBuf,
        /// Stop after this many messages.
        #[arg(long)]
        messages: Option<u64>,
        /// Stop after this many seconds without an event.
        #[arg(long)]
        idle_exit: Option<u64>,
        /// Seconds to keep trying to reconnect after the connection breaks.
        #[arg(long, default_value_t = RECONNECT_PATIENCE_DEFAULT_S)]
        reconnect_timeout: u64,
    },
    /// List a conversation's stored messages.
    History {
        #[command(flatten)]
        relay: RelayOpts,
        /// Messages since this time (RFC 3339, µs, or 10m ago); default: all.
        #[arg(long)]
        since: Option<String>,
    },
    /// Mint and inspect capability tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Who owns what for a membership given here: shares, a conversation's owner, keys moved.
    Ring {
        /// The membership: HOST:CORES[@WEIGHT],… e.g. 1:0-3,2:0-3 (cores a-b or a+b+c).
        #[arg(long)]
        hosts: String,
        /// Show this conversation's owner and fallbacks.
        #[arg(long)]
        conv: Option<String>,
        /// Hosts that join (same syntax as --hosts): how many keys move.
        #[arg(long)]
        add: Option<String>,
        /// A host id that leaves (repeatable): how many keys move.
        #[arg(long)]
        remove: Vec<u16>,
        /// Synthetic keys sampled for the measured shares and moves.
        #[arg(long, default_value_t = ring::RING_SAMPLE_KEYS_DEFAULT)]
        keys: u32,
    },
    /// A running relay's shards, connections, traffic, queues and latencies (from /metrics).
    Status {
        /// The relay's admin address host:port (its `admin=` in the listening line).
        #[arg(long)]
        admin: String,
        /// One JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Drain a running relay (as SIGTERM does) through its admin endpoint's POST /drain.
    Drain {
        /// The relay's admin address host:port (its `admin=` in the listening line).
        #[arg(long)]
        admin: String,
        /// Then wait until the relay has exited (its admin port refuses connections).
        #[arg(long)]
        wait: bool,
        /// Seconds --wait waits before giving up with an error.
        #[arg(long, default_value_t = drain::DRAIN_WAIT_TIMEOUT_DEFAULT_S)]
        timeout: u64,
    },
    /// Check or list a body store offline (a shard store dir or a data dir).
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Check every record, hint and message; exit 1 with a report when anything is wrong.
    Verify {
        /// A shard store (`shard-H-C`) or a data dir holding several.
        dir: PathBuf,
    },
    /// List the stored messages (with --msg, its frames' sizes).
    Dump {
        /// A shard store (`shard-H-C`) or a data dir holding several.
        dir: PathBuf,
        /// Only this conversation.
        #[arg(long)]
        conv: Option<String>,
        /// Only this message (32 hex digits), with its frames.
        #[arg(long)]
        msg: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Mint a token with the first key of a secret file.
    Mint {
        /// The secret file (the relay's `<data-dir>/secret`).
        #[arg(long)]
        secret_file: PathBuf,
        /// Comma-separated rights: talk,listen,history,admin.
        #[arg(long)]
        rights: String,
        /// Exactly this conversation.
        #[arg(long)]
        conv: Option<String>,
        /// Every conversation whose name starts with this.
        #[arg(long)]
        prefix: Option<String>,
        /// Lifetime: 90s, 15m, 1h, 7d.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// Subject (default: $USER, else hark-cli).
        #[arg(long = "as")]
        subject: Option<String>,
    },
    /// Show a token's fields (and verify it with --secret-file).
    Inspect {
        /// The token.
        token: String,
        /// Verify with this secret file.
        #[arg(long)]
        secret_file: Option<PathBuf>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

/// Parses `args` (the program name first) and runs the command, writing its output to
/// `out`. `stop` ends a running `listen` (Ctrl-C in the binary). Help and version text are
/// written to `out` too.
pub fn run(args: Vec<OsString>, stop: &AtomicBool, out: &mut dyn Write) -> Result<(), CliError> {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) if !error.use_stderr() => {
            write!(out, "{error}")?;
            return Ok(());
        }
        Err(error) => {
            let text = error.to_string();
            let line = text.lines().next().unwrap_or("bad arguments");
            let line = line.strip_prefix("error: ").unwrap_or(line);
            return Err(CliError::Usage(format!("{line} (see hark --help)")));
        }
    };
    match cli.command {
        Command::Talk {
            relay,
            fast,
            reconnect_timeout,
            file,
        } => {
            let args = talk::TalkArgs {
                relay: relay.relay,
                conv: relay.conv,
                file,
                fast,
                json: relay.json,
                token: relay.token,
                data_dir: relay.data_dir,
                subject: relay.subject,
                reconnect_patience: Duration::from_secs(reconnect_timeout),
            };
            talk::run(&args, out).map(drop)
        }
        Command::Listen {
            relay,
            from,
            out: out_dir,
            messages,
            idle_exit,
            reconnect_timeout,
        } => {
            let args = listen::ListenArgs {
                relay: relay.relay,
                conv: relay.conv,
                from,
                out_dir,
                messages,
                idle_exit: idle_exit.map(Duration::from_secs),
                json: relay.json,
                token: relay.token,
                data_dir: relay.data_dir,
                subject: relay.subject,
                reconnect_patience: Duration::from_secs(reconnect_timeout),
            };
            listen::run(&args, stop, out).map(drop)
        }
        Command::History { relay, since } => {
            let since_us = match since {
                Some(text) => time::parse_time_us(&text)?,
                None => 0,
            };
            let args = history::HistoryArgs {
                relay: relay.relay,
                conv: relay.conv,
                since_us,
                json: relay.json,
                token: relay.token,
                data_dir: relay.data_dir,
                subject: relay.subject,
            };
            history::run(&args, out).map(drop)
        }
        Command::Token { command } => match command {
            TokenCommand::Mint {
                secret_file,
                rights,
                conv,
                prefix,
                ttl,
                subject,
            } => token::run_mint(
                &secret_file,
                &rights,
                conv.as_deref(),
                prefix.as_deref(),
                &ttl,
                subject.as_deref(),
                out,
            ),
            TokenCommand::Inspect {
                token,
                secret_file,
                json,
            } => token::run_inspect(&token, secret_file.as_deref(), json, out),
        },
        Command::Ring {
            hosts,
            conv,
            add,
            remove,
            keys,
        } => {
            let args = ring::RingArgs {
                hosts,
                conv,
                add,
                remove,
                keys,
            };
            ring::run(&args, out).map(drop)
        }
        Command::Status { admin, json } => status::run(&admin, json, out).map(drop),
        Command::Drain {
            admin,
            wait,
            timeout,
        } => {
            let args = drain::DrainArgs {
                admin,
                wait,
                timeout: Duration::from_secs(timeout),
            };
            drain::run(&args, out).map(drop)
        }
        Command::Store { command } => match command {
            StoreCommand::Verify { dir } => store::run_verify(&dir, out).map(drop),
            StoreCommand::Dump { dir, conv, msg } => {
                let msg = match msg {
                    Some(text) => Some(text.parse().map_err(|_| {
                        CliError::Usage(format!("--msg {text:?}: not a message id (32 hex digits)"))
                    })?),
                    None => None,
                };
                store::run_dump(&store::DumpArgs { dir, conv, msg }, out).map(drop)
            }
        },
    }
}
