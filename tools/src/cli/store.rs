//! `hark store verify` and `hark store dump`: offline inspection of a relay's body store.
//!
//! Both take either one shard's store directory (`shard-H-C`, holding `format` and
//! `seg-*.hark`) or a data dir holding several, and open every store read-only
//! ([`Store::open_read_only`] never writes, truncates or repairs), so they are safe on the data
//! dir of a running relay (its open messages then show as cut).

mod dump;
mod verify;

use std::path::{Path, PathBuf};

use hark_core::ShardId;
use hark_storage::segment::parse_segment_file_name;
use hark_storage::{Store, StoreConfig, find_shard_dirs, parse_shard_dir_name};

pub use dump::{DumpArgs, run_dump};
pub use verify::{Damage, SEGMENT_VERIFY_BYTES_MAX, VerifyReport, run_verify, verify};

use super::CliError;

/// The file that marks a store directory (hark-storage's `FORMAT_FILE_NAME`, not exported).
const FORMAT_FILE_NAME: &str = "format";

/// The shard stores `dir` names: itself when it is a store directory, else every
/// `shard-H-C` directory in it. A store directory not named `shard-H-C` is reported as shard
/// 0/0 (the name is the only place the shard is recorded).
pub fn store_dirs(dir: &Path) -> Result<Vec<(ShardId, PathBuf)>, CliError> {
    let meta = std::fs::metadata(dir).map_err(|e| CliError::file(dir, e))?;
    if !meta.is_dir() {
        return Err(CliError::file(dir, "not a directory"));
    }
    if is_store_dir(dir)? {
        let shard = dir
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(parse_shard_dir_name)
            .unwrap_or(ShardId::new(0, 0));
        return Ok(vec![(shard, dir.to_path_buf())]);
    }
    let found = find_shard_dirs(dir).map_err(|e| CliError::Store(e.to_string()))?;
    if found.is_empty() {
        return Err(CliError::Store(format!(
            "{}: neither a shard store (format, seg-*.hark) nor a data dir with shard-H-C stores",
            dir.display()
        )));
    }
    Ok(found)
}

fn is_store_dir(dir: &Path) -> Result<bool, CliError> {
    if dir.join(FORMAT_FILE_NAME).is_file() {
        return Ok(true);
    }
    let entries = std::fs::read_dir(dir).map_err(|e| CliError::file(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| CliError::file(dir, e))?;
        if entry
            .file_name()
            .to_str()
            .and_then(parse_segment_file_name)
            .is_some()
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Opens one store read-only with the default limits (they bound writes, not reads).
fn open(path: &Path, shard: ShardId) -> Result<(Store, hark_storage::OpenReport), CliError> {
    Store::open_read_only(path, shard, StoreConfig::default())
        .map_err(|e| CliError::Store(format!("{}: {e}", path.display())))
}
