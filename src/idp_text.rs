//! Text an identity provider sends back (OAuth `error`, `error_description`, a plain-text body),
//! made safe for a log line or a reply: egress and single sign-on both go through `sanitize`.

/// What an echoed secret is replaced by.
pub const REDACTED: &str = "<redacted>";

/// `text` reduced to the characters `keep` accepts, every occurrence of `secret` (reduced the same
/// way) replaced by [`REDACTED`], then cut to `max_chars` characters — in that order, so neither a
/// dropped character inside an echoed secret nor the cut can let a part of it through.
pub fn sanitize(text: &str, secret: &str, keep: fn(char) -> bool, max_chars: usize) -> String {
    let kept: String = text.chars().filter(|&c| keep(c)).collect();
    let secret: String = secret.chars().filter(|&c| keep(c)).collect();
    let redacted = if secret.is_empty() {
        kept
    } else {
        kept.replace(&secret, REDACTED)
    };
    redacted.chars().take(max_chars).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn printable(c: char) -> bool {
        !c.is_control()
    }

    #[test]
    fn the_secret_is_redacted_before_the_cut_and_after_the_filter() {
        let secret = "frontend-secret";
        // Across the cut: cut first, "frontend" would have stayed.
        let text = format!("{}{secret}", "x".repeat(12));
        assert_eq!(
            sanitize(&text, secret, printable, 20),
            "xxxxxxxxxxxx<redacte"
        );
        // Split by a dropped character: scrubbed first, it would have come out whole.
        assert_eq!(
            sanitize("a front\u{1}end-secret b", secret, printable, 100),
            "a <redacted> b"
        );
        // The secret reduced like the text: a narrow character set still finds it.
        assert_eq!(
            sanitize("bad:s3/cr3t", "s3/cr3t", |c| c.is_ascii_alphanumeric(), 64),
            "bad<redacted>"
        );
        assert_eq!(sanitize("no\u{7}secret here", "", printable, 5), "nosec");
    }
}
