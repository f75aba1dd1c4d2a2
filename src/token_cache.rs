//! Verified-token cache, per Wasm VM: token → what verification produced. Only valid tokens are
//! stored; entries die at the token's `exp`, when the key that verified them leaves the JWKS, or
//! when the LRU bounds (entries, and bytes of token text) evict them. A hit skips parsing and the
//! signature check, never the time checks or the policies.
//!
//! The key is the token itself, compared in full, as in Envoy's `jwt_cache`: a SHA-256 key was
//! measured at ~5.6 µs per request in V8 (a third of meshgate's same-token overhead). The table
//! hash (foldhash, fixed seed) only spreads entries; equality is exact, so a collision costs a
//! comparison, never a wrong identity, and only verified tokens are ever inserted.

use crate::identity::Identity;
use foldhash::fast::FixedState;
use lru::LruCache;
use std::num::NonZeroUsize;
use std::rc::Rc;

/// Token text the cache may hold per VM, on top of the entry bound (tokens are ≤ 16 KiB each).
pub const MAX_CACHED_TOKEN_BYTES: usize = 8 << 20;

#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken {
    /// Index of the jwtRule that verified it.
    pub rule: usize,
    pub identity: Identity,
    /// Headers to add upstream (claim and payload headers), computed once.
    pub outputs: Vec<(Rc<str>, Rc<str>)>,
    pub exp: Option<u64>,
    pub nbf: Option<u64>,
    pub key_fingerprint: [u8; 32],
}

pub struct TokenCache {
    lru: Option<LruCache<Box<str>, Rc<VerifiedToken>, FixedState>>,
    /// Bytes of token text held.
    bytes: usize,
    max_bytes: usize,
}

impl TokenCache {
    /// `capacity` 0 disables the cache.
    pub fn new(capacity: usize) -> TokenCache {
        TokenCache::with_byte_limit(capacity, MAX_CACHED_TOKEN_BYTES)
    }

    pub fn with_byte_limit(capacity: usize, max_bytes: usize) -> TokenCache {
        TokenCache {
            lru: NonZeroUsize::new(capacity)
                .map(|c| LruCache::with_hasher(c, FixedState::default())),
            bytes: 0,
            max_bytes,
        }
    }

    /// A live entry, or None. Entries at or past their `exp` are dropped here.
    pub fn get(&mut self, token: &str, now_secs: u64) -> Option<Rc<VerifiedToken>> {
        let lru = self.lru.as_mut()?;
        let entry = lru.get(token)?.clone();
        if entry.exp.is_some_and(|exp| now_secs >= exp) {
            if let Some((k, _)) = lru.pop_entry(token) {
                self.bytes -= k.len();
            }
            return None;
        }
        Some(entry)
    }

    pub fn insert(&mut self, token: &str, value: Rc<VerifiedToken>) {
        let Some(lru) = self.lru.as_mut() else { return };
        if let Some(v) = lru.get_mut(token) {
            *v = value;
            return;
        }
        if token.len() > self.max_bytes {
            return;
        }
        while self.bytes + token.len() > self.max_bytes {
            match lru.pop_lru() {
                Some((k, _)) => self.bytes -= k.len(),
                None => break,
            }
        }
        self.bytes += token.len();
        // At the entry bound, `push` hands back the LRU entry it displaced.
        if let Some((k, _)) = lru.push(token.into(), value) {
            self.bytes -= k.len();
        }
    }

    /// Drops every entry of `rule` whose verifying key is no longer published.
    pub fn retain_keys(&mut self, rule: usize, still_published: impl Fn(&[u8; 32]) -> bool) {
        let Some(lru) = self.lru.as_mut() else { return };
        let gone: Vec<Box<str>> = lru
            .iter()
            .filter(|(_, v)| v.rule == rule && !still_published(&v.key_fingerprint))
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            if lru.pop(&k).is_some() {
                self.bytes -= k.len();
            }
        }
    }

    pub fn len(&self) -> usize {
        self.lru.as_ref().map_or(0, LruCache::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of token text held.
    pub fn bytes(&self) -> usize {
        self.bytes
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
        c.insert("t", entry(0, Some(100), 1));
        assert!(c.get("t", 99).is_some());
        assert!(c.get("t", 100).is_none());
        assert!(c.is_empty());
    }

    #[test]
    fn bounded_lru() {
        let mut c = TokenCache::new(2);
        c.insert("a", entry(0, None, 1));
        c.insert("b", entry(0, None, 1));
        assert!(c.get("a", 0).is_some());
        c.insert("c", entry(0, None, 1));
        assert!(c.get("b", 0).is_none(), "least recently used evicted");
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn entries_die_with_their_key() {
        let mut c = TokenCache::new(8);
        c.insert("a", entry(0, None, 1));
        c.insert("b", entry(0, None, 2));
        c.insert("c", entry(1, None, 1));
        c.retain_keys(0, |fp| fp[0] == 2);
        assert!(c.get("a", 0).is_none());
        assert!(c.get("b", 0).is_some());
        assert!(c.get("c", 0).is_some(), "other rule untouched");
    }

    #[test]
    fn bounded_bytes_of_token_text() {
        let mut c = TokenCache::with_byte_limit(100, 10);
        c.insert("aaaa", entry(0, None, 1));
        c.insert("bbbb", entry(0, None, 1));
        assert_eq!(c.bytes(), 8);
        c.insert("cccc", entry(0, None, 1));
        assert!(
            c.get("aaaa", 0).is_none(),
            "oldest evicted to stay within 10 bytes"
        );
        assert_eq!((c.len(), c.bytes()), (2, 8));
        c.insert("cccc", entry(0, None, 2));
        assert_eq!(
            (c.len(), c.bytes()),
            (2, 8),
            "replacing an entry keeps the count"
        );
        c.insert("x".repeat(11).as_str(), entry(0, None, 1));
        assert_eq!(c.len(), 2, "a token over the whole budget is not cached");
        c.retain_keys(0, |fp| fp[0] == 2);
        assert_eq!((c.len(), c.bytes()), (1, 4));
        c.insert("dd", entry(0, Some(5), 1));
        assert!(c.get("dd", 5).is_none());
        assert_eq!(c.bytes(), 4, "expired entries give their bytes back");
    }

    #[test]
    fn keys_compare_whole_tokens() {
        let mut c = TokenCache::new(8);
        let t = "h.p.".to_string() + &"s".repeat(300);
        c.insert(&t, entry(0, None, 1));
        let mut other = t.clone();
        other.pop();
        other.push('t');
        assert!(
            c.get(&other, 0).is_none(),
            "one changed byte is a different token"
        );
        assert!(
            c.get(&t[..t.len() - 1], 0).is_none(),
            "a prefix is a different token"
        );
        assert!(c.get(&t, 0).is_some());
    }

    #[test]
    fn zero_capacity_disables() {
        let mut c = TokenCache::new(0);
        c.insert("a", entry(0, None, 1));
        assert!(c.get("a", 0).is_none());
    }
}
