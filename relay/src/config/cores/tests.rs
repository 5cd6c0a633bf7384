use super::*;

use std::collections::BTreeSet;

use proptest::prelude::*;

use crate::config::{ConfigError, parse_core_list};

#[test]
fn core_lists_parse_as_cpusets() {
    assert_eq!(parse_core_list("0-3,6").unwrap(), vec![0, 1, 2, 3, 6]);
    assert_eq!(parse_core_list(" 6 , 0-1 ").unwrap(), vec![0, 1, 6]);
    assert_eq!(parse_core_list("0-3,2").unwrap(), vec![0, 1, 2, 3]);
    assert_eq!(parse_core_list("5-5").unwrap(), vec![5]);
    assert_eq!(parse_core_list("0-1023").unwrap().len(), 1024);
    let error = |text: &str| match parse_core_list(text) {
        Err(ConfigError::CoreList(error)) => error,
        other => panic!("{text:?}: expected a core list error, got {other:?}"),
    };
    assert_eq!(error(""), CoreListError::Empty);
    assert_eq!(error("  "), CoreListError::Empty);
    assert_eq!(
        error("3-1"),
        CoreListError::RangeReversed { first: 3, last: 1 }
    );
    assert_eq!(error("1024"), CoreListError::CoreTooHigh { core: 1024 });
    assert_eq!(
        error("0-99999999999999999999999"),
        CoreListError::CoreTooHigh { core: u64::MAX }
    );
    for bad in [
        ",", "1,", ",1", "-1", "1-", "a", "+1", "1 2", "1-2-3", "0x1", "１",
    ] {
        assert!(
            matches!(error(bad), CoreListError::ItemInvalid { .. }),
            "{bad:?}"
        );
    }
    let long = "0,".repeat(CORE_LIST_TEXT_LEN_MAX);
    assert_eq!(
        error(&long),
        CoreListError::TextTooLong {
            len: CORE_LIST_TEXT_LEN_MAX * 2
        }
    );
    let quoted = error(&format!("{},1", "x".repeat(100)));
    assert_eq!(
        quoted,
        CoreListError::ItemInvalid {
            item: "x".repeat(32)
        }
    );
}

#[test]
fn core_lists_render_runs_as_ranges() {
    assert_eq!(render_core_list(&[0, 1, 2, 3, 6]), "0-3,6");
    assert_eq!(render_core_list(&[0, 2, 4]), "0,2,4");
    assert_eq!(render_core_list(&[4, 5]), "4-5");
    assert_eq!(render_core_list(&[]), "");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn core_list_parsing_never_panics(text in "\\PC{0,64}|[0-9,\\- ]{0,64}") {
        let _ = parse_core_list(&text);
    }

    #[test]
    fn rendered_core_lists_parse_back(ids in proptest::collection::btree_set(0..=CORE_ID_MAX, 1..64)) {
        let ids: Vec<usize> = ids.into_iter().collect();
        prop_assert_eq!(parse_core_list(&render_core_list(&ids)).unwrap(), ids);
    }

    #[test]
    fn parsed_lists_are_sorted_and_distinct(text in "[0-9]{1,4}(-[0-9]{1,4})?(,[0-9]{1,4}(-[0-9]{1,4})?){0,8}") {
        if let Ok(ids) = parse_core_list(&text) {
            let set: BTreeSet<usize> = ids.iter().copied().collect();
            prop_assert_eq!(ids.len(), set.len());
            prop_assert!(ids.windows(2).all(|pair| pair[0] < pair[1]));
            prop_assert_eq!(parse_core_list(&render_core_list(&ids)).unwrap(), ids);
        }
    }
}
