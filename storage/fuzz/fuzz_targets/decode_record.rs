//! Fuzzes the store's record parser, the code that reads segment bytes back from disk after a
//! crash. Each input is parsed three ways: as raw record bytes, as a whole segment file, and
//! as the payload of a record whose length and crc32c are correct, so the fuzzer reaches the
//! field parsers (start, frames, end) that the checksum guards.
#![no_main]

use hark_core::MsgId;
use hark_storage::format::{Record, RecordKind, begin_record, finish_record};
use hark_storage::segment::scan_segment;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Record::decode(data);
    let _ = scan_segment(1, data);

    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Some((&flags, payload)) = rest.split_first() else {
        return;
    };
    let kind = match selector % 3 {
        0 => RecordKind::Start,
        1 => RecordKind::Frames,
        _ => RecordKind::End,
    };
    let mut bytes = Vec::with_capacity(payload.len() + 28);
    let start = begin_record(&mut bytes, kind, flags, MsgId(u128::from(selector)));
    bytes.extend_from_slice(payload);
    finish_record(&mut bytes, start);
    if let Ok((record, len)) = Record::decode(&bytes) {
        assert_eq!(
            len,
            bytes.len(),
            "a record spans exactly its header and payload"
        );
        if let Ok(frames) = record.frames() {
            for frame in frames {
                let _ = frame;
            }
        }
        let _ = record.start();
        let _ = record.end();
    }
});
