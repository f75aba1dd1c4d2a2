//! Differential tests of the hand-written ECDSA verifier (src/jwt/ec.rs) against RustCrypto
//! p256/p384/p521 0.13: on many seeded random keys, messages and signatures — valid ones and
//! systematically broken ones — ours must accept exactly what RustCrypto accepts. Also key import
//! (points off the curve) and the r||s → DER conversion sent to Envoy.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshgate::jwt::crypto::ecdsa_raw_to_der;
use meshgate::jwt::ec::{P256PublicKey, P384PublicKey, P521PublicKey};
use meshgate::jwt::Alg;
use p256::elliptic_curve::rand_core::{CryptoRng, Error, RngCore};

/// xorshift64*: deterministic, seeded, good enough to pick test inputs.
struct TestRng(u64);

impl RngCore for TestRng {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        dest.iter_mut().for_each(|b| *b = self.next_u64() as u8);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}
impl CryptoRng for TestRng {}

impl TestRng {
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        self.fill_bytes(&mut v);
        v
    }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// a - b for equal-length big-endian numbers (wrapping).
fn sub_be(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = vec![0; a.len()];
    let mut borrow = 0i16;
    for i in (0..a.len()).rev() {
        let d = i16::from(a[i]) - i16::from(b[i]) - borrow;
        borrow = i16::from(d < 0);
        out[i] = d.rem_euclid(256) as u8;
    }
    out
}

/// a + small, big-endian (wrapping).
fn add_small(a: &[u8], small: u8) -> Vec<u8> {
    let mut out = a.to_vec();
    let mut carry = u16::from(small);
    for b in out.iter_mut().rev() {
        let s = u16::from(*b) + carry;
        *b = s as u8;
        carry = s >> 8;
    }
    out
}

#[derive(Default, Debug)]
struct Counts {
    keys: usize,
    verifications: usize,
    accepted: usize,
    /// Accepted signatures with s > n/2 (both verifiers).
    high_s_accepted: usize,
    key_imports: usize,
    der: usize,
}

macro_rules! differential {
    ($test:ident, $c:ident, $ours:ty, $alg:expr, $bytes:expr, $n_hex:expr, $p_hex:expr, $keys:expr) => {
        #[test]
        fn $test() {
            use $c::ecdsa::signature::{RandomizedSigner, Verifier};
            use $c::ecdsa::{Signature, SigningKey, VerifyingKey};
            const B: usize = $bytes;
            let n = hex($n_hex);
            let p = hex($p_hex);
            let seed = std::env::var("MESHGATE_EC_SEED")
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            let mut rng =
                TestRng(0x9e37_79b9_7f4a_7c15 ^ B as u64 ^ seed.wrapping_mul(0x1000_0000_01b3));
            let mut counts = Counts::default();

            let theirs = |vk: &VerifyingKey, msg: &[u8], sig: &[u8]| {
                Signature::from_slice(sig).is_ok_and(|s| vk.verify(msg, &s).is_ok())
            };
            let import = |x: &[u8], y: &[u8]| {
                let sec1 = [&[4u8][..], x, y].concat();
                let ours = <$ours>::from_coordinates(x, y).ok();
                let theirs = VerifyingKey::from_sec1_bytes(&sec1).ok();
                assert_eq!(
                    ours.is_some(),
                    theirs.is_some(),
                    "key import x={x:02x?} y={y:02x?}"
                );
                ours.zip(theirs)
            };
            let check_der = |sig: &[u8], counts: &mut Counts| {
                let theirs = Signature::from_slice(sig)
                    .ok()
                    .map(|s| s.to_der().as_bytes().to_vec());
                assert_eq!(ecdsa_raw_to_der($alg, sig), theirs, "DER of {sig:02x?}");
                counts.der += 1;
            };

            // Signing keys: small and edge private scalars (Q = G, 2G, -G), then random ones.
            let mut secrets: Vec<Vec<u8>> = vec![
                add_small(&[0; B], 1),
                add_small(&[0; B], 2),
                sub_be(&n, &add_small(&[0; B], 1)),
            ];
            let keys = key_count($keys);
            while secrets.len() < keys {
                let mut d = rng.bytes(B);
                if B == 66 {
                    d[0] &= 1;
                }
                secrets.push(d);
            }
            let mut previous: Option<($ours, VerifyingKey)> = None;
            for d in &secrets {
                let Ok(sk) = SigningKey::from_slice(d) else {
                    continue;
                };
                let point = VerifyingKey::from(&sk).to_encoded_point(false);
                let (x, y) = (point.x().unwrap().to_vec(), point.y().unwrap().to_vec());
                let (ours, vk) = import(&x, &y).expect("a real public key imports");
                counts.keys += 1;
                counts.key_imports += 1;

                // Keys off the curve, or not canonical.
                let mut y_flip = y.clone();
                y_flip[rng.below(B)] ^= 1 << rng.below(8);
                let bad_keys = [
                    (x.clone(), y_flip),
                    (x.clone(), add_small(&y, 1)),
                    (rng.bytes(B), y.clone()),
                    (p.clone(), y.clone()),
                    (x.clone(), sub_be(&p, &y)), // -Q: on the curve, must import
                    (x.clone(), add_be(&y, &p)), // y + p (P-521: not canonical; else wraps)
                    (add_be(&x, &p), y.clone()), // x + p, likewise
                    (vec![0; B], vec![0; B]),
                ];
                for (bx, by) in &bad_keys {
                    import(bx, by);
                    counts.key_imports += 1;
                }

                for _ in 0..3 {
                    let len = rng.below(300);
                    let msg = rng.bytes(len);
                    let sig: Signature = sk.sign_with_rng(&mut rng, &msg);
                    let sig = sig.to_bytes().to_vec();
                    let (r, s) = sig.split_at(B);
                    let mut variants: Vec<(&str, Vec<u8>, Vec<u8>)> = Vec::new();
                    let mut push = |what: &'static str, m: &[u8], r: &[u8], s: &[u8]| {
                        variants.push((what, m.to_vec(), [r, s].concat()));
                    };
                    push("valid", &msg, r, s);
                    // n - s: of s and n - s one is "high" (> n/2); both are valid ECDSA.
                    push("n-s", &msg, r, &sub_be(&n, s));
                    push("r bit", &msg, &flip(r, &mut rng), s);
                    push("s bit", &msg, r, &flip(s, &mut rng));
                    push("msg bit", &flip(&msg, &mut rng), r, s);
                    push("msg longer", &[&msg[..], b"x"].concat(), r, s);
                    let zero = vec![0u8; B];
                    let n1 = sub_be(&n, &add_small(&zero, 1));
                    push("r=0", &msg, &zero, s);
                    push("s=0", &msg, r, &zero);
                    push("r=n", &msg, &n, s);
                    push("s=n", &msg, r, &n);
                    push("r=n-1", &msg, &n1, s);
                    push("s=n-1", &msg, r, &n1);
                    push("r+n", &msg, &add_be(r, &n), s);
                    push("s+n", &msg, r, &add_be(s, &n));
                    push("r=s", &msg, s, s);
                    push("swap", &msg, s, r);
                    push("random", &msg, &rng.bytes(B), &rng.bytes(B));
                    for (what, m, sig) in &variants {
                        let want = theirs(&vk, m, sig);
                        assert_eq!(
                            ours.verify(m, sig),
                            want,
                            "{what}: msg={m:02x?} sig={sig:02x?}"
                        );
                        counts.verifications += 1;
                        counts.accepted += usize::from(want);
                        let s = &sig[B..];
                        if want && sub_be(&n, s) < s.to_vec() {
                            counts.high_s_accepted += 1;
                        }
                        match *what {
                            "valid" => assert!(want, "RustCrypto rejects a valid signature"),
                            "n-s" => assert!(want, "RustCrypto 0.13 accepts n - s"),
                            _ => {}
                        }
                        check_der(sig, &mut counts);
                    }
                    assert!(!ours.verify(&msg, &sig[1..]), "short signature");
                    assert!(
                        !ours.verify(&msg, &[&sig[..], &[0]].concat()),
                        "long signature"
                    );
                    // The signature under another key.
                    if let Some((other, other_vk)) = &previous {
                        let want = theirs(other_vk, &msg, &sig);
                        assert!(!want);
                        assert_eq!(other.verify(&msg, &sig), want, "other key");
                        counts.verifications += 1;
                    }
                }
                previous = Some((ours, vk));
            }

            // DER: integers with the high bit set, leading zero bytes, r or s of one byte.
            for (r, s) in [
                (add_small(&[0; B], 1), add_small(&[0; B], 0x80)),
                (
                    [vec![0; B - 1], vec![0x7f]].concat(),
                    [vec![0; 1], vec![0xff; B - 1]].concat(),
                ),
                (
                    [vec![0; 2], vec![0x80; B - 2]].concat(),
                    sub_be(&n, &add_small(&[0; B], 1)),
                ),
                (n.clone(), add_small(&[0; B], 1)),
                (add_small(&[0; B], 1), vec![0; B]),
            ] {
                check_der(&[r, s].concat(), &mut counts);
            }
            check_der(&[0; 2 * B - 1], &mut counts);

            eprintln!("{}: {counts:?}", stringify!($test));
            assert!(counts.keys >= keys - 2);
        }
    };
}

/// Keys per curve: the default, or `MESHGATE_EC_KEYS` for a longer run (`MESHGATE_EC_SEED` picks
/// other inputs): `MESHGATE_EC_KEYS=1000 cargo test --release --test ec_differential`.
fn key_count(default: usize) -> usize {
    std::env::var("MESHGATE_EC_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One random bit of `v` flipped.
fn flip(v: &[u8], rng: &mut TestRng) -> Vec<u8> {
    let mut v = v.to_vec();
    if !v.is_empty() {
        let i = rng.below(v.len());
        v[i] ^= 1 << rng.below(8);
    }
    v
}

/// a + b for equal-length big-endian numbers (wrapping).
fn add_be(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = vec![0; a.len()];
    let mut carry = 0u16;
    for i in (0..a.len()).rev() {
        let s = u16::from(a[i]) + u16::from(b[i]) + carry;
        out[i] = s as u8;
        carry = s >> 8;
    }
    out
}

differential!(
    p256_matches_rustcrypto,
    p256,
    P256PublicKey,
    Alg::ES256,
    32,
    "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551",
    "ffffffff00000001000000000000000000000000ffffffffffffffffffffffff",
    40
);
differential!(
    p384_matches_rustcrypto,
    p384,
    P384PublicKey,
    Alg::ES384,
    48,
    "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973",
    "fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffeffffffff0000000000000000ffffffff",
    30
);
differential!(
    p521_matches_rustcrypto,
    p521,
    P521PublicKey,
    Alg::ES512,
    66,
    "01fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffa51868783bf2f966b7fcc0148f709a5d03bb5c9b8899c47aebb6fb71e91386409",
    "01ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    20
);
