//! The session and pending-login cookies: a versioned, authenticated-encryption format
//! (XChaCha20-Poly1305, RustCrypto), the binary payloads inside it, and the cookie plumbing
//! (reading chunks from the request, `Set-Cookie` values, stripping our cookies before the
//! request goes upstream).
//!
//! Cookie value: base64url(no padding) of `version(1) ‖ nonce(24) ‖ ciphertext ‖ tag(16)`. The
//! additional data binds the version and what the value is for (the session under this cookie
//! name, or the pending login of one `state`), so a value cannot be moved from one role to
//! another. Nonces are random (192 bits: no collision concern for the life of a key).

use super::random::{self, Random};
use crate::request::RequestAttrs;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use std::fmt;
use std::rc::Rc;

pub const FORMAT_VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Every `Set-Cookie` value we emit (name, value and attributes) stays under this many bytes,
/// so each cookie is below the 4,096-byte limit browsers apply.
pub const MAX_SET_COOKIE_BYTES: usize = 4000;
/// A session larger than this many chunks is refused (about 30 KB of cookies).
pub const MAX_CHUNKS: usize = 8;
/// Cookie values longer than this are not decoded at all.
const MAX_SEALED_CHARS: usize = MAX_CHUNKS * MAX_SET_COOKIE_BYTES;

/// The cookie keys: the first seals, every one opens (rotation).
#[derive(Clone)]
pub struct CookieKeys {
    ciphers: Vec<XChaCha20Poly1305>,
}

impl fmt::Debug for CookieKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CookieKeys({} keys)", self.ciphers.len())
    }
}

impl CookieKeys {
    /// None when `keys` is empty.
    pub fn new(keys: &[[u8; 32]]) -> Option<CookieKeys> {
        if keys.is_empty() {
            return None;
        }
        Some(CookieKeys {
            ciphers: keys
                .iter()
                .map(|k| XChaCha20Poly1305::new(k.into()))
                .collect(),
        })
    }

    /// Encrypts `plaintext` for `purpose`; None when there is no randomness for the nonce.
    pub fn seal(&self, purpose: &[u8], plaintext: &[u8], rng: &mut dyn Random) -> Option<String> {
        let nonce: [u8; NONCE_LEN] = random::bytes(rng)?;
        let cipher = self.ciphers.first()?;
        let mut buf = Vec::with_capacity(1 + NONCE_LEN + plaintext.len() + TAG_LEN);
        buf.push(FORMAT_VERSION);
        buf.extend_from_slice(&nonce);
        let mut body = plaintext.to_vec();
        cipher
            .encrypt_in_place(&XNonce::from(nonce), &aad(purpose), &mut body)
            .ok()?;
        buf.extend_from_slice(&body);
        Some(URL_SAFE_NO_PAD.encode(buf))
    }

    /// Decrypts a value sealed for `purpose` with any of the keys; None for anything else
    /// (other version, tampered, foreign key, another purpose, not base64).
    pub fn open(&self, purpose: &[u8], value: &str) -> Option<Vec<u8>> {
        if value.len() > MAX_SEALED_CHARS {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(value).ok()?;
        if raw.len() < 1 + NONCE_LEN + TAG_LEN || raw[0] != FORMAT_VERSION {
            return None;
        }
        let nonce: [u8; NONCE_LEN] = raw[1..1 + NONCE_LEN].try_into().ok()?;
        let nonce = XNonce::from(nonce);
        let aad = aad(purpose);
        let body = &raw[1 + NONCE_LEN..];
        for cipher in &self.ciphers {
            let mut buf = body.to_vec();
            if cipher.decrypt_in_place(&nonce, &aad, &mut buf).is_ok() {
                return Some(buf);
            }
        }
        None
    }
}

fn aad(purpose: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(16 + purpose.len());
    a.extend_from_slice(b"meshgate\0");
    a.push(FORMAT_VERSION);
    a.extend_from_slice(purpose);
    a
}

/// What the session cookie's additional data is bound to.
pub fn session_purpose(cookie_name: &str) -> Vec<u8> {
    [b"session\0".as_slice(), cookie_name.as_bytes()].concat()
}

/// What a pending-login cookie's additional data is bound to: its `state`.
pub fn login_purpose(state: &str) -> Vec<u8> {
    [b"login\0".as_slice(), state.as_bytes()].concat()
}

// ---------------------------------------------------------------------------------------------
// Payloads.

/// A logged-in browser: the tokens the provider issued and when they expire (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// When the login happened: the session ends `sessionLifetime` after it, refreshes or not.
    pub created: u64,
    pub access_token: Rc<str>,
    /// When the access token was received: a refresh comes at most half its lifetime early.
    pub access_issued: u64,
    pub access_exp: u64,
    pub refresh_token: Option<String>,
    /// 0: the provider gave no expiry (the refresh token lives as long as the session).
    pub refresh_exp: u64,
    /// For `id_token_hint` at logout.
    pub id_token: Option<String>,
}

/// A login in progress, from the redirect to the provider until the callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingLogin {
    pub issued: u64,
    pub state: String,
    pub code_verifier: String,
    pub nonce: String,
    /// Path (and query) to return to: always a path on this host.
    pub return_path: String,
}

const SESSION_KIND: u8 = b'S';
const LOGIN_KIND: u8 = b'L';

impl Session {
    pub fn encode(&self) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(32 + self.access_token.len() + 2048);
        out.push(SESSION_KIND);
        out.extend_from_slice(&self.created.to_be_bytes());
        out.extend_from_slice(&self.access_issued.to_be_bytes());
        out.extend_from_slice(&self.access_exp.to_be_bytes());
        out.extend_from_slice(&self.refresh_exp.to_be_bytes());
        put16(&mut out, self.access_token.as_bytes())?;
        put16(
            &mut out,
            self.refresh_token.as_deref().unwrap_or("").as_bytes(),
        )?;
        put16(&mut out, self.id_token.as_deref().unwrap_or("").as_bytes())?;
        Some(out)
    }

    pub fn decode(b: &[u8]) -> Option<Session> {
        let mut r = Reader(b);
        if r.u8()? != SESSION_KIND {
            return None;
        }
        let created = r.u64()?;
        let access_issued = r.u64()?;
        let access_exp = r.u64()?;
        let refresh_exp = r.u64()?;
        let access = r.str16()?;
        let refresh = r.str16()?;
        let id = r.str16()?;
        if !r.0.is_empty() || access.is_empty() {
            return None;
        }
        Some(Session {
            created,
            access_token: access.into(),
            access_issued,
            access_exp,
            refresh_token: (!refresh.is_empty()).then(|| refresh.to_string()),
            refresh_exp,
            id_token: (!id.is_empty()).then(|| id.to_string()),
        })
    }
}

impl PendingLogin {
    pub fn encode(&self) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(160 + self.return_path.len());
        out.push(LOGIN_KIND);
        out.extend_from_slice(&self.issued.to_be_bytes());
        put8(&mut out, self.state.as_bytes())?;
        put8(&mut out, self.code_verifier.as_bytes())?;
        put8(&mut out, self.nonce.as_bytes())?;
        put16(&mut out, self.return_path.as_bytes())?;
        Some(out)
    }

    pub fn decode(b: &[u8]) -> Option<PendingLogin> {
        let mut r = Reader(b);
        if r.u8()? != LOGIN_KIND {
            return None;
        }
        let issued = r.u64()?;
        let state = r.str8()?.to_string();
        let code_verifier = r.str8()?.to_string();
        let nonce = r.str8()?.to_string();
        let return_path = r.str16()?.to_string();
        if !r.0.is_empty() {
            return None;
        }
        Some(PendingLogin {
            issued,
            state,
            code_verifier,
            nonce,
            return_path,
        })
    }
}

fn put8(out: &mut Vec<u8>, b: &[u8]) -> Option<()> {
    out.push(u8::try_from(b.len()).ok()?);
    out.extend_from_slice(b);
    Some(())
}

fn put16(out: &mut Vec<u8>, b: &[u8]) -> Option<()> {
    out.extend_from_slice(&u16::try_from(b.len()).ok()?.to_be_bytes());
    out.extend_from_slice(b);
    Some(())
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn str8(&mut self) -> Option<&'a str> {
        let n = self.u8()? as usize;
        std::str::from_utf8(self.take(n)?).ok()
    }
    fn str16(&mut self) -> Option<&'a str> {
        let n = u16::from_be_bytes(self.take(2)?.try_into().ok()?) as usize;
        std::str::from_utf8(self.take(n)?).ok()
    }
}

// ---------------------------------------------------------------------------------------------
// Cookies on the request.

/// Every cookie of the request (all `cookie` headers), as (name, value).
pub fn request_cookies(req: &RequestAttrs) -> impl Iterator<Item = (&str, &str)> {
    req.headers
        .iter()
        .filter(|(n, _)| n == "cookie")
        .flat_map(|(_, v)| v.split(';'))
        .filter_map(|c| {
            let (n, v) = c.split_once('=')?;
            Some((n.trim(), v.trim()))
        })
}

/// Whether any `cookie` header mentions `name` at all (a cheap test before parsing).
pub fn mentions(req: &RequestAttrs, name: &str) -> bool {
    req.headers
        .iter()
        .any(|(n, v)| n == "cookie" && v.contains(name))
}

/// `<name>.<n>` → n.
fn chunk_index(cookie: &str, name: &str) -> Option<usize> {
    let digits = cookie.strip_prefix(name)?.strip_prefix('.')?;
    if digits.is_empty() || digits.len() > 2 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The pending-login cookie of `state` (the first 16 characters of a random 43-character state
/// keep concurrent logins, e.g. in two tabs, apart).
pub fn login_cookie_name(name: &str, state: &str) -> String {
    let tag: String = state.chars().take(16).collect();
    format!("{name}_login_{tag}")
}

fn is_login_cookie(cookie: &str, name: &str) -> bool {
    cookie
        .strip_prefix(name)
        .is_some_and(|r| r.starts_with("_login_"))
}

/// The session cookie value as sent: `<name>` alone, or the chunks `<name>.0`, `<name>.1`, ...
/// joined (up to the first missing one). Also the names of every session cookie present, so a
/// new `Set-Cookie` set can clear the ones it does not replace.
pub struct SessionCookies {
    pub value: Option<String>,
    pub present: Vec<String>,
}

pub fn read_session_cookies(req: &RequestAttrs, name: &str) -> SessionCookies {
    let mut whole: Option<&str> = None;
    let mut chunks: [Option<&str>; MAX_CHUNKS] = [None; MAX_CHUNKS];
    let mut present = Vec::new();
    for (n, v) in request_cookies(req) {
        if n == name {
            whole.get_or_insert(v);
            present.push(n.to_string());
        } else if let Some(i) = chunk_index(n, name) {
            if let Some(slot) = chunks.get_mut(i) {
                slot.get_or_insert(v);
            }
            present.push(n.to_string());
        }
    }
    present.dedup();
    let value = match whole {
        Some(v) => Some(v.to_string()),
        None => {
            let parts: Vec<&str> = chunks.iter().map_while(|c| *c).collect();
            (!parts.is_empty()).then(|| parts.concat())
        }
    };
    SessionCookies { value, present }
}

/// The value of the pending-login cookie for `state`, if the request carries it.
pub fn read_login_cookie<'a>(req: &'a RequestAttrs, name: &str, state: &str) -> Option<&'a str> {
    let want = login_cookie_name(name, state);
    request_cookies(req)
        .find(|(n, _)| *n == want)
        .map(|(_, v)| v)
}

/// The request's cookies without this filter's own (session chunks, pending logins), for the
/// upstream: None when it carried none of ours (leave the header alone), Some("") when none
/// are left (remove the header).
pub fn strip_own_cookies(req: &RequestAttrs, name: &str) -> Option<String> {
    if !mentions(req, name) {
        return None;
    }
    let mut kept: Vec<&str> = Vec::new();
    let mut removed = false;
    for (_, header) in req.headers.iter().filter(|(n, _)| n == "cookie") {
        for c in header.split(';') {
            let c = c.trim();
            if c.is_empty() {
                continue;
            }
            let n = c.split_once('=').map_or(c, |(n, _)| n.trim());
            if n == name || chunk_index(n, name).is_some() || is_login_cookie(n, name) {
                removed = true;
            } else {
                kept.push(c);
            }
        }
    }
    removed.then(|| kept.join("; "))
}

// ---------------------------------------------------------------------------------------------
// Set-Cookie.

fn attrs(path: &str, max_age: u64, secure: bool) -> String {
    format!(
        "; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{}",
        if secure { "; Secure" } else { "" }
    )
}

/// `Set-Cookie` value that sets a cookie.
pub fn set_cookie(name: &str, value: &str, path: &str, max_age: u64, secure: bool) -> String {
    format!("{name}={value}{}", attrs(path, max_age, secure))
}

/// `Set-Cookie` value that deletes a cookie.
pub fn clear_cookie(name: &str, path: &str, secure: bool) -> String {
    format!("{name}={}", attrs(path, 0, secure))
}

/// `Set-Cookie` values carrying a sealed session: one cookie when it fits, else chunks
/// `<name>.0..n`; every other session cookie in `present` is cleared. None when the session
/// needs more than [`MAX_CHUNKS`] cookies.
pub fn session_set_cookies(
    name: &str,
    sealed: &str,
    max_age: u64,
    secure: bool,
    present: &[String],
) -> Option<Vec<String>> {
    let tail = attrs("/", max_age, secure).len();
    let mut out = Vec::new();
    let mut names = Vec::new();
    if name.len() + 1 + sealed.len() + tail <= MAX_SET_COOKIE_BYTES {
        out.push(set_cookie(name, sealed, "/", max_age, secure));
        names.push(name.to_string());
    } else {
        // `<name>.<2 digits>=`
        let room = MAX_SET_COOKIE_BYTES.checked_sub(name.len() + 4 + tail)?;
        let n = sealed.len().div_ceil(room.max(1));
        if n > MAX_CHUNKS || room == 0 {
            return None;
        }
        // base64url is ASCII: splitting at any byte index is a char boundary.
        for (i, part) in sealed.as_bytes().chunks(room).enumerate() {
            let chunk_name = format!("{name}.{i}");
            out.push(set_cookie(
                &chunk_name,
                std::str::from_utf8(part).ok()?,
                "/",
                max_age,
                secure,
            ));
            names.push(chunk_name);
        }
    }
    for p in present {
        if !names.contains(p) {
            out.push(clear_cookie(p, "/", secure));
        }
    }
    Some(out)
}

/// `Set-Cookie` values that clear every session cookie in `present`, and the unchunked name
/// when it is not among them (a logout always ends with no session cookie at all).
pub fn clear_session_cookies(name: &str, present: &[String], secure: bool) -> Vec<String> {
    let mut out: Vec<String> = present
        .iter()
        .map(|p| clear_cookie(p, "/", secure))
        .collect();
    if !present.iter().any(|p| p == name) {
        out.push(clear_cookie(name, "/", secure));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counter(u8);
    impl Random for Counter {
        fn fill(&mut self, buf: &mut [u8]) -> bool {
            for b in buf {
                self.0 = self.0.wrapping_add(1);
                *b = self.0;
            }
            true
        }
    }

    fn keys(k: u8) -> CookieKeys {
        CookieKeys::new(&[[k; 32]]).unwrap()
    }

    fn req(cookies: &[&str]) -> RequestAttrs {
        RequestAttrs {
            headers: cookies
                .iter()
                .map(|c| ("cookie".to_string(), c.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    fn session() -> Session {
        Session {
            created: 1,
            access_token: "a.b.c".into(),
            access_issued: 1,
            access_exp: 2,
            refresh_token: Some("r".into()),
            refresh_exp: 3,
            id_token: None,
        }
    }

    #[test]
    fn seal_open_round_trip_and_binding() {
        let k = keys(1);
        let mut rng = Counter(0);
        let v = k.seal(b"session\0s", b"hello", &mut rng).unwrap();
        assert_eq!(k.open(b"session\0s", &v).unwrap(), b"hello");
        assert_eq!(k.open(b"session\0t", &v), None, "other purpose");
        assert_eq!(keys(2).open(b"session\0s", &v), None, "foreign key");
        // Every single-character change is rejected.
        for i in 0..v.len() {
            let mut t = v.clone().into_bytes();
            t[i] = if t[i] == b'A' { b'B' } else { b'A' };
            let t = String::from_utf8(t).unwrap();
            assert_eq!(k.open(b"session\0s", &t), None, "tampered at {i}");
        }
        assert_eq!(k.open(b"session\0s", ""), None);
        assert_eq!(k.open(b"session\0s", "!!!"), None);
        // Version byte other than 1.
        let mut raw = URL_SAFE_NO_PAD.decode(&v).unwrap();
        raw[0] = 2;
        assert_eq!(k.open(b"session\0s", &URL_SAFE_NO_PAD.encode(raw)), None);
    }

    #[test]
    fn rotation_first_seals_all_open() {
        let old = keys(1);
        let both = CookieKeys::new(&[[2; 32], [1; 32]]).unwrap();
        let mut rng = Counter(0);
        let v_old = old.seal(b"p", b"x", &mut rng).unwrap();
        assert_eq!(both.open(b"p", &v_old).unwrap(), b"x");
        let v_new = both.seal(b"p", b"y", &mut rng).unwrap();
        assert_eq!(keys(2).open(b"p", &v_new).unwrap(), b"y");
        assert_eq!(old.open(b"p", &v_new), None);
    }

    #[test]
    fn no_randomness_no_cookie() {
        struct Dead;
        impl Random for Dead {
            fn fill(&mut self, _: &mut [u8]) -> bool {
                false
            }
        }
        assert_eq!(keys(1).seal(b"p", b"x", &mut Dead), None);
    }

    #[test]
    fn payloads_round_trip_and_reject_garbage() {
        let s = session();
        assert_eq!(Session::decode(&s.encode().unwrap()).unwrap(), s);
        let l = PendingLogin {
            issued: 9,
            state: "st".into(),
            code_verifier: "v".into(),
            nonce: "n".into(),
            return_path: "/a?b=c".into(),
        };
        assert_eq!(PendingLogin::decode(&l.encode().unwrap()).unwrap(), l);
        assert_eq!(Session::decode(&l.encode().unwrap()), None, "kind differs");
        let mut long = s.encode().unwrap();
        long.push(0);
        assert_eq!(Session::decode(&long), None, "trailing bytes");
        let e = s.encode().unwrap();
        for n in 0..e.len() {
            assert_eq!(Session::decode(&e[..n]), None, "truncated at {n}");
        }
    }

    #[test]
    fn chunks_round_trip_and_stay_small() {
        let big = "x".repeat(9000);
        let cookies = session_set_cookies("s", &big, 60, true, &["s".into()]).unwrap();
        // Three chunks and the old unchunked cookie cleared.
        assert_eq!(cookies.len(), 4);
        assert!(cookies.iter().all(|c| c.len() <= MAX_SET_COOKIE_BYTES));
        assert!(cookies[3].starts_with("s=; Path=/; Max-Age=0"));
        assert!(cookies[0].ends_with("; Path=/; Max-Age=60; HttpOnly; SameSite=Lax; Secure"));
        let sent: Vec<String> = cookies[..3]
            .iter()
            .map(|c| c.split(';').next().unwrap().to_string())
            .collect();
        let r = req(&[&sent.join("; ")]);
        let got = read_session_cookies(&r, "s");
        assert_eq!(got.value.unwrap(), big);
        assert_eq!(got.present, vec!["s.0", "s.1", "s.2"]);
        // Smaller again: one cookie, the chunks cleared.
        let small = session_set_cookies("s", "abc", 60, false, &got.present).unwrap();
        assert_eq!(
            small[0],
            "s=abc; Path=/; Max-Age=60; HttpOnly; SameSite=Lax"
        );
        assert_eq!(small.len(), 4);
        assert!(session_set_cookies("s", &"x".repeat(40_000), 60, true, &[]).is_none());
    }

    #[test]
    fn chunks_need_a_contiguous_start() {
        let r = req(&["s.1=b; s.0=a", "s.3=d"]);
        assert_eq!(read_session_cookies(&r, "s").value.unwrap(), "ab");
        let r = req(&["s.1=b"]);
        assert_eq!(read_session_cookies(&r, "s").value, None);
        let r = req(&["other=1; s.x=2; s.000=3"]);
        assert_eq!(read_session_cookies(&r, "s").value, None);
    }

    #[test]
    fn own_cookies_never_go_upstream() {
        let r = req(&["a=1; s=xyz; s.0=p", "s_login_abc=q; b=2; sx=3"]);
        assert_eq!(strip_own_cookies(&r, "s").unwrap(), "a=1; b=2; sx=3");
        let r = req(&["s=1"]);
        assert_eq!(strip_own_cookies(&r, "s").unwrap(), "");
        let r = req(&["a=1"]);
        assert_eq!(strip_own_cookies(&r, "s"), None);
    }

    #[test]
    fn login_cookie_by_state() {
        let state = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq";
        assert_eq!(login_cookie_name("s", state), "s_login_ABCDEFGHIJKLMNOP");
        let r = req(&["s_login_ABCDEFGHIJKLMNOP=v"]);
        assert_eq!(read_login_cookie(&r, "s", state), Some("v"));
        assert_eq!(read_login_cookie(&r, "s", "other"), None);
    }
}
