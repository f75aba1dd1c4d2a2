//! Single sign-on cookies (`meshgate::sso::session`): the session cookie (one cookie or chunks
//! `<name>.0..7`) and the pending-login cookie, as a browser sends them back. The first byte picks
//! the mode, the rest is its input.
//!
//! - raw (0): the bytes are `Cookie` header values. Reading the session (chunks reassembled) and
//!   the login cookie never panics; a value that opens under the fixed key is one of the seeds'
//!   (the fuzzer cannot forge the AEAD), and its payload decodes and re-encodes to the same bytes;
//!   stripping our cookies leaves none of them and keeps every other cookie.
//! - seal (1, 2): a session (1) or pending login (2) built from the input is sealed, set with
//!   `Set-Cookie` (chunked when large) into a cookie jar that may hold an older session's chunks
//!   and other cookies, sent back in a fuzzed order: it reads back as the exact sealed value,
//!   opens to the same payload, also after a key rotation; the same value with any byte changed,
//!   cut, under another purpose (cookie name, login state) or another key never opens.
//!
//! Payload codecs: whatever `Session::decode` / `PendingLogin::decode` accept re-encodes to the
//! same bytes (one encoding per value).
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use meshgate::request::RequestAttrs;
use meshgate::sso::random::Random;
use meshgate::sso::session::{
    clear_session_cookies, login_cookie_name, login_purpose, read_login_cookie,
    read_session_cookies, session_purpose, session_set_cookies, strip_own_cookies, CookieKeys,
    PendingLogin, Session,
};
use std::collections::BTreeMap;

const NAME: &str = "meshgate_session";
/// The key make_corpus.py seals the raw-mode seeds with.
const KEY: [u8; 32] = *b"meshgate-fuzz-cookie-key-0000001";
const NEXT_KEY: [u8; 32] = *b"meshgate-fuzz-cookie-key-0000002";
const FOREIGN_KEY: [u8; 32] = *b"meshgate-fuzz-cookie-key-9999999";
/// The `state` of the seeds' pending login (43 characters, as the flow makes them).
const STATE: &str = "c3RhdGUtb2YtdGhlLWZ1enotc2VlZC1sb2dpbi0wMDA";

/// Deterministic nonces from the input (the real source is the host's).
struct Seeded(u64);
impl Random for Seeded {
    fn fill(&mut self, buf: &mut [u8]) -> bool {
        for b in buf.iter_mut() {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            *b = self.0 as u8;
        }
        true
    }
}

fn keys(k: &[[u8; 32]]) -> CookieKeys {
    let Some(k) = CookieKeys::new(k) else {
        panic!("keys refused");
    };
    k
}

fn request(cookie_headers: Vec<String>) -> RequestAttrs {
    RequestAttrs {
        method: "GET".into(),
        path: "/".into(),
        host: "app.example".into(),
        scheme: "https".into(),
        headers: cookie_headers
            .into_iter()
            .map(|v| ("cookie".to_string(), v))
            .collect(),
        ..RequestAttrs::default()
    }
}

/// The cookie names this filter owns: the session, its chunks `<name>.<1-2 digits>`, pending
/// logins `<name>_login_*` (anything else is another application's and must reach it).
fn is_ours(cookie: &str) -> bool {
    let Some(rest) = cookie.strip_prefix(NAME) else {
        return false;
    };
    let chunk = rest
        .strip_prefix('.')
        .is_some_and(|d| (1..=2).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()));
    rest.is_empty() || chunk || rest.starts_with("_login_")
}

fn check_codecs(payload: &[u8]) {
    if let Some(s) = Session::decode(payload) {
        assert_eq!(s.encode().as_deref(), Some(payload), "{s:?}");
    }
    if let Some(p) = PendingLogin::decode(payload) {
        assert_eq!(p.encode().as_deref(), Some(payload), "{p:?}");
    }
}

fn raw(data: &[u8]) {
    check_codecs(data);
    let text = String::from_utf8_lossy(data);
    let headers: Vec<String> = text.split('\n').map(str::to_string).collect();
    let req = request(headers.clone());
    let k = keys(&[KEY]);
    let read = read_session_cookies(&req, NAME);
    if let Some(v) = &read.value {
        if let Some(p) = k.open(&session_purpose(NAME), v) {
            // Only the seeds hold values sealed under KEY: what opens is a whole session.
            let Some(s) = Session::decode(&p) else {
                panic!("a sealed value that is not a session opened: {p:?}");
            };
            assert_eq!(s.encode().as_deref(), Some(p.as_slice()));
        }
        assert!(keys(&[FOREIGN_KEY])
            .open(&session_purpose(NAME), v)
            .is_none());
    }
    for p in &read.present {
        assert!(is_ours(p), "{p:?}");
    }
    if let Some(v) = read_login_cookie(&req, NAME, STATE) {
        if let Some(p) = k.open(&login_purpose(STATE), v) {
            let Some(l) = PendingLogin::decode(&p) else {
                panic!("a sealed value that is not a pending login opened: {p:?}");
            };
            assert_eq!(l.state, STATE);
        }
    }
    match strip_own_cookies(&req, NAME) {
        None => {}
        Some(kept) => {
            for c in kept.split(';') {
                let n = c.split_once('=').map_or(c, |(n, _)| n).trim();
                assert!(!is_ours(n), "{n:?} left in {kept:?}");
            }
            // Every cookie that is not ours is still there, in order.
            let others: Vec<&str> = headers
                .iter()
                .flat_map(|h| h.split(';'))
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .filter(|c| !is_ours(c.split_once('=').map_or(*c, |(n, _)| n.trim())))
                .collect();
            assert_eq!(kept, others.join("; "));
        }
    }
}

/// A cookie jar as a browser keeps it: `Set-Cookie` sets or (Max-Age=0) deletes by name.
fn apply(jar: &mut BTreeMap<String, String>, set_cookies: &[String]) {
    for sc in set_cookies {
        let Some((pair, attrs)) = sc.split_once(';') else {
            panic!("Set-Cookie without attributes: {sc:?}");
        };
        let Some((n, v)) = pair.split_once('=') else {
            panic!("{sc:?}");
        };
        assert!(
            attrs.contains("HttpOnly") && attrs.contains("SameSite=Lax"),
            "{sc:?}"
        );
        assert!(sc.len() <= 4000, "a Set-Cookie of {} bytes", sc.len());
        if attrs.contains("Max-Age=0;") || attrs.ends_with("Max-Age=0") {
            jar.remove(n);
        } else {
            jar.insert(n.to_string(), v.to_string());
        }
    }
}

/// The jar sent back in an order the input picks, over one or more `cookie` headers.
fn send(jar: &BTreeMap<String, String>, u: &mut Unstructured<'_>) -> RequestAttrs {
    let mut pairs: Vec<String> = jar.iter().map(|(n, v)| format!("{n}={v}")).collect();
    for i in (1..pairs.len()).rev() {
        let j = u.int_in_range(0..=i).unwrap_or(0);
        pairs.swap(i, j);
    }
    let mut headers = vec![String::new()];
    for p in pairs {
        if u.ratio(1, 4).unwrap_or(false) {
            headers.push(String::new());
        }
        let Some(h) = headers.last_mut() else {
            continue;
        };
        if !h.is_empty() {
            h.push_str("; ");
        }
        h.push_str(&p);
    }
    request(headers)
}

/// Cookies of other applications: names and values that are valid cookie text and not ours.
fn other_cookies(u: &mut Unstructured<'_>, jar: &mut BTreeMap<String, String>) {
    let n = u.int_in_range(0..=4).unwrap_or(0);
    for i in 0..n {
        let name: String = String::arbitrary(u)
            .unwrap_or_default()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            .take(40)
            .collect();
        let name = if name.is_empty() {
            format!("c{i}")
        } else {
            name
        };
        let value: String = String::arbitrary(u)
            .unwrap_or_default()
            .chars()
            .filter(|c| c.is_ascii_graphic() && !matches!(c, ';' | ',' | '"' | '\\'))
            .take(200)
            .collect();
        if !is_ours(&name) {
            jar.insert(name, value);
        }
    }
}

/// One byte changed, or the value cut: a different ciphertext must never open.
fn check_tampered(k: &CookieKeys, purpose: &[u8], sealed: &str, u: &mut Unstructured<'_>) {
    let mut bytes = sealed.as_bytes().to_vec();
    let pos = u.choose_index(bytes.len()).unwrap_or(0);
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let b = *u.choose(alphabet).unwrap_or(&b'A');
    if let Some(x) = bytes.get_mut(pos) {
        *x = b;
    }
    let changed = String::from_utf8_lossy(&bytes).into_owned();
    if changed != sealed {
        assert!(
            k.open(purpose, &changed).is_none(),
            "changed at {pos} opened"
        );
    }
    let cut = &sealed[..pos];
    assert!(k.open(purpose, cut).is_none(), "cut at {pos} opened");
    let longer = format!("{sealed}{}", b as char);
    assert!(
        k.open(purpose, &longer).is_none(),
        "with {:?} appended opened",
        b as char
    );
}

fn seal_session(u: &mut Unstructured<'_>, rest: &[u8]) {
    let mut rng = Seeded(u64::arbitrary(u).unwrap_or(0) | 1);
    let present_old = bool::arbitrary(u).unwrap_or(false);
    // The payload: the rest of the input when it is a session, else one built from it.
    let session = Session::decode(rest).unwrap_or_else(|| Session {
        created: u64::arbitrary(u).unwrap_or(0),
        access_token: String::arbitrary(u)
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "t".into())
            .into(),
        access_issued: u64::arbitrary(u).unwrap_or(0),
        access_exp: u64::arbitrary(u).unwrap_or(0),
        refresh_token: Option::<String>::arbitrary(u)
            .unwrap_or_default()
            .filter(|s| !s.is_empty()),
        refresh_exp: u64::arbitrary(u).unwrap_or(0),
        id_token: Option::<String>::arbitrary(u)
            .unwrap_or_default()
            .filter(|s| !s.is_empty()),
    });
    let Some(payload) = session.encode() else {
        return; // a token over 65,535 bytes: refused before sealing
    };
    assert_eq!(Session::decode(&payload).as_ref(), Some(&session));
    let k = keys(&[KEY]);
    let purpose = session_purpose(NAME);
    let Some(sealed) = k.seal(&purpose, &payload, &mut rng) else {
        panic!("seal failed with randomness");
    };
    assert!(sealed
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));

    // The browser's jar: other cookies, maybe an older session of another size.
    let mut jar = BTreeMap::new();
    other_cookies(u, &mut jar);
    if present_old {
        let old_len = u.int_in_range(1..=30_000usize).unwrap_or(1);
        let old = "A".repeat(old_len);
        if let Some(set) = session_set_cookies(NAME, &old, 3600, true, &[]) {
            apply(&mut jar, &set);
        }
    }
    let before = send(&jar, u);
    let present = read_session_cookies(&before, NAME).present;
    let Some(set) = session_set_cookies(NAME, &sealed, 3600, true, &present) else {
        // Only a session over MAX_CHUNKS cookies is refused.
        assert!(sealed.len() > 8 * 3900, "{} chars refused", sealed.len());
        return;
    };
    let others: BTreeMap<String, String> = jar
        .iter()
        .filter(|(n, _)| !is_ours(n))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    apply(&mut jar, &set);
    let after = send(&jar, u);
    let read = read_session_cookies(&after, NAME);
    assert_eq!(read.value.as_deref(), Some(sealed.as_str()), "reassembly");
    assert_eq!(
        k.open(&purpose, &sealed).as_deref(),
        Some(payload.as_slice())
    );
    assert_eq!(
        keys(&[NEXT_KEY, KEY]).open(&purpose, &sealed).as_deref(),
        Some(payload.as_slice()),
        "after a key rotation"
    );
    assert!(keys(&[FOREIGN_KEY]).open(&purpose, &sealed).is_none());
    assert!(k.open(&session_purpose("other"), &sealed).is_none());
    assert!(k.open(&login_purpose(STATE), &sealed).is_none());
    check_tampered(&k, &purpose, &sealed, u);
    // Upstream gets the other cookies only; logout clears every session cookie.
    let stripped = strip_own_cookies(&after, NAME).unwrap_or_default();
    let mut upstream: Vec<&str> = stripped.split("; ").filter(|c| !c.is_empty()).collect();
    upstream.sort_unstable();
    let mut want: Vec<String> = others.iter().map(|(n, v)| format!("{n}={v}")).collect();
    want.sort_unstable();
    assert_eq!(upstream, want);
    apply(&mut jar, &clear_session_cookies(NAME, &read.present, true));
    assert_eq!(jar, others, "logout left a session cookie");
}

fn seal_login(u: &mut Unstructured<'_>, rest: &[u8]) {
    let mut rng = Seeded(u64::arbitrary(u).unwrap_or(0) | 1);
    let login = PendingLogin::decode(rest).unwrap_or_else(|| PendingLogin {
        issued: u64::arbitrary(u).unwrap_or(0),
        state: String::arbitrary(u).unwrap_or_default(),
        code_verifier: String::arbitrary(u).unwrap_or_default(),
        nonce: String::arbitrary(u).unwrap_or_default(),
        return_path: String::arbitrary(u).unwrap_or_default(),
    });
    let Some(payload) = login.encode() else {
        return; // a field over its length prefix: refused before sealing
    };
    assert_eq!(PendingLogin::decode(&payload).as_ref(), Some(&login));
    let k = keys(&[KEY]);
    let state = if login.state.is_empty() {
        STATE
    } else {
        &login.state
    };
    let purpose = login_purpose(state);
    let Some(sealed) = k.seal(&purpose, &payload, &mut rng) else {
        panic!("seal failed with randomness");
    };
    let cookie = login_cookie_name(NAME, state);
    let mut jar = BTreeMap::new();
    other_cookies(u, &mut jar);
    jar.insert(cookie.clone(), sealed.clone());
    let req = send(&jar, u);
    // The cookie's name is made of the state's first 16 characters: a state with cookie
    // separators cannot be read back, and the flow only makes base64url states.
    if state
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        assert_eq!(read_login_cookie(&req, NAME, state), Some(sealed.as_str()));
    }
    assert_eq!(
        k.open(&purpose, &sealed).as_deref(),
        Some(payload.as_slice())
    );
    assert!(keys(&[FOREIGN_KEY]).open(&purpose, &sealed).is_none());
    assert!(k.open(&session_purpose(NAME), &sealed).is_none());
    let other_state = format!("{state}x");
    assert!(k.open(&login_purpose(&other_state), &sealed).is_none());
    check_tampered(&k, &purpose, &sealed, u);
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => raw(rest),
        m => {
            // Control bytes first (fixed length), then the payload.
            let split = rest.len().min(64);
            let (control, payload) = rest.split_at(split);
            let mut u = Unstructured::new(control);
            check_codecs(payload);
            if m == 1 {
                seal_session(&mut u, payload)
            } else {
                seal_login(&mut u, payload)
            }
        }
    }
});
