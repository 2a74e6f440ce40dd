//! MIME structure of a stored message and its IMAP renderings (RFC 2045, RFC 2046,
//! RFC 5322; RFC 3501 §6.4.5 and §7.4.2).
//!
//! IMAP serves parts of a message by their exact stored bytes (`BODY[1.2.MIME]`), so the
//! parser here records byte offsets into the stored message for every part: where its
//! header starts and ends and where its body starts and ends. General-purpose mail
//! crates decode and normalise as they go and do not expose those offsets, so this is a
//! small parser of our own that never copies or decodes the message: RFC 2047 encoded
//! words and transfer encodings are left as stored, as IMAP wants them.
//!
//! * [`parse`] builds the [`Part`] tree. It is linear in the message size per nesting
//!   level, nesting is bounded by [`MAX_DEPTH`] and the number of parts by [`MAX_PARTS`],
//!   so any input costs at most `MAX_DEPTH` passes over its bytes.
//! * [`envelope`] renders the ENVELOPE of a message, [`body_structure`] its BODY or
//!   BODYSTRUCTURE, and [`section`] finds the bytes of a `BODY[section]`. Their `_of`
//!   variants ([`envelope_of`], [`body_structure_of`], [`section_of`]) take a tree
//!   already parsed, so a FETCH of several items parses the message once.
//!
//! Input is the message as stored (CRLF line ends); bare LF line ends are tolerated.
//! Nothing here panics on any input, and every offset lies within the input.

mod address;
mod encoded_word;
mod header;
mod render;
mod section;
mod structure;

pub use address::{Address, MISSING_DOMAIN, MISSING_MAILBOX, parse_address_list};
pub use encoded_word::decode_encoded_words;
pub use header::{Field, Fields, fields, unfold};
pub use render::{body_structure, body_structure_of, envelope, envelope_of};
pub use section::{SectionBytes, SectionPart, section, section_of};
pub use structure::{Body, MAX_DEPTH, MAX_PARTS, Part, parse};
