//! Client-to-server payload masking (RFC 6455 §5.3).
//!
//! Every byte of a client frame's payload is XORed with one byte of a 4-byte key, cycling.
//! [`apply_mask`] is the fast path (eight bytes at a time through a `u64`, no `unsafe`);
//! [`apply_mask_reference`] is the byte-at-a-time definition it is tested and benched against.
//! Masking is its own inverse, so the same function masks and unmasks.

/// XORs `buf` in place with the masking `key`, as if `buf` started `offset` bytes into the
/// masked payload (only `offset % 4` matters).
///
/// The offset lets a payload that arrives in several reads be unmasked piece by piece:
/// pass the number of payload bytes already unmasked.
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let key = rotate_key(key, offset);
    let mut chunks = buf.chunks_exact_mut(8);
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let masked = u64::from_ne_bytes(word) ^ wide;
        chunk.copy_from_slice(&masked.to_ne_bytes());
    }
    // The chunks are a multiple of 8 bytes, so the remainder starts at key index 0 again.
    for (byte, k) in chunks.into_remainder().iter_mut().zip(key.iter().cycle()) {
        *byte ^= k;
    }
}

/// The plain definition of masking: byte `i` of the payload is XORed with `key[i % 4]`.
///
/// Kept public for tests and benchmarks; use [`apply_mask`] in real code.
pub fn apply_mask_reference(buf: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, byte) in buf.iter_mut().enumerate() {
        *byte ^= key[(offset + i) % 4];
    }
}

/// The key as seen from `offset` bytes into the payload.
fn rotate_key(key: [u8; 4], offset: usize) -> [u8; 4] {
    let mut rotated = key;
    rotated.rotate_left(offset % 4);
    rotated
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 37 + 11) as u8).collect()
    }

    #[test]
    fn fast_matches_reference_for_every_length_and_offset() {
        let key = [0x6d, 0xb6, 0xb2, 0x80];
        for len in 0..=80 {
            for offset in 0..4 {
                let mut fast = sample(len);
                let mut slow = fast.clone();
                apply_mask(&mut fast, key, offset);
                apply_mask_reference(&mut slow, key, offset);
                assert_eq!(fast, slow, "len {len} offset {offset}");
            }
        }
    }

    #[test]
    fn rfc_example_hello() {
        // RFC 6455 §5.7: "Hello" masked with 37 fa 21 3d.
        let mut payload = *b"Hello";
        apply_mask(&mut payload, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(payload, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    }

    #[test]
    fn piecewise_equals_whole() {
        let key = [1, 2, 3, 4];
        let mut whole = sample(50);
        let mut pieces = whole.clone();
        apply_mask(&mut whole, key, 0);
        let (a, b) = pieces.split_at_mut(13);
        apply_mask(a, key, 0);
        apply_mask(b, key, 13);
        assert_eq!(whole, pieces);
    }

    proptest! {
        #[test]
        fn fast_matches_reference(
            data in proptest::collection::vec(any::<u8>(), 0..600),
            key in any::<[u8; 4]>(),
            offset in 0usize..1000,
        ) {
            let mut fast = data.clone();
            let mut slow = data;
            apply_mask(&mut fast, key, offset);
            apply_mask_reference(&mut slow, key, offset);
            prop_assert_eq!(fast, slow);
        }
    }
}
