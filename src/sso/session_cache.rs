//! Opened sessions, per Wasm VM: cookie value → the session inside it, so a browser's requests
//! after the first skip base64 and decryption (XChaCha20-Poly1305 over ~3.5 KB measured tens of
//! µs in V8). Only values that opened with a configured key are ever inserted; a lookup compares
//! the whole value, so a forged cookie can at most miss.
//!
//! The table is keyed by the value's last characters (its authentication tag: unforgeable and
//! unique per sealing), so a lookup hashes a few bytes instead of the ~5 KB value.

use super::session::Session;
use foldhash::fast::FixedState;
use lru::LruCache;
use std::num::NonZeroUsize;
use std::rc::Rc;

/// Sessions remembered per VM.
pub const MAX_SESSIONS: usize = 1024;
/// Cookie text held per VM, on top of the entry bound.
pub const MAX_SESSION_BYTES: usize = 8 << 20;
/// Characters of the value's tail the table is keyed by (the 16-byte tag is the last 22).
const KEY_CHARS: usize = 32;

pub struct SessionCache {
    lru: LruCache<Box<str>, (Box<str>, Rc<Session>), FixedState>,
    bytes: usize,
}

impl Default for SessionCache {
    fn default() -> Self {
        SessionCache {
            lru: LruCache::with_hasher(
                NonZeroUsize::new(MAX_SESSIONS).unwrap_or(NonZeroUsize::MIN),
                FixedState::default(),
            ),
            bytes: 0,
        }
    }
}

fn key(value: &str) -> &str {
    // Sealed values are base64url (ASCII): any byte index is a char boundary.
    value
        .get(value.len().saturating_sub(KEY_CHARS)..)
        .unwrap_or(value)
}

impl SessionCache {
    /// The session sealed in exactly `value`, if it was opened before.
    pub fn get(&mut self, value: &str) -> Option<Rc<Session>> {
        match self.lru.get(key(value)) {
            Some((full, s)) if **full == *value => Some(s.clone()),
            _ => None,
        }
    }

    pub fn insert(&mut self, value: &str, session: Rc<Session>) {
        if value.len() > MAX_SESSION_BYTES {
            return;
        }
        if let Some((k, (full, _))) = self.lru.pop_entry(key(value)) {
            self.bytes -= k.len() + full.len();
        }
        let size = KEY_CHARS + value.len();
        while self.bytes + size > MAX_SESSION_BYTES {
            match self.lru.pop_lru() {
                Some((k, (full, _))) => self.bytes -= k.len() + full.len(),
                None => break,
            }
        }
        let k: Box<str> = key(value).into();
        self.bytes += k.len() + value.len();
        if let Some((k, (full, _))) = self.lru.push(k, (value.into(), session)) {
            self.bytes -= k.len() + full.len();
        }
    }

    /// Forgets the session sealed in `value` (logged out, ended at the provider).
    pub fn remove(&mut self, value: &str) {
        if matches!(self.lru.peek(key(value)), Some((full, _)) if **full == *value) {
            if let Some((k, (full, _))) = self.lru.pop_entry(key(value)) {
                self.bytes -= k.len() + full.len();
            }
        }
    }

    pub fn len(&self) -> usize {
        self.lru.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lru.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(created: u64) -> Rc<Session> {
        Rc::new(Session {
            created,
            access_token: "a".into(),
            access_issued: 0,
            access_exp: 1,
            refresh_token: None,
            refresh_exp: 0,
            id_token: None,
        })
    }

    #[test]
    fn exact_values_only() {
        let mut c = SessionCache::default();
        let v = format!("{}{}", "p".repeat(100), "t".repeat(40));
        c.insert(&v, s(1));
        assert_eq!(c.get(&v).unwrap().created, 1);
        // Same tail, other head: a miss, never the cached session.
        let forged = format!("{}{}", "q".repeat(100), "t".repeat(40));
        assert!(c.get(&forged).is_none());
        assert_eq!(c.bytes(), 32 + 140);
        c.remove(&forged);
        assert_eq!(c.len(), 1, "remove needs the exact value too");
        c.remove(&v);
        assert!(c.is_empty());
        assert_eq!(c.bytes(), 0);
    }

    #[test]
    fn bounded() {
        let mut c = SessionCache::default();
        for i in 0..(MAX_SESSIONS + 10) {
            c.insert(&format!("{i:0>40}"), s(i as u64));
        }
        assert_eq!(c.len(), MAX_SESSIONS);
        assert!(c.get(&format!("{:0>40}", 0)).is_none(), "oldest evicted");
        let big = "x".repeat(MAX_SESSION_BYTES / 2);
        c.insert(&format!("{big}1"), s(1));
        c.insert(&format!("{big}2"), s(2));
        assert!(c.bytes() <= MAX_SESSION_BYTES);
    }
}
