//! Fuzzes the harness's reader of server frames: whatever bytes a server sends, the in-place
//! reader (`frame_at`, used by every watcher) never panics, every frame it finds lies inside
//! the bytes, and taking frames off the front (`next_raw_frame`) finds the same frames with the
//! same payloads (uncompressed ones byte for byte) and leaves the same rest.
#![no_main]

use libfuzzer_sys::fuzz_target;
use matchstream::load::client::{frame_at, next_raw_frame};

fuzz_target!(|data: &[u8]| {
    let mut owned = data.to_vec();
    let mut at = 0;
    while let Ok(Some(frame)) = frame_at(&data[at..]) {
        assert!(frame.payload.start <= frame.payload.end);
        assert!(at + frame.len() <= data.len());
        match next_raw_frame(&mut owned) {
            Ok(Some((opcode, payload))) => {
                assert_eq!(opcode, frame.opcode);
                if !frame.compressed {
                    let start = at + frame.payload.start;
                    assert_eq!(payload, &data[start..at + frame.payload.end]);
                }
                assert_eq!(owned, &data[at + frame.len()..]);
            }
            Ok(None) => panic!("the owned reader missed a complete frame"),
            Err(_) => {
                // Only a compressed payload that does not inflate can fail here.
                assert!(frame.compressed);
                return;
            }
        }
        at += frame.len();
    }
});
