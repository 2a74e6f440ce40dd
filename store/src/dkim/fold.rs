//! Folding the DKIM-Signature header field (RFC 5322 §2.2.3) so no line is longer than 78
//! characters (RFC 5322 §2.1.1). Folds go only where RFC 6376 §3.5 allows whitespace:
//! between tags, between header names in `h=`, and anywhere inside a base64 value.

/// The longest line we write, without its CRLF (RFC 5322 §2.1.1 "SHOULD").
pub const MAX_LINE: usize = 78;

/// Builds a folded header field tag by tag.
#[derive(Debug, Clone)]
pub struct Folder {
    out: String,
    column: usize,
    tags: usize,
}

impl Folder {
    /// Starts a field with `name:` (no space yet).
    pub fn new(name: &str) -> Self {
        let out = format!("{name}:");
        let column = out.len();
        Folder {
            out,
            column,
            tags: 0,
        }
    }

    /// Adds a tag made of `pieces`: the field may fold between pieces but never inside one.
    /// Tags after the first are preceded by `;`.
    pub fn tag(&mut self, pieces: &[&str]) {
        if self.tags > 0 {
            self.out.push(';');
            self.column += 1;
        }
        self.tags += 1;
        for (index, piece) in pieces.iter().enumerate() {
            // Room for the piece, plus the ';' that may follow the tag's last piece.
            let need = piece.len() + usize::from(index + 1 == pieces.len());
            let space = usize::from(index == 0);
            if self.column + space + need > MAX_LINE && self.column > 1 {
                self.out.push_str("\r\n ");
                self.column = 1;
            } else if space == 1 {
                self.out.push(' ');
                self.column += 1;
            }
            self.out.push_str(piece);
            self.column += piece.len();
        }
    }

    /// Appends a base64 value to the last tag, folding where a line fills up.
    pub fn base64(&mut self, value: &str) {
        let mut rest = value;
        while !rest.is_empty() {
            let room = MAX_LINE.saturating_sub(self.column);
            if room == 0 {
                self.out.push_str("\r\n ");
                self.column = 1;
                continue;
            }
            let (now, later) = rest.split_at(room.min(rest.len()));
            self.out.push_str(now);
            self.column += now.len();
            rest = later;
        }
    }

    /// The field so far, without a final CRLF.
    pub fn as_str(&self) -> &str {
        &self.out
    }
}

/// Splits a base64 value into one-character pieces, so [`Folder::tag`] can fold it at any
/// point (`prefix` such as `bh=` stays with the first character).
pub fn base64_pieces<'a>(prefix: &'a str, value: &'a str) -> Vec<&'a str> {
    let mut pieces = vec![prefix];
    pieces.extend(
        value
            .char_indices()
            .map(|(i, c)| value.get(i..i + c.len_utf8()).unwrap_or_default()),
    );
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_stay_within_the_limit() {
        let mut folder = Folder::new("DKIM-Signature");
        folder.tag(&["v=1"]);
        folder.tag(&["a=rsa-sha256"]);
        folder.tag(&["d=example.com"]);
        let names = ["h=from", ":to", ":subject", ":date", ":message-id", ":from"];
        for _ in 0..3 {
            folder.tag(&names);
        }
        let b64 = "A".repeat(200);
        folder.tag(&base64_pieces("bh=", &b64));
        folder.tag(&["b="]);
        folder.base64(&b64);
        for line in folder.as_str().split("\r\n") {
            assert!(line.len() <= MAX_LINE, "{line:?}");
        }
        assert!(
            folder
                .as_str()
                .starts_with("DKIM-Signature: v=1; a=rsa-sha256;")
        );
        let unfolded = folder.as_str().replace("\r\n ", "");
        assert!(unfolded.contains(&format!("bh={b64};")));
        assert!(unfolded.ends_with(&format!("b={b64}")));
    }
}
