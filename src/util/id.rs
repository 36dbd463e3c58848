//! Random ids and keys, with one failure rule.
//!
//! Every id that a stranger must not guess (host and moderator keys, invite codes, viewer
//! sessions, WHEP resource ids, party message ids) comes from the operating system's
//! generator. If that generator fails, nothing here limps on with a guessable fallback: the
//! call panics with a message that names the cause. On Linux `getrandom` only blocks before
//! the entropy pool is first initialised and never fails afterwards, so this is a broken
//! machine, not a condition to handle.

/// `N` random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    fill(&mut bytes);
    bytes
}

/// A random `u64`, e.g. for a session id.
pub fn random_u64() -> u64 {
    u64::from_le_bytes(random_bytes())
}

/// `bytes` random bytes as lower-case hex.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    fill(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// `bytes` random bytes as URL-safe base64 without padding: for keys carried in links.
pub fn random_token(bytes: usize) -> String {
    use base64::Engine;
    let mut buf = vec![0u8; bytes];
    fill(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

fn fill(buf: &mut [u8]) {
    if let Err(e) = getrandom::fill(buf) {
        panic!("the operating system's random number generator failed ({e}): no key would be safe");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_their_length_and_differ() {
        assert_eq!(random_hex(12).len(), 24);
        assert!(random_hex(12).chars().all(|c| c.is_ascii_hexdigit()));
        // 32 bytes → 43 base64 characters without padding, none needing escaping in a URL.
        let token = random_token(32);
        assert_eq!(token.len(), 43);
        assert!(
            token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_ne!(random_token(32), token);
        assert_ne!(random_u64(), random_u64());
    }
}
