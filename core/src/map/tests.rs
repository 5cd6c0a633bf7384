//! Property and reference tests of the ownership map. Keys come from a seeded generator so
//! every run checks the same keys.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;

/// `count` pseudo-random keys from `seed` (splitmix64 of a counter): uniform like real
/// ConvIds, which are XXH3 hashes of names.
fn keys(seed: u64, count: usize) -> impl Iterator<Item = ConvId> {
    (0..count as u64).map(move |i| ConvId(splitmix64(seed.wrapping_add(i))))
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `hosts` hosts (ids from 0) of `cores` cores each, all weight `weight`.
fn cluster(hosts: u16, cores: u16, weight: u32) -> Vec<HostSpec> {
    (0..hosts)
        .map(|host| HostSpec {
            host: HostId(host),
            cores: (0..cores).collect(),
            weight_per_core: weight,
        })
        .collect()
}

fn loads(map: &Membership, keys: impl Iterator<Item = ConvId>) -> HashMap<ShardId, u64> {
    let mut loads = HashMap::new();
    for key in keys {
        *loads
            .entry(map.owner(key).expect("non-empty map"))
            .or_insert(0) += 1;
    }
    loads
}

fn max_over_mean(map: &Membership, key_count: usize, seed: u64) -> f64 {
    let loads = loads(map, keys(seed, key_count));
    assert_eq!(
        loads.len(),
        map.shards().len(),
        "every shard owns some keys"
    );
    let max = *loads.values().max().expect("non-empty") as f64;
    max / (key_count as f64 / map.shards().len() as f64)
}

/// The reference formula, evaluated for every shard with no shortcut (no specialised hash,
/// no skipped logarithm, no uniform fast path): what `owner` must agree with.
fn owner_by_formula(map: &Membership, key: ConvId) -> Option<ShardId> {
    map.owner_index_by_formula(key)
        .map(|i| map.shards()[i].shard)
}

#[test]
fn equal_shards_are_balanced_within_5_percent() {
    let map = Membership::from_hosts(1, cluster(16, 8, 100)).unwrap();
    assert_eq!(map.shards().len(), 128);
    // 1M keys: mean 7812.5 per shard, sd 88; 1.05 is 4.4 sd above the mean.
    let ratio = max_over_mean(&map, 1_000_000, 7);
    assert!(ratio <= 1.05, "max/mean {ratio}");
}

#[test]
fn equal_shards_with_200k_keys_are_within_binomial_noise() {
    // With 200k keys a shard's load is Binomial(200000, 1/128): sd 39.4 = 2.5% of the mean,
    // and the largest of 128 such loads sits near +2.6 sd (max/mean ~1.065) for any hash
    // that assigns keys independently. 1.05 is therefore not a property of HRW at this key
    // count; 1.10 (+5 sd) is, and a skewed hash would exceed it.
    let map = Membership::from_hosts(1, cluster(16, 8, 100)).unwrap();
    let ratio = max_over_mean(&map, 200_000, 11);
    assert!(ratio <= 1.10, "max/mean {ratio}");
}

#[test]
fn removing_a_shard_moves_only_its_keys_to_their_first_fallback() {
    let before = Membership::from_hosts(1, cluster(16, 8, 100)).unwrap();
    let lost = ShardId::new(5, 3);
    let after = Membership::from_shards(
        2,
        before.shards().iter().copied().filter(|s| s.shard != lost),
    )
    .unwrap();
    let mut moved = 0;
    for key in keys(21, 200_000) {
        let owner_before = before.owner(key).unwrap();
        let owner_after = after.owner(key).unwrap();
        if owner_before == lost {
            moved += 1;
            assert_eq!(owner_after, before.fallbacks(key, 2)[1], "{key}");
        } else {
            assert_eq!(owner_after, owner_before, "{key} moved off a live shard");
        }
    }
    assert!(moved > 0);
}

#[test]
fn adding_a_host_moves_keys_only_to_it_by_its_weight_share() {
    let before = Membership::from_hosts(1, cluster(16, 8, 100)).unwrap();
    let mut hosts = cluster(16, 8, 100);
    hosts.push(HostSpec {
        host: HostId(16),
        cores: (0..8).collect(),
        weight_per_core: 100,
    });
    let after = Membership::from_hosts(2, hosts).unwrap();
    let key_count = 200_000;
    let mut moved = 0u64;
    for key in keys(31, key_count) {
        let (a, b) = (before.owner(key).unwrap(), after.owner(key).unwrap());
        if a != b {
            assert_eq!(b.host, HostId(16), "{key} moved to an old host");
            moved += 1;
        }
    }
    let share = moved as f64 / key_count as f64;
    let expected = 8.0 / 136.0;
    assert!((share - expected).abs() <= 0.01, "{share} vs {expected}");
}

#[test]
fn changing_one_weight_moves_keys_only_to_or_from_that_shard() {
    let before = Membership::from_hosts(1, cluster(8, 4, 100)).unwrap();
    let changed = ShardId::new(3, 2);
    let with_weight = |weight| {
        Membership::from_shards(
            2,
            before.shards().iter().map(|s| ShardWeight {
                shard: s.shard,
                weight: if s.shard == changed { weight } else { s.weight },
            }),
        )
        .unwrap()
    };
    let (heavier, lighter) = (with_weight(300), with_weight(30));
    let (mut gained, mut lost) = (0, 0);
    for key in keys(35, 50_000) {
        let owner = before.owner(key).unwrap();
        let owner_heavier = heavier.owner(key).unwrap();
        if owner_heavier != owner {
            assert_eq!(owner_heavier, changed, "{key}");
            gained += 1;
        }
        let owner_lighter = lighter.owner(key).unwrap();
        if owner_lighter != owner {
            assert_eq!(owner, changed, "{key}");
            lost += 1;
        }
    }
    assert!(gained > 0 && lost > 0);
}

#[test]
fn doubled_weight_doubles_the_share() {
    let mut hosts = cluster(16, 8, 100);
    hosts[0].weight_per_core = 200;
    let map = Membership::from_hosts(1, hosts).unwrap();
    let key_count = 200_000;
    let loads = loads(&map, keys(41, key_count));
    let share = |host: u16| {
        loads
            .iter()
            .filter(|(shard, _)| shard.host == HostId(host))
            .map(|(_, n)| *n)
            .sum::<u64>() as f64
            / key_count as f64
    };
    // Host 0 weighs 1600 of 13600, every other host 800.
    assert!((share(0) - 1600.0 / 13600.0).abs() <= 0.01, "{}", share(0));
    for host in 1..16 {
        assert!(
            (share(host) - 800.0 / 13600.0).abs() <= 0.01,
            "{}",
            share(host)
        );
    }
    assert!((share(0) / share(1) - 2.0).abs() < 0.2);
    assert_eq!(map.share_of(ShardId::new(0, 0)), Some(200.0 / 13600.0));
}

#[test]
fn mixed_weights_get_their_exact_shares() {
    let shards: Vec<ShardWeight> = (0..12u16)
        .map(|i| ShardWeight {
            shard: ShardId::new(i / 4, i % 4),
            weight: u32::from(i) + 1,
        })
        .collect();
    let map = Membership::from_shards(1, shards.iter().copied()).unwrap();
    let key_count = 200_000;
    let loads = loads(&map, keys(51, key_count));
    for s in &shards {
        let share = loads[&s.shard] as f64 / key_count as f64;
        let expected = f64::from(s.weight) / 78.0;
        assert!(
            (share - expected).abs() <= 0.01,
            "{}: {share} vs {expected}",
            s.shard
        );
    }
}

#[test]
fn uniform_fast_path_equals_the_weighted_formula() {
    for map in [
        Membership::from_hosts(1, cluster(16, 8, 100)).unwrap(),
        Membership::from_hosts(1, cluster(3, 2, 1)).unwrap(),
        Membership::from_hosts(1, cluster(1, 1, 7)).unwrap(),
    ] {
        assert!(map.weights_uniform);
        for key in keys(61, 20_000) {
            assert_eq!(map.owner(key), owner_by_formula(&map, key), "{key}");
        }
    }
}

#[test]
fn skipping_hopeless_logarithms_does_not_change_the_owner() {
    let mut skewed = cluster(16, 8, 100);
    skewed[3].weight_per_core = 101;
    skewed[7].weight_per_core = 1;
    let mut extreme = cluster(4, 4, 1);
    extreme[0].weight_per_core = u32::MAX;
    extreme[2].weight_per_core = 1_000_000;
    for map in [
        Membership::from_hosts(1, skewed).unwrap(),
        Membership::from_hosts(1, extreme).unwrap(),
        Membership::from_shards(
            1,
            (0..64u16).map(|i| ShardWeight {
                shard: ShardId::new(i % 8, i / 8),
                weight: u32::from(i) * 37 + 1,
            }),
        )
        .unwrap(),
    ] {
        assert!(!map.weights_uniform);
        for key in keys(67, 20_000) {
            assert_eq!(map.owner(key), owner_by_formula(&map, key), "{key}");
        }
    }
}

#[test]
fn fallbacks_start_with_the_owner_and_rank_every_shard_once() {
    let mut hosts = cluster(4, 4, 100);
    hosts[2].weight_per_core = 300;
    for map in [
        Membership::from_hosts(1, cluster(4, 4, 100)).unwrap(),
        Membership::from_hosts(1, hosts).unwrap(),
    ] {
        let mut buffer = Vec::new();
        for key in keys(71, 2_000) {
            let all = map.fallbacks(key, usize::MAX);
            assert_eq!(all.len(), 16);
            assert_eq!(Some(all[0]), map.owner(key));
            let mut sorted = all.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), 16);
            map.fallbacks_into(key, 3, &mut buffer);
            assert_eq!(buffer, all[..3]);
            // The second choice is who owns the key once the owner is gone.
            let without_owner = Membership::from_shards(
                2,
                map.shards().iter().copied().filter(|s| s.shard != all[0]),
            )
            .unwrap();
            assert_eq!(without_owner.fallbacks(key, 15), all[1..]);
        }
    }
}

#[test]
fn invalid_memberships_are_rejected() {
    let shard = |host, core, weight| ShardWeight {
        shard: ShardId::new(host, core),
        weight,
    };
    assert_eq!(
        Membership::from_shards(1, [shard(1, 0, 1), shard(0, 0, 1), shard(1, 0, 2)]).unwrap_err(),
        MapError::ShardDuplicated(ShardId::new(1, 0))
    );
    assert_eq!(
        Membership::from_shards(1, [shard(1, 0, 1), shard(2, 0, 0)]).unwrap_err(),
        MapError::WeightZero(ShardId::new(2, 0))
    );
    let mut hosts = cluster(3, 2, 1);
    hosts.push(HostSpec {
        host: HostId(1),
        cores: vec![9],
        weight_per_core: 1,
    });
    assert_eq!(
        Membership::from_hosts(1, hosts).unwrap_err(),
        MapError::HostDuplicated(HostId(1))
    );
    let mut hosts = cluster(1, 2, 1);
    hosts[0].cores.push(1);
    assert_eq!(
        Membership::from_hosts(1, hosts).unwrap_err(),
        MapError::ShardDuplicated(ShardId::new(0, 1))
    );
}

#[test]
fn membership_size_is_bounded() {
    let full = Membership::from_hosts(1, cluster(64, 64, 1)).unwrap();
    assert_eq!(full.shards().len(), MEMBERSHIP_SHARDS_MAX);
    assert_eq!(
        Membership::from_hosts(1, cluster(65, 64, 1)).unwrap_err(),
        MapError::ShardsTooMany {
            count: MEMBERSHIP_SHARDS_MAX + 1
        }
    );
    let hosts_without_cores = (0..=MEMBERSHIP_SHARDS_MAX as u16).map(|host| HostSpec {
        host: HostId(host),
        cores: Vec::new(),
        weight_per_core: 1,
    });
    assert_eq!(
        Membership::from_hosts(1, hosts_without_cores).unwrap_err(),
        MapError::HostsTooMany {
            count: MEMBERSHIP_SHARDS_MAX + 1
        }
    );
    let too_many = (0..=MEMBERSHIP_SHARDS_MAX as u16).map(|i| ShardWeight {
        shard: ShardId::new(i, 0),
        weight: 1,
    });
    assert_eq!(
        Membership::from_shards(1, too_many).unwrap_err(),
        MapError::ShardsTooMany {
            count: MEMBERSHIP_SHARDS_MAX + 1
        }
    );
}

#[test]
fn an_empty_membership_owns_nothing() {
    let map = Membership::from_shards(3, []).unwrap();
    assert!(map.is_empty());
    assert_eq!(map.owner(ConvId(1)), None);
    assert!(map.fallbacks(ConvId(1), 4).is_empty());
    assert_eq!(map.share_of(ShardId::new(0, 0)), None);
    let mut cache = OwnerCache::new(8);
    assert_eq!(cache.owner(&map, ConvId(1)), None);
    assert!(cache.is_empty());
}

#[test]
fn accessors_report_the_canonical_membership() {
    let map = Membership::from_hosts(
        9,
        [
            HostSpec {
                host: HostId(2),
                cores: vec![1, 0],
                weight_per_core: 50,
            },
            HostSpec {
                host: HostId(1),
                cores: vec![3],
                weight_per_core: 100,
            },
        ],
    )
    .unwrap();
    assert_eq!(map.epoch(), 9);
    assert_eq!(
        map.shards(),
        [
            ShardWeight {
                shard: ShardId::new(1, 3),
                weight: 100
            },
            ShardWeight {
                shard: ShardId::new(2, 0),
                weight: 50
            },
            ShardWeight {
                shard: ShardId::new(2, 1),
                weight: 50
            },
        ]
    );
    assert_eq!(map.weight_total(), 200);
    assert_eq!(map.weight_of(ShardId::new(2, 1)), Some(50));
    assert_eq!(map.share_of(ShardId::new(1, 3)), Some(0.5));
    assert!(map.contains(ShardId::new(2, 0)));
    assert!(!map.contains(ShardId::new(1, 0)));
}

/// Reference vectors, also printed in docs/ownership-map.md: a client in another language
/// must reproduce them.
#[test]
fn reference_vectors() {
    let map = reference_membership();
    assert_eq!(map.checksum(), REFERENCE_CHECKSUM);
    assert_eq!(shard_seed(ShardId::new(1, 0)), REFERENCE_SEED_1_0);
    assert_eq!(
        score_hash(ConvId::of_name("general"), REFERENCE_SEED_1_0),
        REFERENCE_HASH_GENERAL_1_0
    );
    for (name, expected) in REFERENCE_FALLBACKS {
        let got: Vec<String> = map
            .fallbacks(ConvId::of_name(name), expected.len())
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(got, *expected, "{name}");
    }
}

fn reference_membership() -> Membership {
    Membership::from_hosts(
        7,
        [
            HostSpec {
                host: HostId(1),
                cores: vec![0, 1],
                weight_per_core: 100,
            },
            HostSpec {
                host: HostId(2),
                cores: vec![0, 1, 2],
                weight_per_core: 100,
            },
            HostSpec {
                host: HostId(3),
                cores: vec![0],
                weight_per_core: 200,
            },
        ],
    )
    .unwrap()
}

const REFERENCE_CHECKSUM: u64 = 0x2404_dd21_c86b_3697;
const REFERENCE_SEED_1_0: u64 = 0xdb02_334e_96d6_5708;
const REFERENCE_HASH_GENERAL_1_0: u64 = 0x2_72f8_fa2d_7093;
const REFERENCE_FALLBACKS: &[(&str, &[&str])] = &[
    ("general", &["3/0", "1/1", "2/2", "2/1", "1/0", "2/0"]),
    ("team/ops", &["3/0", "2/0", "2/2", "1/0", "2/1", "1/1"]),
    ("équipe", &["1/0", "2/2", "1/1", "2/1", "2/0", "3/0"]),
    ("walkie-7", &["3/0", "2/0", "1/1", "2/1", "2/2", "1/0"]),
    ("b", &["2/0"]),
    ("c", &["1/0"]),
    ("d", &["2/1"]),
];

/// Reference vectors of a membership with equal weights (the fast path).
#[test]
fn reference_vectors_uniform() {
    let map = Membership::from_hosts(1, cluster(2, 2, 1)).unwrap();
    assert_eq!(map.checksum(), 0x08ca_33d8_a313_569c);
    for (name, expected) in [
        ("general", ["0/0", "1/1", "0/1", "1/0"]),
        ("team/ops", ["0/1", "1/0", "0/0", "1/1"]),
        ("équipe", ["0/0", "1/0", "0/1", "1/1"]),
    ] {
        let got: Vec<String> = map
            .fallbacks(ConvId::of_name(name), 4)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(got, expected, "{name}");
    }
}

fn membership_strategy() -> impl Strategy<Value = Vec<ShardWeight>> {
    proptest::collection::btree_map((0u16..6, 0u16..6), 1u32..4, 0..12).prop_map(|shards| {
        shards
            .into_iter()
            .map(|((host, core), weight)| ShardWeight {
                shard: ShardId::new(host, core),
                weight,
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn specialised_hash_is_xxh3_with_seed(
        keys in proptest::collection::vec(any::<u64>(), 64),
        host in any::<u16>(),
        core in any::<u16>(),
    ) {
        let seed = shard_seed(ShardId::new(host, core));
        let specialised = ShardHash::new(seed);
        for key in keys.into_iter().map(ConvId) {
            let reference = xxhash_rust::xxh3::xxh3_64_with_seed(&key.0.to_le_bytes(), seed) >> 12;
            prop_assert_eq!(specialised.hash(KeyInput::new(key)), reference);
            prop_assert_eq!(score_hash(key, seed), reference);
        }
    }

    #[test]
    fn build_order_does_not_matter(
        shards in membership_strategy(),
        order in any::<u64>(),
        probe in proptest::collection::vec(any::<u64>(), 16),
    ) {
        let mut shuffled = shards.clone();
        // A seeded Fisher-Yates shuffle.
        for i in (1..shuffled.len()).rev() {
            let j = (splitmix64(order ^ i as u64) % (i as u64 + 1)) as usize;
            shuffled.swap(i, j);
        }
        let a = Membership::from_shards(4, shards).unwrap();
        let b = Membership::from_shards(4, shuffled).unwrap();
        prop_assert_eq!(a.checksum(), b.checksum());
        prop_assert_eq!(a.shards(), b.shards());
        for key in probe.into_iter().map(ConvId) {
            prop_assert_eq!(a.owner(key), b.owner(key));
            prop_assert_eq!(a.fallbacks(key, 4), b.fallbacks(key, 4));
            prop_assert_eq!(a.owner(key), owner_by_formula(&a, key));
        }
    }

    #[test]
    fn checksum_differs_whenever_membership_differs(
        a in membership_strategy(),
        b in membership_strategy(),
    ) {
        let ma = Membership::from_shards(1, a.clone()).unwrap();
        let mb = Membership::from_shards(1, b.clone()).unwrap();
        prop_assert_eq!(a == b, ma.checksum() == mb.checksum());
    }

    #[test]
    fn any_single_change_changes_the_checksum(
        shards in membership_strategy(),
        pick in any::<prop::sample::Index>(),
        change in 0u8..3,
    ) {
        prop_assume!(!shards.is_empty());
        let base = Membership::from_shards(1, shards.clone()).unwrap();
        let mut changed = shards.clone();
        let i = pick.index(changed.len());
        match change {
            0 => changed[i].weight += 1,
            1 => changed[i].shard.core += 100,
            _ => changed[i].shard.host.0 += 100,
        }
        let changed = Membership::from_shards(1, changed).unwrap();
        prop_assert_ne!(base.checksum(), changed.checksum());
        let removed = Membership::from_shards(
            1,
            shards.iter().copied().filter(|s| s.shard != shards[i].shard),
        ).unwrap();
        prop_assert_ne!(base.checksum(), removed.checksum());
    }
}
