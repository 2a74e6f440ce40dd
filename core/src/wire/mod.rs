//! Bounded framing that runs before any grammar: lines and dot-stuffed data.
//!
//! Framers never re-scan bytes they have already looked at and never hold more than their
//! limit, so a parser above them only ever sees complete, bounded units.

pub mod dot;
pub mod line;

pub use dot::{DotStuffer, DotUnstuffer, Unstuffed};
pub use line::{LineBuffer, LineEvent};
