//! Fuzzes `FrameHeader::parse`: no panic; a parsed header is at most 14 bytes, encodes back
//! to a header that parses to the same value, and every prefix of it needs more bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use matchstream::proto::FrameHeader;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((header, used))) = FrameHeader::parse(data) {
        assert!(used <= 14 && used <= data.len());
        let mut out = Vec::new();
        header.encode(&mut out);
        assert!(
            out.len() <= used,
            "shortest form never longer than the input's"
        );
        assert_eq!(FrameHeader::parse(&out), Ok(Some((header, out.len()))));
        for len in 0..out.len() {
            assert_eq!(FrameHeader::parse(&out[..len]), Ok(None));
        }
    }
});
