//! Fuzzes the Prometheus text parser behind `hark status` (the admin endpoint's answer is
//! untrusted input to the CLI): samples or an error, never a panic.
#![no_main]

use hark_tools::cli::status::{parse_metrics, relay_status};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(samples) = parse_metrics(text)
    {
        let _ = relay_status(&samples);
    }
});
