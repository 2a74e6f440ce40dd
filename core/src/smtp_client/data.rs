//! The message body on the wire: dot-stuffed after DATA (RFC 5321 §4.5.2, §4.1.1.4) or
//! framed in BDAT chunks (RFC 3030 §2), encoded one input chunk at a time with state
//! carried across chunk boundaries, so a message is never held whole.

use bytes::BytesMut;

use crate::wire::DotStuffer;

/// How the body is sent.
#[derive(Debug, Clone)]
pub enum BodyEncoder {
    /// After `354`: lines with a leading dot get it doubled, a bare LF becomes CRLF, and
    /// `.` CRLF ends the data ([`DotStuffer`]).
    Data(DotStuffer),
    /// `BDAT <size>[ LAST]` before each chunk's octets, sent unchanged (CHUNKING).
    Bdat,
}

impl BodyEncoder {
    /// An encoder for DATA.
    pub fn data() -> Self {
        BodyEncoder::Data(DotStuffer::new())
    }

    /// An encoder for BDAT.
    pub fn bdat() -> Self {
        BodyEncoder::Bdat
    }

    /// Appends the wire form of the message bytes `chunk` to `out`; `last` ends the
    /// message (the chunk may then be empty). Returns true when what was written needs a
    /// reply of its own: every BDAT command, and the end of DATA.
    pub fn encode(&mut self, chunk: &[u8], last: bool, out: &mut BytesMut) -> bool {
        match self {
            BodyEncoder::Data(stuffer) => {
                stuffer.stuff(chunk, out);
                if last {
                    stuffer.finish(out);
                }
                last
            }
            BodyEncoder::Bdat => {
                if chunk.is_empty() && !last {
                    return false;
                }
                let header = if last {
                    format!("BDAT {} LAST\r\n", chunk.len())
                } else {
                    format!("BDAT {}\r\n", chunk.len())
                };
                out.reserve(header.len() + chunk.len());
                out.extend_from_slice(header.as_bytes());
                out.extend_from_slice(chunk);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(mut encoder: BodyEncoder, chunks: &[&[u8]]) -> (Vec<u8>, usize) {
        let mut out = BytesMut::new();
        let mut replies = 0;
        for (i, chunk) in chunks.iter().enumerate() {
            replies += usize::from(encoder.encode(chunk, i + 1 == chunks.len(), &mut out));
        }
        (out.to_vec(), replies)
    }

    #[test]
    fn data_is_stuffed_across_chunks_and_terminated() {
        let (wire, replies) = encode(BodyEncoder::data(), &[b"a\r\n", b".b\r", b"\n..c", b""]);
        assert_eq!(wire, b"a\r\n..b\r\n...c\r\n.\r\n");
        assert_eq!(replies, 1);
    }

    #[test]
    fn bdat_frames_each_chunk_and_ends_with_last() {
        let (wire, replies) = encode(BodyEncoder::bdat(), &[b"ab\r\n", b"", b".c\r\n", b""]);
        assert_eq!(wire, b"BDAT 4\r\nab\r\nBDAT 4\r\n.c\r\nBDAT 0 LAST\r\n");
        assert_eq!(replies, 3);
        let (wire, replies) = encode(BodyEncoder::bdat(), &[b"x\r\n"]);
        assert_eq!(wire, b"BDAT 3 LAST\r\nx\r\n");
        assert_eq!(replies, 1);
    }
}
