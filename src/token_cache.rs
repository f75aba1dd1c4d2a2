//! Verified-token cache, per Wasm VM: token → what verification produced. Only valid tokens are
//! stored; entries die at the token's `exp`, when the key that verified them leaves the JWKS, or
//! when the LRU bounds (entries, and bytes of token text) evict them. A hit skips parsing and the
//! signature check, never the time checks or the policies.
//!
//! An entry holds the token itself, compared in full, as in Envoy's `jwt_cache`: a SHA-256 key was
//! measured at ~5.6 µs per request in V8 (a third of meshgate's same-token overhead). The table
//! is keyed by a 64-bit hash of the token's end (foldhash, fixed seed), which only spreads entries: a hit
//! still needs the whole token to be equal, so a collision costs a miss (and the verified token
//! then takes the slot), never a wrong identity; only verified tokens are ever inserted.

use crate::identity::Identity;
use foldhash::fast::FixedState;
use lru::LruCache;
use std::hash::BuildHasher;
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

struct Entry {
    token: Box<str>,
    verified: Rc<VerifiedToken>,
}

pub struct TokenCache {
    /// By [`token_hash`].
    lru: Option<LruCache<u64, Entry, FixedState>>,
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
        self.get_at(token_hash(token), token, now_secs)
    }

    pub fn insert(&mut self, token: &str, value: Rc<VerifiedToken>) {
        self.insert_at(token_hash(token), token, value);
    }

    fn get_at(&mut self, key: u64, token: &str, now_secs: u64) -> Option<Rc<VerifiedToken>> {
        let lru = self.lru.as_mut()?;
        let entry = lru.get(&key)?;
        if !same_token(entry.token.as_bytes(), token.as_bytes()) {
            return None;
        }
        let verified = entry.verified.clone();
        if verified.exp.is_some_and(|exp| now_secs >= exp) {
            if let Some(gone) = lru.pop(&key) {
                self.bytes -= gone.token.len();
            }
            return None;
        }
        Some(verified)
    }

    fn insert_at(&mut self, key: u64, token: &str, value: Rc<VerifiedToken>) {
        let Some(lru) = self.lru.as_mut() else { return };
        if let Some(e) = lru.get_mut(&key) {
            if same_token(e.token.as_bytes(), token.as_bytes()) {
                e.verified = value;
                return;
            }
            // Another token with the same hash: the newer one takes the slot.
            if let Some(gone) = lru.pop(&key) {
                self.bytes -= gone.token.len();
            }
        }
        if token.len() > self.max_bytes {
            return;
        }
        while self.bytes + token.len() > self.max_bytes {
            match lru.pop_lru() {
                Some((_, gone)) => self.bytes -= gone.token.len(),
                None => break,
            }
        }
        self.bytes += token.len();
        let entry = Entry {
            token: token.into(),
            verified: value,
        };
        // At the entry bound, `push` hands back the LRU entry it displaced.
        if let Some((_, gone)) = lru.push(key, entry) {
            self.bytes -= gone.token.len();
        }
    }

    /// Drops every entry of `rule` whose verifying key is no longer published.
    pub fn retain_keys(&mut self, rule: usize, still_published: impl Fn(&[u8; 32]) -> bool) {
        let Some(lru) = self.lru.as_mut() else { return };
        let gone: Vec<u64> = lru
            .iter()
            .filter(|(_, e)| {
                e.verified.rule == rule && !still_published(&e.verified.key_fingerprint)
            })
            .map(|(k, _)| *k)
            .collect();
        for k in gone {
            if let Some(e) = lru.pop(&k) {
                self.bytes -= e.token.len();
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

/// Bytes of a token's end that the table hash reads.
const HASHED_TAIL_BYTES: usize = 32;

/// The table hash reads the token's length and its last 32 bytes: a JWT ends with its signature,
/// which differs between any two tokens the IdP signed, so a few bytes of it spread the entries as
/// well as the whole token does (hashing all of a 1.4 KB token was 5 % of a cache hit in V8).
/// Tokens made to share a tail only share a slot; equality still compares whole tokens.
fn token_hash(token: &str) -> u64 {
    let bytes = token.as_bytes();
    let tail = &bytes[bytes.len().saturating_sub(HASHED_TAIL_BYTES)..];
    FixedState::default().hash_one((bytes.len(), tail))
}

/// Whole-token equality, 8 bytes a step. `==` on bytes is wasm32 libc's `memcmp`, one byte a
/// step: for a 1.4 KB token that was the largest single cost of a cache hit in V8 (~12,000 of
/// ~50,000 instructions above the do-nothing module, measured with callgrind). It also reads
/// every byte whatever the first difference, as comparisons of secrets should.
fn same_token(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (a_words, a_tail) = a.as_chunks::<8>();
    let (b_words, b_tail) = b.as_chunks::<8>();
    let mut diff = 0u64;
    for (x, y) in a_words.iter().zip(b_words) {
        diff |= u64::from_ne_bytes(*x) ^ u64::from_ne_bytes(*y);
    }
    for (x, y) in a_tail.iter().zip(b_tail) {
        diff |= u64::from(x ^ y);
    }
    diff == 0
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
                memo: Default::default(),
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
    fn a_hash_collision_is_a_miss_and_the_newer_token_takes_the_slot() {
        let mut c = TokenCache::new(8);
        c.insert_at(7, "first", entry(0, None, 1));
        assert!(
            c.get_at(7, "other", 0).is_none(),
            "same hash, other token: a miss"
        );
        assert_eq!(
            c.get_at(7, "first", 0).map(|v| v.key_fingerprint[0]),
            Some(1)
        );
        c.insert_at(7, "second!", entry(0, None, 2));
        assert!(c.get_at(7, "first", 0).is_none());
        assert_eq!(
            c.get_at(7, "second!", 0).map(|v| v.key_fingerprint[0]),
            Some(2)
        );
        assert_eq!(
            (c.len(), c.bytes()),
            (1, 7),
            "the first token's bytes were given back"
        );
    }

    #[test]
    fn tokens_sharing_their_tail_are_still_different_tokens() {
        let mut c = TokenCache::new(8);
        let sig = "s".repeat(HASHED_TAIL_BYTES);
        let (a, b) = (format!("aaaa.{sig}"), format!("bbbb.{sig}"));
        assert_eq!(
            token_hash(&a),
            token_hash(&b),
            "same length and tail: same slot"
        );
        c.insert(&a, entry(0, None, 1));
        assert!(c.get(&b, 0).is_none());
        assert_ne!(token_hash(&a), token_hash(&format!("aaaa.{sig}x")));
        assert_ne!(
            token_hash("ab"),
            token_hash("b"),
            "the length is hashed too"
        );
    }

    #[test]
    fn same_token_compares_every_byte() {
        let t: Vec<u8> = (0..=255u8).cycle().take(1403).collect();
        assert!(same_token(&t, &t.clone()));
        for i in [0, 7, 8, 700, 1399, 1400, 1402] {
            let mut other = t.clone();
            other[i] ^= 0x20;
            assert!(!same_token(&t, &other), "byte {i} differs");
        }
        assert!(!same_token(&t, &t[..1402]));
        assert!(same_token(b"", b""));
    }

    #[test]
    fn zero_capacity_disables() {
        let mut c = TokenCache::new(0);
        c.insert("a", entry(0, None, 1));
        assert!(c.get("a", 0).is_none());
    }
}
