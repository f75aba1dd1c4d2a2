//! Verified-token cache, per Wasm VM: SHA-256(token) → what verification produced. Only valid
//! tokens are stored; entries die at the token's `exp`, when the key that verified them leaves
//! the JWKS, or when the LRU bound evicts them. A hit skips parsing and the signature check, never
//! the time checks or the policies.

use crate::identity::Identity;
use lru::LruCache;
use sha2::{Digest, Sha256};
use std::num::NonZeroUsize;
use std::rc::Rc;

pub type TokenKey = [u8; 32];

pub fn token_key(token: &str) -> TokenKey {
    Sha256::digest(token.as_bytes()).into()
}

#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken {
    /// Index of the jwtRule that verified it.
    pub rule: usize,
    pub identity: Identity,
    /// Headers to add upstream (claim and payload headers), computed once.
    pub outputs: Vec<(String, String)>,
    pub exp: Option<u64>,
    pub nbf: Option<u64>,
    pub key_fingerprint: [u8; 32],
}

pub struct TokenCache {
    lru: Option<LruCache<TokenKey, Rc<VerifiedToken>>>,
}

impl TokenCache {
    /// `capacity` 0 disables the cache.
    pub fn new(capacity: usize) -> TokenCache {
        TokenCache {
            lru: NonZeroUsize::new(capacity).map(LruCache::new),
        }
    }

    /// A live entry, or None. Entries at or past their `exp` are dropped here.
    pub fn get(&mut self, key: &TokenKey, now_secs: u64) -> Option<Rc<VerifiedToken>> {
        let lru = self.lru.as_mut()?;
        let entry = lru.get(key)?.clone();
        if entry.exp.is_some_and(|exp| now_secs >= exp) {
            lru.pop(key);
            return None;
        }
        Some(entry)
    }

    pub fn insert(&mut self, key: TokenKey, value: Rc<VerifiedToken>) {
        if let Some(lru) = self.lru.as_mut() {
            lru.put(key, value);
        }
    }

    /// Drops every entry of `rule` whose verifying key is no longer published.
    pub fn retain_keys(&mut self, rule: usize, still_published: impl Fn(&[u8; 32]) -> bool) {
        let Some(lru) = self.lru.as_mut() else { return };
        let gone: Vec<TokenKey> = lru
            .iter()
            .filter(|(_, v)| v.rule == rule && !still_published(&v.key_fingerprint))
            .map(|(k, _)| *k)
            .collect();
        for k in gone {
            lru.pop(&k);
        }
    }

    pub fn len(&self) -> usize {
        self.lru.as_ref().map_or(0, LruCache::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    fn entry(rule: usize, exp: Option<u64>, fp: u8) -> Rc<VerifiedToken> {
        Rc::new(VerifiedToken {
            rule,
            identity: Identity {
                issuer: "i".into(),
                subject: "s".into(),
                audiences: vec![],
                presenter: None,
                claims: Rc::new(Map::new()),
                space_delimited_claims: Rc::from(vec![]),
            },
            outputs: vec![],
            exp,
            nbf: None,
            key_fingerprint: [fp; 32],
        })
    }

    #[test]
    fn expires_at_exp_exactly() {
        let mut c = TokenCache::new(4);
        c.insert(token_key("t"), entry(0, Some(100), 1));
        assert!(c.get(&token_key("t"), 99).is_some());
        assert!(c.get(&token_key("t"), 100).is_none());
        assert!(c.is_empty());
    }

    #[test]
    fn bounded_lru() {
        let mut c = TokenCache::new(2);
        c.insert(token_key("a"), entry(0, None, 1));
        c.insert(token_key("b"), entry(0, None, 1));
        assert!(c.get(&token_key("a"), 0).is_some());
        c.insert(token_key("c"), entry(0, None, 1));
        assert!(
            c.get(&token_key("b"), 0).is_none(),
            "least recently used evicted"
        );
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn entries_die_with_their_key() {
        let mut c = TokenCache::new(8);
        c.insert(token_key("a"), entry(0, None, 1));
        c.insert(token_key("b"), entry(0, None, 2));
        c.insert(token_key("c"), entry(1, None, 1));
        c.retain_keys(0, |fp| fp[0] == 2);
        assert!(c.get(&token_key("a"), 0).is_none());
        assert!(c.get(&token_key("b"), 0).is_some());
        assert!(c.get(&token_key("c"), 0).is_some(), "other rule untouched");
    }

    #[test]
    fn zero_capacity_disables() {
        let mut c = TokenCache::new(0);
        c.insert(token_key("a"), entry(0, None, 1));
        assert!(c.get(&token_key("a"), 0).is_none());
    }
}
