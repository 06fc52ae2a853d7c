//! Fuzzes `parse_connect` and the block/error encoders: no panic, consumed bytes within the
//! input, and an encoded block always ends with its `\r\n` line and has no other `\r`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use matchstream::proto::{encode_block, encode_error, parse_connect};

fuzz_target!(|data: &[u8]| {
    match parse_connect(data, 128) {
        Ok(Some((req, used))) => {
            assert!(used <= data.len() && used <= 130);
            let mut out = Vec::new();
            let ts = i64::from_le_bytes(std::array::from_fn(|i| data.get(i).copied().unwrap_or(0)));
            encode_block(&mut out, ts / 4, &req.mid, &[("uid", req.uid.clone())]);
            assert!(out.ends_with(b"\r\n"));
            assert_eq!(out.iter().filter(|&&b| b == b'\r').count(), 1);
        }
        Ok(None) => {}
        Err(e) => {
            let mut out = Vec::new();
            encode_error(&mut out, &e.reason());
        }
    }
});
