//! The one error type every `hark` command returns: one line for the user, and an exit code.

use std::path::PathBuf;

use hark_core::protocol::ErrorCode;
use thiserror::Error;

use crate::opus::OpusError;

/// Why a `hark` command failed. Its `Display` is the one line `hark` prints.
#[derive(Debug, Error)]
pub enum CliError {
    /// The command line is wrong: see `hark --help`.
    #[error("{0}")]
    Usage(String),
    /// The relay could not be reached at any address given: is it running, is the address right?
    #[error("cannot connect to the relay at {addrs}: {detail}")]
    RelayDown {
        /// The addresses tried.
        addrs: String,
        /// The last failure.
        detail: String,
    },
    /// The relay refused the hello (bad, expired or missing token): mint a new token with the
    /// relay's secret.
    #[error("the relay refused the token: {name} ({code}){text}")]
    TokenRefused {
        /// The error code's name.
        name: String,
        /// Its number.
        code: u16,
        /// The relay's detail, prefixed with ": " when there is one.
        text: String,
    },
    /// A request was refused (out of scope, right missing, limits): the message names which.
    #[error("{what}: {name} ({code}){text}")]
    Refused {
        /// What was asked (e.g. "talk to general").
        what: String,
        /// The error code's name.
        name: String,
        /// Its number.
        code: u16,
        /// The relay's detail.
        text: String,
    },
    /// The connection broke and could not be resumed in time.
    #[error("lost the relay and could not reconnect: {0}")]
    Disconnected(String),
    /// The relay broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// An Ogg Opus file problem (not Ogg Opus, truncated, unreadable).
    #[error(transparent)]
    Opus(#[from] OpusError),
    /// A file could not be read or written.
    #[error("{path}: {detail}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// A token could not be minted or read.
    #[error("token: {0}")]
    Token(String),
    /// The secret file tokens are minted with cannot be used (its message names the file).
    #[error(transparent)]
    Secret(#[from] hark_core::token::SecretFileError),
    /// `hark store verify` found damage; the report was printed.
    #[error("store verification failed: {0} problem(s) found")]
    StoreDamaged(usize),
    /// The store could not be opened or read.
    #[error("store: {0}")]
    Store(String),
    /// The admin endpoint could not be read.
    #[error("admin endpoint {addr}: {detail}")]
    Admin {
        /// The address.
        addr: String,
        /// What went wrong.
        detail: String,
    },
    /// Writing the command's output failed (closed pipe, full disk).
    #[error("output: {0}")]
    Output(#[from] std::io::Error),
}

impl CliError {
    /// The process exit code: 2 for a usage error, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            _ => 1,
        }
    }

    /// A refusal of `what` by the relay's `code`.
    pub(crate) fn refused(what: impl Into<String>, code: ErrorCode, text: &str) -> Self {
        CliError::Refused {
            what: what.into(),
            name: code_name(code),
            code: code.0,
            text: detail(text),
        }
    }

    /// The relay's refusal of the hello.
    pub(crate) fn token_refused(code: ErrorCode, text: &str) -> Self {
        CliError::TokenRefused {
            name: code_name(code),
            code: code.0,
            text: detail(text),
        }
    }

    pub(crate) fn file(path: &std::path::Path, detail: impl ToString) -> Self {
        CliError::File {
            path: path.to_path_buf(),
            detail: detail.to_string(),
        }
    }
}

fn code_name(code: ErrorCode) -> String {
    code.name().unwrap_or("unknown error").to_owned()
}

fn detail(text: &str) -> String {
    let line = text.lines().next().unwrap_or("");
    if line.is_empty() {
        String::new()
    } else {
        format!(": {line}")
    }
}
