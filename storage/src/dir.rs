//! Shard directories under the data dir: `DATA_DIR/shard-<host>-<core>/`.

use std::path::{Path, PathBuf};

use hark_core::ShardId;

use crate::config::StoreConfig;
use crate::error::StoreError;
use crate::store::{OpenReport, Store};

/// Name of the store directory of `shard`, e.g. `shard-3-1`.
pub fn shard_dir_name(shard: ShardId) -> String {
    format!("shard-{}-{}", shard.host.0, shard.core)
}

/// The shard of a store directory name, if it is one.
pub fn parse_shard_dir_name(name: &str) -> Option<ShardId> {
    let (host, core) = name.strip_prefix("shard-")?.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(host) || !digits(core) {
        return None;
    }
    Some(ShardId::new(host.parse().ok()?, core.parse().ok()?))
}

/// The store directory of `shard` under `data_dir`.
pub fn shard_dir(data_dir: &Path, shard: ShardId) -> PathBuf {
    data_dir.join(shard_dir_name(shard))
}

/// Every shard store directory under `data_dir`, sorted by shard. A relay restarted with
/// fewer cores uses it to find history written by shards it no longer runs.
pub fn find_shard_dirs(data_dir: &Path) -> Result<Vec<(ShardId, PathBuf)>, StoreError> {
    let entries =
        std::fs::read_dir(data_dir).map_err(|e| StoreError::io("list data dir", data_dir, e))?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io("list data dir", data_dir, e))?;
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        let shard = entry.file_name().to_str().and_then(parse_shard_dir_name);
        if let (Some(shard), true) = (shard, is_dir) {
            found.push((shard, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// Opens every shard store under `data_dir` read-only except those in `writable`, which the
/// caller opens itself with [`Store::open`] on their own threads.
pub fn open_other_shards(
    data_dir: &Path,
    writable: &[ShardId],
    config: &StoreConfig,
) -> Result<Vec<(Store, OpenReport)>, StoreError> {
    find_shard_dirs(data_dir)?
        .into_iter()
        .filter(|(shard, _)| !writable.contains(shard))
        .map(|(shard, path)| Store::open_read_only(&path, shard, config.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_dir_names_round_trip() {
        let shard = ShardId::new(12, 3);
        assert_eq!(shard_dir_name(shard), "shard-12-3");
        assert_eq!(parse_shard_dir_name("shard-12-3"), Some(shard));
        for bad in [
            "shard-12",
            "shard--3",
            "shard-1-+3",
            "shard-70000-1",
            "xshard-1-1",
        ] {
            assert_eq!(parse_shard_dir_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn finds_only_shard_directories() {
        let data = tempfile::tempdir().unwrap();
        std::fs::create_dir(data.path().join("shard-2-0")).unwrap();
        std::fs::create_dir(data.path().join("shard-1-5")).unwrap();
        std::fs::create_dir(data.path().join("other")).unwrap();
        std::fs::write(data.path().join("shard-9-9"), b"a file").unwrap();
        let found: Vec<ShardId> = find_shard_dirs(data.path())
            .unwrap()
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(found, vec![ShardId::new(1, 5), ShardId::new(2, 0)]);
    }
}
