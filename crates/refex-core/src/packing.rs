//! Raw deflate primed with a preset dictionary: how short texts made of the same few words
//! every time (an audit detail, a JWE header) are kept small at rest. On its own deflate
//! saves little on a few hundred bytes; primed with the words they are made of, it keeps a
//! fraction. A dictionary is part of the stored format of whatever uses it: changing one
//! makes everything packed with it unreadable, so each user freezes its own and versions it.
//!
//! Out of scope: which dictionary and version a value uses (its owner), and where it is kept.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// A packed stream that does not unpack.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InflateError {
    /// The stream is damaged or truncated, or has bytes after its end.
    #[error("damaged deflate stream")]
    Stream,
    /// It would unpack to more than the caller's limit.
    #[error("unpacks to more than its limit")]
    TooLong,
}

/// Appends `input`, deflated with the preset `dictionary` over a window of 2^`window_bits`
/// bytes (9–15; it must hold the dictionary), to `out`.
pub fn deflate_into(dictionary: &[u8], window_bits: u8, input: &[u8], out: &mut Vec<u8>) {
    let mut deflate = Compress::new_with_window_bits(Compression::default(), false, window_bits);
    // Setting a dictionary on a fresh stream cannot fail.
    if let Err(e) = deflate.set_dictionary(dictionary) {
        unreachable!("a fresh deflate stream takes its dictionary: {e}");
    }
    loop {
        let consumed = deflate.total_in() as usize;
        out.reserve(input.len() / 4 + 64);
        // Deflating into a vector with spare room cannot fail; `BufError` only says the room
        // ran out, and the loop makes more.
        match deflate.compress_vec(&input[consumed..], out, FlushCompress::Finish) {
            Ok(Status::StreamEnd) => return,
            Ok(Status::Ok | Status::BufError) => {}
            Err(e) => unreachable!("deflating into a vector: {e}"),
        }
    }
}

/// What [`deflate_into`] wrote, with the same dictionary and window, read back: the whole of
/// `stream` and nothing after it, at most `max` bytes.
pub fn inflate(
    dictionary: &[u8],
    window_bits: u8,
    stream: &[u8],
    max: usize,
) -> Result<Vec<u8>, InflateError> {
    let mut inflate = Decompress::new_with_window_bits(false, window_bits);
    inflate
        .set_dictionary(dictionary)
        .map_err(|_| InflateError::Stream)?;
    let mut out = Vec::with_capacity((stream.len() * 8).min(max));
    loop {
        if out.len() == out.capacity() {
            if out.len() >= max {
                return Err(InflateError::TooLong);
            }
            out.reserve(out.len().max(256).min(max - out.len()));
        }
        let consumed = inflate.total_in() as usize;
        let before = (inflate.total_in(), inflate.total_out());
        let status = inflate.decompress_vec(&stream[consumed..], &mut out, FlushDecompress::Finish);
        if out.len() > max {
            return Err(InflateError::TooLong);
        }
        match status {
            Ok(Status::StreamEnd) => break,
            // No progress with room to spare: the stream ended early.
            Ok(Status::Ok | Status::BufError)
                if (inflate.total_in(), inflate.total_out()) == before
                    && out.len() < out.capacity() =>
            {
                return Err(InflateError::Stream);
            }
            Ok(Status::Ok | Status::BufError) => {}
            Err(_) => return Err(InflateError::Stream),
        }
    }
    if inflate.total_in() as usize != stream.len() {
        return Err(InflateError::Stream);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DICTIONARY: &[u8] = b"\"to\":\"\",\"view\":\"/\",\"disclosed\":[\"/name/given\"]";

    fn round(input: &[u8], max: usize) -> Result<Vec<u8>, InflateError> {
        let mut out = Vec::new();
        deflate_into(DICTIONARY, 12, input, &mut out);
        inflate(DICTIONARY, 12, &out, max)
    }

    #[test]
    fn what_is_deflated_inflates_to_exactly_it() {
        for input in [&b""[..], b"x", br#"{"to":"imara","view":"idva/x"}"#] {
            assert_eq!(round(input, 1 << 20).unwrap(), input);
        }
        let long = vec![b'a'; 100_000];
        assert_eq!(round(&long, 1 << 20).unwrap(), long);
        let mut primed = Vec::new();
        deflate_into(DICTIONARY, 12, br#"{"to":"","view":"/"}"#, &mut primed);
        assert!(primed.len() < 12, "{} bytes", primed.len());
    }

    #[test]
    fn a_damaged_stream_or_a_bomb_is_refused() {
        let mut packed = Vec::new();
        deflate_into(DICTIONARY, 12, &[b'z'; 5_000], &mut packed);
        assert_eq!(
            inflate(DICTIONARY, 12, &packed, 4_999),
            Err(InflateError::TooLong)
        );
        assert_eq!(
            inflate(DICTIONARY, 12, &packed, 5_000).unwrap().len(),
            5_000
        );
        let truncated = &packed[..packed.len() - 1];
        assert_eq!(
            inflate(DICTIONARY, 12, truncated, 1 << 20),
            Err(InflateError::Stream)
        );
        let mut trailing = packed.clone();
        trailing.push(0);
        assert_eq!(
            inflate(DICTIONARY, 12, &trailing, 1 << 20),
            Err(InflateError::Stream)
        );
        assert_eq!(
            inflate(DICTIONARY, 12, &[0xff; 8], 1 << 20),
            Err(InflateError::Stream)
        );
    }
}
