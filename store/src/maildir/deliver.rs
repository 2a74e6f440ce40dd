//! Delivery of a whole message from a reader (`tidegate deliver`, the demo), built on
//! the streaming API ([`MaildirStore::begin_in`], [`super::PendingMessage`]): the message
//! is written once into the first recipient's `tmp/`, fsynced, linked into every
//! recipient's `new/` under its final name (`TIME.M<usec>P<pid>Q<counter>.<host>,S=<size>`)
//! (renamed into the first recipient's), and each `new/` fsynced. Link and rename are atomic on NFS, so
//! a reader never sees a partial message.

use std::io::{self, Read};

use tidegate_core::Account;

use super::{MaildirStore, PendingMessage, Recipient, StoreError};

/// Bytes read from the input at a time; the converted output is at most twice this.
const READ_BUF: usize = 64 * 1024;

/// Turns bare LF line ends into CRLF (RFC 5322 §2.1 line ends, as POP3 serves them
/// byte for byte) on a stream split anywhere; CRLF and lone CR pass unchanged.
#[derive(Debug, Default, Clone)]
pub struct LfToCrlf {
    prev_cr: bool,
}

impl LfToCrlf {
    /// A converter at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `input`, converted, to `out` (which grows by at most `2 * input.len()`).
    pub fn convert(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let mut start = 0;
        let mut prev_cr = self.prev_cr;
        for (i, &byte) in input.iter().enumerate() {
            if byte == b'\n' && !prev_cr {
                out.extend_from_slice(&input[start..i]);
                out.extend_from_slice(b"\r\n");
                start = i + 1;
            }
            prev_cr = byte == b'\r';
        }
        out.extend_from_slice(&input[start..]);
        self.prev_cr = prev_cr;
    }
}

impl MaildirStore {
    /// Delivers one message to every recipient's inbox, all or nothing, converting bare LF
    /// to CRLF while streaming (memory stays bounded whatever the size). Missing
    /// `tmp/ new/ cur/` folders are created (mode 0700). Returns the file name given in
    /// every `new/`. Recipients sharing a maildir get one copy. No quota is applied.
    pub fn deliver(
        &self,
        recipients: &[Account],
        mut reader: impl Read,
    ) -> Result<String, StoreError> {
        for account in recipients {
            self.mailbox_dir(account)?;
        }
        let Some(first) = recipients.first() else {
            return Err(StoreError::InvalidAccount);
        };
        let mut pending = self.begin_in(first)?;
        copy_converted(&mut reader, &mut pending)?;
        let name = pending.final_name();
        let recipients: Vec<Recipient> = recipients.iter().cloned().map(Recipient::from).collect();
        // The first error that is not the consequence of another one.
        let mut outcome = Ok(name);
        for result in pending.commit(&recipients, true) {
            match result {
                Ok(()) => {}
                Err(StoreError::NotDelivered) if outcome.is_ok() => {
                    outcome = Err(StoreError::NotDelivered)
                }
                Err(StoreError::NotDelivered) => {}
                Err(e) => return Err(e),
            }
        }
        outcome
    }
}

/// Streams `reader` into `pending` with LF → CRLF.
fn copy_converted(reader: &mut impl Read, pending: &mut PendingMessage) -> Result<(), StoreError> {
    let mut input = vec![0u8; READ_BUF];
    let mut out = Vec::with_capacity(2 * READ_BUF);
    let mut converter = LfToCrlf::new();
    loop {
        let n = match reader.read(&mut input) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        out.clear();
        converter.convert(&input[..n], &mut out);
        pending.append(&out)?;
    }
}

#[cfg(test)]
mod tests {
    use super::LfToCrlf;

    fn convert_split(input: &[u8], at: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut c = LfToCrlf::new();
        let (a, b) = input.split_at(at);
        c.convert(a, &mut out);
        c.convert(b, &mut out);
        out
    }

    #[test]
    fn bare_lf_becomes_crlf_wherever_the_input_is_split() {
        let input = b"a\nb\r\nc\rd\n\n";
        for at in 0..=input.len() {
            assert_eq!(
                convert_split(input, at),
                b"a\r\nb\r\nc\rd\r\n\r\n",
                "split at {at}"
            );
        }
    }
}
