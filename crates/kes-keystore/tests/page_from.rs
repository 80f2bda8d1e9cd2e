//! Properties of `page_from`, which every store that can only enumerate everything relies on
//! for paging.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kes_keystore::{page_from, MAX_LIST_PAGE};
use proptest::prelude::*;
use std::collections::BTreeSet;

fn name() -> impl Strategy<Value = String> {
    // A small alphabet so prefixes, duplicates and equal continue_at values actually occur.
    "[abc]{0,4}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Following continue_at page by page yields exactly the sorted, distinct names with the
    /// prefix, each page within the limit.
    #[test]
    fn paging_visits_every_name_once(
        names in proptest::collection::vec(name(), 0..40),
        prefix in name(),
        limit in 0usize..6,
    ) {
        let model: Vec<String> = names
            .iter()
            .filter(|n| n.starts_with(&prefix))
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut seen = Vec::new();
        let mut continue_at = String::new();
        for _ in 0..=model.len() {
            let page = page_from(names.iter().cloned(), &prefix, &continue_at, limit);
            prop_assert!(page.names.len() <= limit.max(1));
            seen.extend(page.names.iter().cloned());
            if page.continue_at.is_empty() {
                break;
            }
            // continue_at is the first name not returned, so it sorts after the page.
            prop_assert!(page.names.last().is_some_and(|l| *l < page.continue_at));
            prop_assert!(model.contains(&page.continue_at));
            continue_at = page.continue_at;
        }
        prop_assert_eq!(seen, model);
    }

    /// A page starts at continue_at inclusively, whether or not that name exists.
    #[test]
    fn continue_at_is_an_inclusive_lower_bound(
        names in proptest::collection::vec(name(), 0..40),
        prefix in name(),
        continue_at in name(),
    ) {
        let page = page_from(names.iter().cloned(), &prefix, &continue_at, MAX_LIST_PAGE);
        let model: Vec<String> = names
            .iter()
            .filter(|n| n.starts_with(&prefix) && **n >= continue_at)
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        prop_assert_eq!(page.names, model);
        prop_assert_eq!(page.continue_at, "");
    }
}

#[test]
fn limit_is_capped_at_a_full_page() {
    let names: Vec<String> = (0..MAX_LIST_PAGE + 10)
        .map(|i| format!("k{i:05}"))
        .collect();
    let page = page_from(names.iter().cloned(), "", "", usize::MAX);
    assert_eq!(page.names.len(), MAX_LIST_PAGE);
    assert_eq!(page.continue_at, names[MAX_LIST_PAGE]);
}
