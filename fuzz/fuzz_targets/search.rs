//! Search filters and order_by entries of every endpoint: Ok or a short, non-empty SearchError.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlkube_server::search::{self, Clause, OrderBy, SearchError};

type Filter = fn(&str) -> Result<Vec<Clause>, SearchError>;
type Order = fn(&str) -> Result<OrderBy, SearchError>;

const FILTERS: [Filter; 5] = [
    search::parse_run_filter,
    search::parse_experiment_filter,
    search::parse_registered_model_filter,
    search::parse_model_version_filter,
    search::parse_logged_model_filter,
];
const ORDERS: [Order; 5] = [
    search::parse_run_order_by,
    search::parse_experiment_order_by,
    search::parse_registered_model_order_by,
    search::parse_model_version_order_by,
    search::parse_logged_model_order_field,
];

fn check(err: SearchError) {
    let chars = err.0.chars().count();
    assert!(chars > 0 && chars <= 600, "{chars}-character message: {}", err.0);
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for parse in FILTERS {
        if let Err(err) = parse(text) {
            check(err);
        }
    }
    for parse in ORDERS {
        if let Err(err) = parse(text) {
            check(err);
        }
    }
});
