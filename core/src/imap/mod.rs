//! IMAP4rev1 server (RFC 3501) with LITERAL+ (RFC 7888), IDLE (RFC 2177), UIDPLUS
//! (RFC 4315), MOVE (RFC 6851), NAMESPACE (RFC 2342), ID (RFC 2971), ENABLE (RFC 5161),
//! UNSELECT (RFC 3691), SASL-IR (RFC 4959), SPECIAL-USE (RFC 6154) and CHILDREN
//! (RFC 3348).
//!
//! The pieces, in the order input flows through them: [`fragment`] finds lines and
//! literals, [`command`] parses a complete command, the session runs it (asking the
//! store through [`ImapRequest`]s) and [`response`] encodes the answer.

pub mod command;
pub mod date;
pub mod fetch;
pub mod fragment;
pub mod mailbox;
pub mod response;
pub mod search;
pub mod sequence;
