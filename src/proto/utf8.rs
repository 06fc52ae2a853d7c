//! Incremental UTF-8 validation for text messages that arrive in pieces.
//!
//! A text message may be split across frames and reads, and a code point across both. The
//! [`Utf8Validator`] is fed each piece and fails as soon as the bytes seen so far can no
//! longer be the start of valid UTF-8 (the Autobahn 6.x "fail fast" cases), not only at the
//! end. It keeps at most three bytes of an unfinished code point; the bulk of each piece is
//! checked by [`std::str::from_utf8`], whose [`Utf8Error::error_len`] tells an invalid
//! sequence (`Some`) from one merely cut short (`None`).
//!
//! [`Utf8Error::error_len`]: std::str::Utf8Error::error_len

use thiserror::Error;

/// The bytes can never become valid UTF-8 (close code 1007, invalid frame payload data).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("invalid UTF-8 in text")]
pub struct InvalidUtf8;

/// Validates UTF-8 fed in arbitrary pieces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Utf8Validator {
    /// The bytes of a code point cut at the end of the last piece.
    pending: [u8; 4],
    /// How many bytes of `pending` are in use (0..=3).
    pending_len: u8,
}

impl Utf8Validator {
    /// A validator at the start of a text.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks the next piece of the text; fails as soon as it cannot become valid UTF-8.
    pub fn feed(&mut self, mut input: &[u8]) -> Result<(), InvalidUtf8> {
        if self.pending_len > 0 {
            // Complete the cut code point one byte at a time (at most three more bytes).
            while !input.is_empty() {
                let n = usize::from(self.pending_len);
                self.pending[n] = input[0];
                self.pending_len += 1;
                input = &input[1..];
                match std::str::from_utf8(&self.pending[..n + 1]) {
                    Ok(_) => {
                        self.pending_len = 0;
                        break;
                    }
                    Err(e) if e.error_len().is_some() => return Err(InvalidUtf8),
                    Err(_) => {}
                }
            }
            if self.pending_len > 0 {
                return Ok(());
            }
        }
        match std::str::from_utf8(input) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(InvalidUtf8),
            Err(e) => {
                let tail = &input[e.valid_up_to()..];
                self.pending[..tail.len()].copy_from_slice(tail);
                self.pending_len = tail.len() as u8;
                Ok(())
            }
        }
    }

    /// Ends the text: fails if it stops in the middle of a code point. Resets the validator.
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let complete = self.pending_len == 0;
        *self = Self::default();
        if complete {
            Ok(())
        } else {
            Err(InvalidUtf8)
        }
    }

    /// Whether the validator is at a code point boundary (nothing pending).
    pub fn is_at_boundary(&self) -> bool {
        self.pending_len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn validate_split(bytes: &[u8], cuts: &[usize]) -> Result<(), InvalidUtf8> {
        let mut v = Utf8Validator::new();
        let mut start = 0;
        for &cut in cuts {
            let cut = cut.clamp(start, bytes.len());
            v.feed(&bytes[start..cut])?;
            start = cut;
        }
        v.feed(&bytes[start..])?;
        v.finish()
    }

    #[test]
    fn accepts_code_point_split_everywhere() {
        let text = "κόσμε€𝄞a".as_bytes();
        for i in 0..=text.len() {
            for j in i..=text.len() {
                assert_eq!(validate_split(text, &[i, j]), Ok(()), "cuts {i} {j}");
            }
        }
    }

    #[test]
    fn fails_fast_on_impossible_prefix() {
        // Autobahn 6.4.1: the bad sequence arrives before the rest of the frame.
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed("κόσμε".as_bytes()), Ok(()));
        assert_eq!(v.feed(&[0xf4, 0x90]), Err(InvalidUtf8));
        // A surrogate (ED A0..) is invalid from its second byte.
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(&[0xed]), Ok(()));
        assert_eq!(v.feed(&[0xa0]), Err(InvalidUtf8));
        // Lone continuation and never-valid bytes fail at once.
        assert_eq!(Utf8Validator::new().feed(&[0x80]), Err(InvalidUtf8));
        assert_eq!(Utf8Validator::new().feed(&[0xff]), Err(InvalidUtf8));
    }

    #[test]
    fn incomplete_tail_fails_only_at_finish() {
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(&[b'a', 0xe2, 0x82]), Ok(()));
        assert!(!v.is_at_boundary());
        assert_eq!(v.finish(), Err(InvalidUtf8));
        assert!(v.is_at_boundary(), "finish resets");
    }

    proptest! {
        #[test]
        fn agrees_with_std_over_random_splits(
            bytes in proptest::collection::vec(
                prop_oneof![any::<u8>(), Just(0x80u8), Just(0xe2), Just(0xf0), Just(0x9f)], 0..64),
            mut cuts in proptest::collection::vec(0usize..64, 0..6),
        ) {
            cuts.sort_unstable();
            let expected = std::str::from_utf8(&bytes).is_ok();
            prop_assert_eq!(validate_split(&bytes, &cuts).is_ok(), expected);
        }

        #[test]
        fn valid_strings_pass_any_split(s in "\\PC{0,40}", mut cuts in proptest::collection::vec(0usize..200, 0..6)) {
            cuts.sort_unstable();
            prop_assert_eq!(validate_split(s.as_bytes(), &cuts), Ok(()));
        }

        #[test]
        fn fails_no_later_than_std_says(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            // Fed byte by byte, the validator must fail exactly at the first byte after which
            // no continuation could make the prefix valid.
            let mut v = Utf8Validator::new();
            for i in 0..bytes.len() {
                let ours = v.feed(&bytes[i..i + 1]).is_err();
                let std_fails = matches!(std::str::from_utf8(&bytes[..=i]), Err(e) if e.error_len().is_some());
                prop_assert_eq!(ours, std_fails, "at byte {}", i);
                if ours { break; }
            }
        }
    }
}
