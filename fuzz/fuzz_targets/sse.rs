//! Fuzzes the event-stream side of `proto::sse`: the parser fed in two pieces gives the same
//! messages and comments as fed whole (no panic, no line past its bound), and
//! `resume_after` on arbitrary header bytes never panics. The first byte picks the split.
#![no_main]

use libfuzzer_sys::fuzz_target;
use matchstream::proto::sse::{resume_after, SseParser};

fn parse(pieces: &[&[u8]]) -> (Result<Vec<matchstream::proto::sse::SseMessage>, ()>, u64) {
    let mut parser = SseParser::new();
    let mut out = Vec::new();
    for piece in pieces {
        if parser.feed(piece, &mut out).is_err() {
            return (Err(()), parser.comments());
        }
    }
    (Ok(out), parser.comments())
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let _ = resume_after(Some(input), std::str::from_utf8(input).ok());
    let cut = usize::from(split).min(input.len());
    let whole = parse(&[input]);
    let halves = parse(&[&input[..cut], &input[cut..]]);
    if whole.0.is_ok() && halves.0.is_ok() {
        assert_eq!(whole, halves);
    }
});
