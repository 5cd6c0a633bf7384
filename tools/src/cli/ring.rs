//! `hark ring`: the ownership map of a membership given on the command line.
//!
//! Shares are shown twice: exactly from the weights (what HRW converges to) and measured over
//! a fixed sample of synthetic keys (`key-0`, `key-1`, …: deterministic, so two runs agree),
//! which shows how far a real key population strays. Keys moved by `--add`/`--remove` are
//! measured over the same sample, next to the exact expectation from the weights.

use std::collections::BTreeMap;
use std::io::Write;

use hark_core::map::{HostSpec, Membership};
use hark_core::{ConvId, ConvName, HostId, ShardId};

use super::CliError;

/// Keys sampled by default.
pub const RING_SAMPLE_KEYS_DEFAULT: u32 = 100_000;
/// Most keys `--keys` may sample (each costs one hash per shard).
pub const RING_SAMPLE_KEYS_MAX: u32 = 10_000_000;
/// Weight of a core when the spec gives none (the relay's default `weight_per_core`).
pub const RING_WEIGHT_DEFAULT: u32 = 100;
/// Fallbacks listed for `--conv` after the owner.
const FALLBACKS_LISTED: usize = 3;

/// What `hark ring` needs.
#[derive(Debug, Clone)]
pub struct RingArgs {
    /// The membership: `HOST:CORES[@WEIGHT],…`.
    pub hosts: String,
    /// A conversation whose owner and fallbacks to show.
    pub conv: Option<String>,
    /// Hosts joining (same syntax as `hosts`).
    pub add: Option<String>,
    /// Hosts leaving.
    pub remove: Vec<u16>,
    /// Keys in the sample.
    pub keys: u32,
}

/// What `hark ring` computed.
#[derive(Debug, Clone, PartialEq)]
pub struct RingReport {
    /// Per shard: (weight share, sampled share).
    pub shares: BTreeMap<ShardId, (f64, f64)>,
    /// The owner of `--conv` and who follows it.
    pub conv_order: Vec<ShardId>,
    /// The fraction of sampled keys whose owner changes with `--add`/`--remove`.
    pub moved_sampled: Option<f64>,
    /// The fraction expected from the weights.
    pub moved_expected: Option<f64>,
}

/// Parses `1:0-3,2:0-3@50,3:0+2+5-7`: host id, `:`, cores as ranges or numbers joined by
/// `+`, and an optional `@weight` per core (default [`RING_WEIGHT_DEFAULT`]).
pub fn parse_hosts(spec: &str) -> Result<Vec<HostSpec>, CliError> {
    let bad = |part: &str, why: &str| {
        CliError::Usage(format!(
            "host spec {part:?}: {why} (expected HOST:CORES[@WEIGHT], e.g. 1:0-3,2:0-3@50)"
        ))
    };
    let mut hosts = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (host, rest) = part.split_once(':').ok_or_else(|| bad(part, "no ':'"))?;
        let host: u16 = host
            .parse()
            .map_err(|_| bad(part, "host is not 0..65535"))?;
        let (cores_text, weight) = match rest.split_once('@') {
            Some((cores, weight)) => (
                cores,
                weight
                    .parse::<u32>()
                    .ok()
                    .filter(|w| *w > 0)
                    .ok_or_else(|| bad(part, "weight is not 1..4294967295"))?,
            ),
            None => (rest, RING_WEIGHT_DEFAULT),
        };
        let mut cores = Vec::new();
        for piece in cores_text.split('+') {
            let (from, to) = piece.split_once('-').unwrap_or((piece, piece));
            let from: u16 = from
                .parse()
                .map_err(|_| bad(part, "core is not 0..65535"))?;
            let to: u16 = to.parse().map_err(|_| bad(part, "core is not 0..65535"))?;
            if to < from {
                return Err(bad(part, "core range runs backwards"));
            }
            if cores.len() + usize::from(to - from) >= hark_core::map::MEMBERSHIP_SHARDS_MAX {
                return Err(bad(part, "more cores than a membership holds"));
            }
            cores.extend(from..=to);
        }
        hosts.push(HostSpec {
            host: HostId(host),
            cores,
            weight_per_core: weight,
        });
    }
    if hosts.is_empty() {
        return Err(bad(spec, "no host"));
    }
    Ok(hosts)
}

fn membership(hosts: Vec<HostSpec>) -> Result<Membership, CliError> {
    Membership::from_hosts(1, hosts).map_err(|e| CliError::Usage(format!("membership: {e}")))
}

fn sample_key(i: u32) -> ConvId {
    ConvId::of_name(&format!("key-{i}"))
}

/// Computes the report without printing.
pub fn compute(args: &RingArgs) -> Result<RingReport, CliError> {
    if args.keys == 0 || args.keys > RING_SAMPLE_KEYS_MAX {
        return Err(CliError::Usage(format!(
            "--keys must be 1..={RING_SAMPLE_KEYS_MAX}"
        )));
    }
    let hosts = parse_hosts(&args.hosts)?;
    let before = membership(hosts.clone())?;
    let mut owned: BTreeMap<ShardId, u64> = before.shards().iter().map(|s| (s.shard, 0)).collect();
    let mut owners = Vec::with_capacity(args.keys as usize);
    for i in 0..args.keys {
        // A membership from_hosts accepted has at least one shard unless every host is empty.
        let owner = before.owner(sample_key(i));
        if let Some(owner) = owner {
            *owned.entry(owner).or_default() += 1;
        }
        owners.push(owner);
    }
    let shares = before
        .shards()
        .iter()
        .map(|s| {
            let expected = before.share_of(s.shard).unwrap_or(0.0);
            let sampled = owned[&s.shard] as f64 / f64::from(args.keys);
            (s.shard, (expected, sampled))
        })
        .collect();
    let conv_order = match &args.conv {
        Some(name) => {
            let conv = ConvName::new(name.clone())
                .map_err(|e| CliError::Usage(format!("--conv {name:?}: {e}")))?;
            before.fallbacks(conv.id(), FALLBACKS_LISTED + 1)
        }
        None => Vec::new(),
    };
    let (mut moved_sampled, mut moved_expected) = (None, None);
    if args.add.is_some() || !args.remove.is_empty() {
        let mut after_hosts: Vec<HostSpec> = hosts
            .into_iter()
            .filter(|h| !args.remove.contains(&h.host.0))
            .collect();
        for removed in &args.remove {
            if !before.shards().iter().any(|s| s.shard.host.0 == *removed) {
                return Err(CliError::Usage(format!(
                    "--remove {removed}: not a host of --hosts"
                )));
            }
        }
        if let Some(add) = &args.add {
            after_hosts.extend(parse_hosts(add)?);
        }
        let after = membership(after_hosts)?;
        let moved = (0..args.keys)
            .filter(|&i| after.owner(sample_key(i)) != owners[i as usize])
            .count();
        moved_sampled = Some(moved as f64 / f64::from(args.keys));
        // HRW moves exactly the keys of shards that left plus the keys that new shards win.
        let left: u64 = before
            .shards()
            .iter()
            .filter(|s| !after.contains(s.shard))
            .map(|s| u64::from(s.weight))
            .sum();
        let joined: u64 = after
            .shards()
            .iter()
            .filter(|s| !before.contains(s.shard))
            .map(|s| u64::from(s.weight))
            .sum();
        let expected = if before.weight_total() == 0 || after.weight_total() == 0 {
            1.0
        } else {
            let stayed = (before.weight_total() - left) as f64;
            // Keys on staying shards: (1 - left/before); of those, joined/after go to new ones.
            left as f64 / before.weight_total() as f64
                + stayed / before.weight_total() as f64 * joined as f64
                    / after.weight_total() as f64
        };
        moved_expected = Some(expected);
    }
    Ok(RingReport {
        shares,
        conv_order,
        moved_sampled,
        moved_expected,
    })
}

/// Runs `hark ring`.
pub fn run(args: &RingArgs, out: &mut dyn Write) -> Result<RingReport, CliError> {
    let report = compute(args)?;
    writeln!(
        out,
        "{:<10}  {:>14}  {:>22}",
        "SHARD",
        "SHARE (WEIGHT)",
        format!("SHARE ({} KEYS)", args.keys)
    )?;
    for (shard, (expected, sampled)) in &report.shares {
        writeln!(
            out,
            "{:<10}  {:>13.3}%  {:>21.3}%",
            shard.to_string(),
            expected * 100.0,
            sampled * 100.0
        )?;
    }
    if let (Some(name), Some((owner, fallbacks))) = (&args.conv, report.conv_order.split_first()) {
        let list: Vec<String> = fallbacks.iter().map(ToString::to_string).collect();
        writeln!(
            out,
            "conversation {name:?} (id {}): owner {owner}, fallbacks {}",
            ConvId::of_name(name),
            if list.is_empty() {
                "none".to_owned()
            } else {
                list.join(" ")
            }
        )?;
    }
    if let (Some(sampled), Some(expected)) = (report.moved_sampled, report.moved_expected) {
        writeln!(
            out,
            "keys moved: {:.3}% of {} sampled (expected from weights {:.3}%)",
            sampled * 100.0,
            args.keys,
            expected * 100.0
        )?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(hosts: &str) -> RingArgs {
        RingArgs {
            hosts: hosts.into(),
            conv: None,
            add: None,
            remove: Vec::new(),
            keys: 20_000,
        }
    }

    #[test]
    fn specs_parse_ranges_pieces_and_weights() {
        let hosts = parse_hosts("1:0-3, 2:0+2+5-6@50").unwrap();
        assert_eq!(hosts[0].cores, vec![0, 1, 2, 3]);
        assert_eq!(hosts[0].weight_per_core, RING_WEIGHT_DEFAULT);
        assert_eq!(hosts[1].cores, vec![0, 2, 5, 6]);
        assert_eq!(hosts[1].weight_per_core, 50);
        for bad in ["", "1", "x:0", "1:3-1", "1:0@0", "1:0-70000", "1:0-5000"] {
            assert!(parse_hosts(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sampled_shares_follow_weights_and_moves_match_expectation() {
        let report = compute(&args("1:0-1,2:0-1@300")).unwrap();
        let host2 = report.shares[&ShardId::new(2, 0)];
        assert!((host2.0 - 0.375).abs() < 1e-9);
        assert!((host2.1 - 0.375).abs() < 0.02, "{host2:?}");

        let mut grow = args("1:0-3");
        grow.add = Some("2:0-3".into());
        let report = compute(&grow).unwrap();
        assert!((report.moved_expected.unwrap() - 0.5).abs() < 1e-9);
        assert!((report.moved_sampled.unwrap() - 0.5).abs() < 0.02);

        let mut shrink = args("1:0-3,2:0-3");
        shrink.remove = vec![2];
        let report = compute(&shrink).unwrap();
        assert!((report.moved_sampled.unwrap() - 0.5).abs() < 0.02);

        shrink.remove = vec![9];
        assert!(compute(&shrink).is_err(), "not a host");
        let mut too_many = args("1:0");
        too_many.keys = RING_SAMPLE_KEYS_MAX + 1;
        assert!(compute(&too_many).is_err(), "above the key bound");
    }
}
