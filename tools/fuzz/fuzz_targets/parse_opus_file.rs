//! Fuzzes the Ogg Opus reader behind `hark talk`: any file must give a file or a typed error,
//! never a panic.
#![no_main]

use std::path::Path;

use hark_tools::opus::OpusFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = OpusFile::parse(Path::new("fuzz.opus"), data.to_vec());
});
