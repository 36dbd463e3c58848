//! Secrets carried in links: the host key, moderator keys, the invite code.

use subtle::ConstantTimeEq;

use crate::util::id::random_token;

/// A secret: shown nowhere, not even in `Debug`.
#[derive(Clone)]
pub struct Key(String);

impl Key {
    /// A fresh random key: 32 bytes, URL-safe base64.
    pub fn random() -> Key {
        Key(random_token(32))
    }

    /// A key given by the streamer (`COWATCH_HOST_KEY`).
    pub fn new(text: impl Into<String>) -> Key {
        Key(text.into())
    }

    /// The key itself, for the one link that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this key, in time that does not depend on where they differ.
    pub fn matches(&self, presented: &str) -> bool {
        // Lengths leak nothing useful: keys are random and of fixed length.
        bool::from(self.0.as_bytes().ct_eq(presented.as_bytes()))
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(…)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_do_not_print() {
        assert_eq!(format!("{:?}", Key::new("secret")), "Key(…)");
    }
}
