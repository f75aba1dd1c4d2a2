//! ECDSA signature checks for ES256/ES384/ES512 (NIST P-256, P-384, P-521; FIPS 186-4 §6.4.2).
//!
//! Field arithmetic is crypto-bigint's Montgomery form with compile-time moduli for P-256 and
//! P-384, and for P-521 a schoolbook product reduced modulo the Mersenne prime 2^521 - 1 (point
//! operations measured 1.5x faster in V8 than with 17-limb Montgomery multiplication); scalars
//! mod n use Montgomery form. The curve arithmetic is written here: Jacobian coordinates (a = -3
//! doubling, mixed addition with affine table points), and u1·G + u2·Q as one interleaved (Straus)
//! loop over width-w NAF digits. Each scalar is split into `PARTS` pieces with a table per piece
//! (odd multiples of 2^(j·h)·P), so the loop runs only h = ⌈bits/PARTS⌉ doublings; the tables for
//! G are built once per curve with the first key, those of a key once at JWKS load. No inversion
//! while verifying: x(R) mod n = r is checked as X = r'·Z² for r' ∈ {r, r + n}.
//! Everything here handles public data (key, message, signature), so variable-time code is fine.

use crypto_bigint::modular::{ConstMontyForm, ConstMontyParams, FixedMontyParams};
use crypto_bigint::{Limb, Odd, Uint, Word, U256, U384, U576};
use sha2::Digest;
use std::fmt::Debug;
use std::sync::OnceLock;

/// Limbs for `bits` bits: 32-bit limbs on wasm32 (`cpubits`), 64-bit natively.
const fn limbs_for(bits: u32) -> usize {
    bits.div_ceil(Limb::BITS) as usize
}
pub const L256: usize = limbs_for(256);
pub const L384: usize = limbs_for(384);
pub const L521: usize = limbs_for(521);

/// GF(p) as the curve formulas need it; elements are always fully reduced.
pub trait Field: Copy + PartialEq + Debug + Send + Sync + 'static {
    const ZERO: Self;
    const ONE: Self;
    fn mul(&self, rhs: &Self) -> Self;
    fn square(&self) -> Self;
    fn add(&self, rhs: &Self) -> Self;
    fn sub(&self, rhs: &Self) -> Self;
    fn neg(&self) -> Self;
    fn invert(&self) -> Option<Self>;
    fn double(&self) -> Self {
        self.add(self)
    }
}

/// Conversion of integers below the modulus p into field elements.
pub trait PrimeField<const L: usize>: Field {
    const MODULUS: Uint<L>;
    /// `x` must be < p.
    fn from_uint(x: &Uint<L>) -> Self;
}

type Monty<const L: usize, M> = ConstMontyForm<M, L>;

impl<const L: usize, M: ConstMontyParams<L>> Field for Monty<L, M> {
    const ZERO: Self = Monty::<L, M>::ZERO;
    const ONE: Self = Monty::<L, M>::ONE;
    fn mul(&self, rhs: &Self) -> Self {
        Monty::mul(self, rhs)
    }
    fn square(&self) -> Self {
        Monty::square(self)
    }
    fn add(&self, rhs: &Self) -> Self {
        Monty::add(self, rhs)
    }
    fn sub(&self, rhs: &Self) -> Self {
        Monty::sub(self, rhs)
    }
    fn neg(&self) -> Self {
        Monty::neg(self)
    }
    fn invert(&self) -> Option<Self> {
        self.invert_vartime().into()
    }
    fn double(&self) -> Self {
        Monty::double(self)
    }
}

impl<const L: usize, M: ConstMontyParams<L>> PrimeField<L> for Monty<L, M> {
    const MODULUS: Uint<L> = M::PARAMS.modulus().get_copy();
    fn from_uint(x: &Uint<L>) -> Self {
        Monty::new(x)
    }
}

/// A modulus as a crypto-bigint `ConstMontyParams` type. `$wide` is a Uint type that has the
/// same size on 32- and 64-bit limbs, so one hex string serves both.
macro_rules! modulus {
    ($name:ident, $limbs:expr, $wide:ty, $hex:expr) => {
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct $name;
        impl ConstMontyParams<$limbs> for $name {
            const LIMBS: usize = $limbs;
            const PARAMS: FixedMontyParams<$limbs> =
                FixedMontyParams::new_vartime(Odd::<$wide>::from_be_hex($hex).resize::<$limbs>());
        }
    };
}

modulus!(
    P256Field,
    L256,
    U256,
    "ffffffff00000001000000000000000000000000ffffffffffffffffffffffff"
);
modulus!(
    P256Order,
    L256,
    U256,
    "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551"
);
modulus!(
    P384Field,
    L384,
    U384,
    "fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffeffffffff0000000000000000ffffffff"
);
modulus!(
    P384Order,
    L384,
    U384,
    "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973"
);
modulus!(
    P521Order,
    L521,
    U576,
    "00000000000001fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffa51868783bf2f966b7fcc0148f709a5d03bb5c9b8899c47aebb6fb71e91386409"
);

/// GF(2^521 - 1): products are reduced with 2^521 ≡ 1 (a shift and an addition).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct P521Fe(Uint<L521>);

const P521_P_HEX: &str = "00000000000001ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";
const P521_P: Odd<Uint<L521>> = Odd::<U576>::from_be_hex(P521_P_HEX).resize::<L521>();

/// Limbs of a product of two P-521 field elements.
const L521_WIDE: usize = 2 * L521;

/// t[at..] += a·b (the row's final carry lands in t[at + a.len()], which is still zero).
fn mul_add_row(t: &mut [Limb], at: usize, a: &[Limb], b: Limb) {
    let Some(row) = t.get_mut(at..=at + a.len()) else {
        return;
    };
    let (row, top) = row.split_at_mut(a.len());
    let mut carry = Limb::ZERO;
    for (tj, aj) in row.iter_mut().zip(a) {
        (*tj, carry) = aj.carrying_mul_add(b, *tj, carry);
    }
    if let Some(top) = top.first_mut() {
        *top = carry;
    }
}

impl P521Fe {
    /// Schoolbook product (crypto-bigint's Karatsuba `widening_mul` for 17 limbs adds ~40 KB of
    /// .wasm and is slower here), reduced.
    fn mul_reduce(a: &Uint<L521>, b: &Uint<L521>) -> Self {
        let mut t = [Limb::ZERO; L521_WIDE];
        for (i, bi) in b.as_limbs().iter().enumerate() {
            mul_add_row(&mut t, i, a.as_limbs(), *bi);
        }
        Self::reduce(&Uint::new(t))
    }

    /// x mod p for x < 2^1042: x = low + high·2^521 ≡ low + high, both < 2^521.
    fn reduce(t: &Uint<L521_WIDE>) -> Self {
        let low = t.resize::<L521>().bitand(P521_P.as_ref());
        let high = t.shr_vartime(521).resize::<L521>();
        Self(low.wrapping_add(&high)).reduced()
    }

    /// One subtraction of p from a value < 2p.
    fn reduced(self) -> Self {
        let p = P521_P.as_ref();
        if self.0 >= *p {
            Self(self.0.wrapping_sub(p))
        } else {
            self
        }
    }
}

impl Field for P521Fe {
    const ZERO: Self = P521Fe(Uint::ZERO);
    const ONE: Self = P521Fe(Uint::ONE);
    fn mul(&self, rhs: &Self) -> Self {
        Self::mul_reduce(&self.0, &rhs.0)
    }
    fn square(&self) -> Self {
        Self::mul_reduce(&self.0, &self.0)
    }
    fn add(&self, rhs: &Self) -> Self {
        // < 2^522: no overflow in 17 (or 9) limbs.
        Self(self.0.wrapping_add(&rhs.0)).reduced()
    }
    fn sub(&self, rhs: &Self) -> Self {
        if self.0 >= rhs.0 {
            Self(self.0.wrapping_sub(&rhs.0))
        } else {
            Self(self.0.wrapping_add(P521_P.as_ref()).wrapping_sub(&rhs.0))
        }
    }
    fn neg(&self) -> Self {
        Self::ZERO.sub(self)
    }
    fn invert(&self) -> Option<Self> {
        Option::from(self.0.invert_odd_mod_vartime(&P521_P)).map(Self)
    }
}

impl PrimeField<L521> for P521Fe {
    const MODULUS: Uint<L521> = P521_P.get_copy();
    fn from_uint(x: &Uint<L521>) -> Self {
        Self(*x)
    }
}

/// A curve y² = x³ - 3x + b over GF(p) with prime order n (cofactor 1).
pub trait Curve<const L: usize>: Clone + 'static {
    /// GF(p).
    type F: PrimeField<L>;
    /// The group order n.
    type N: ConstMontyParams<L>;
    /// The JWS hash of the curve's algorithm (RFC 7518 §3.4).
    type Hash: Digest;
    const NAME: &'static str;
    /// Length of a coordinate and of r and s in bytes.
    const BYTES: usize;
    /// Bit length of n.
    const N_BITS: u32;
    const B: Uint<L>;
    const GX: Uint<L>;
    const GY: Uint<L>;
    /// How many pieces each scalar is split into (the loop runs ⌈N_BITS/PARTS⌉ doublings).
    const PARTS: u32;
    /// wNAF widths for G and for public keys: 2^(w-2) table points per piece.
    const G_WINDOW: u32;
    const Q_WINDOW: u32;
    /// The tables for G, built by the first key import (None only if the constants were wrong).
    fn generator_tables() -> Option<&'static Tables<Self::F>>;
}

/// The tables for G of one curve, in a static of its own.
macro_rules! generator_tables {
    ($f:ty, $limbs:expr) => {
        fn generator_tables() -> Option<&'static Tables<$f>> {
            static TABLES: OnceLock<Option<Tables<$f>>> = OnceLock::new();
            TABLES
                .get_or_init(|| {
                    let g = Affine::from_uint(&Self::GX, &Self::GY);
                    Tables::build(&g, Self::G_WINDOW, Self::PARTS, part_bits::<$limbs, Self>())
                })
                .as_ref()
        }
    };
}

// Pieces and wNAF widths, measured in V8 (us per verification, ES256/ES384/ES512):
// 4 pieces, w = 7 (G) / 5 (keys): 184/502/1560; 8 pieces, w = 8/5: 146/412/1245;
// 16 pieces, w = 8/6: 132/354/1050 with twice the key tables and 2-3x the key import time.
// (P-521 there with Montgomery arithmetic.) Chosen: 8 pieces, w = 8/5. Tables per key: 8 × 8
// points (4 KB for P-256 to 9 KB for P-521 with 32-bit limbs); for G: 8 × 64 points per curve
// (32 to 70 KB), built with the first key of the curve.

#[derive(Clone, Copy, Debug)]
pub struct P256;
impl Curve<L256> for P256 {
    type F = Monty<L256, P256Field>;
    type N = P256Order;
    type Hash = sha2::Sha256;
    const NAME: &'static str = "P-256";
    const BYTES: usize = 32;
    const N_BITS: u32 = 256;
    const B: Uint<L256> =
        U256::from_be_hex("5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604b");
    const GX: Uint<L256> =
        U256::from_be_hex("6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296");
    const GY: Uint<L256> =
        U256::from_be_hex("4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5");
    const PARTS: u32 = 8;
    const G_WINDOW: u32 = 8;
    const Q_WINDOW: u32 = 5;
    generator_tables!(Monty<L256, P256Field>, L256);
}

#[derive(Clone, Copy, Debug)]
pub struct P384;
impl Curve<L384> for P384 {
    type F = Monty<L384, P384Field>;
    type N = P384Order;
    type Hash = sha2::Sha384;
    const NAME: &'static str = "P-384";
    const BYTES: usize = 48;
    const N_BITS: u32 = 384;
    const B: Uint<L384> = U384::from_be_hex(
        "b3312fa7e23ee7e4988e056be3f82d19181d9c6efe8141120314088f5013875ac656398d8a2ed19d2a85c8edd3ec2aef",
    );
    const GX: Uint<L384> = U384::from_be_hex(
        "aa87ca22be8b05378eb1c71ef320ad746e1d3b628ba79b9859f741e082542a385502f25dbf55296c3a545e3872760ab7",
    );
    const GY: Uint<L384> = U384::from_be_hex(
        "3617de4a96262c6f5d9e98bf9292dc29f8f41dbd289a147ce9da3113b5f0b8c00a60b1ce1d7e819d7a431d7c90ea0e5f",
    );
    const PARTS: u32 = 8;
    const G_WINDOW: u32 = 8;
    const Q_WINDOW: u32 = 5;
    generator_tables!(Monty<L384, P384Field>, L384);
}

#[derive(Clone, Copy, Debug)]
pub struct P521;
impl Curve<L521> for P521 {
    type F = P521Fe;
    type N = P521Order;
    type Hash = sha2::Sha512;
    const NAME: &'static str = "P-521";
    const BYTES: usize = 66;
    const N_BITS: u32 = 521;
    const B: Uint<L521> = U576::from_be_hex(
        "0000000000000051953eb9618e1c9a1f929a21a0b68540eea2da725b99b315f3b8b489918ef109e156193951ec7e937b1652c0bd3bb1bf073573df883d2c34f1ef451fd46b503f00",
    ).resize();
    const GX: Uint<L521> = U576::from_be_hex(
        "00000000000000c6858e06b70404e9cd9e3ecb662395b4429c648139053fb521f828af606b4d3dbaa14b5e77efe75928fe1dc127a2ffa8de3348b3c1856a429bf97e7e31c2e5bd66",
    ).resize();
    const GY: Uint<L521> = U576::from_be_hex(
        "000000000000011839296a789a3bc0045c8a5fb42c7d1bd998f54449579b446817afbd17273e662c97ee72995ef42640c550b9013fad0761353c7086a272c24088be94769fd16650",
    ).resize();
    const PARTS: u32 = 8;
    const G_WINDOW: u32 = 8;
    const Q_WINDOW: u32 = 5;
    generator_tables!(P521Fe, L521);
}

/// Bits per scalar piece.
fn part_bits<const L: usize, C: Curve<L>>() -> u32 {
    C::N_BITS.div_ceil(C::PARTS)
}

/// Big-endian bytes to an integer; None when they do not fit in L limbs.
fn uint_from_be<const L: usize>(bytes: &[u8]) -> Option<Uint<L>> {
    let mut words = [Word::MIN; L];
    for (i, &b) in bytes.iter().rev().enumerate() {
        if b != 0 {
            *words.get_mut(i / Limb::BYTES)? |= Word::from(b) << (8 * (i % Limb::BYTES));
        }
    }
    Some(Uint::from_words(words))
}

fn order<const L: usize, C: Curve<L>>() -> &'static Uint<L> {
    C::N::PARAMS.modulus().as_ref()
}

/// r or s: exactly `C::BYTES` big-endian bytes with 1 ≤ v ≤ n - 1.
fn scalar<const L: usize, C: Curve<L>>(bytes: &[u8]) -> Option<Uint<L>> {
    let v = uint_from_be::<L>(bytes)?;
    (bytes.len() == C::BYTES && !v.is_zero_vartime() && v < *order::<L, C>()).then_some(v)
}

#[derive(Clone, Copy, Debug)]
pub struct Affine<F> {
    x: F,
    y: F,
}

impl<F> Affine<F> {
    fn from_uint<const L: usize>(x: &Uint<L>, y: &Uint<L>) -> Self
    where
        F: PrimeField<L>,
    {
        Affine {
            x: F::from_uint(x),
            y: F::from_uint(y),
        }
    }
}

/// (X, Y, Z) stands for (X/Z², Y/Z³); Z = 0 is the point at infinity.
#[derive(Clone, Copy, Debug)]
struct Jacobian<F> {
    x: F,
    y: F,
    z: F,
}

impl<F: Field> Jacobian<F> {
    const INFINITY: Self = Jacobian {
        x: F::ONE,
        y: F::ONE,
        z: F::ZERO,
    };

    fn is_infinity(&self) -> bool {
        self.z == F::ZERO
    }

    fn from_affine(p: &Affine<F>) -> Self {
        Jacobian {
            x: p.x,
            y: p.y,
            z: F::ONE,
        }
    }

    /// 2P for a = -3 (dbl-2001-b: 3M + 5S).
    fn double(&self) -> Self {
        if self.is_infinity() {
            return *self;
        }
        let delta = self.z.square();
        let gamma = self.y.square();
        let beta = self.x.mul(&gamma);
        let t = self.x.sub(&delta).mul(&self.x.add(&delta));
        let alpha = t.double().add(&t);
        let beta4 = beta.double().double();
        let x = alpha.square().sub(&beta4.double());
        let z = self.y.add(&self.z).square().sub(&gamma).sub(&delta);
        let gamma2_8 = gamma.square().double().double().double();
        let y = alpha.mul(&beta4.sub(&x)).sub(&gamma2_8);
        Jacobian { x, y, z }
    }

    /// P + Q (or P - Q when `negate`) for an affine Q (madd-2007-bl: 7M + 4S), including the
    /// cases P = ∞, P = Q and P = -Q.
    fn add_affine(&self, q: &Affine<F>, negate: bool) -> Self {
        let qy = if negate { q.y.neg() } else { q.y };
        if self.is_infinity() {
            return Jacobian {
                x: q.x,
                y: qy,
                z: F::ONE,
            };
        }
        let z1z1 = self.z.square();
        let u2 = q.x.mul(&z1z1);
        let s2 = qy.mul(&self.z).mul(&z1z1);
        let h = u2.sub(&self.x);
        let r = s2.sub(&self.y);
        if h == F::ZERO {
            return if r == F::ZERO {
                self.double()
            } else {
                Self::INFINITY
            };
        }
        let hh = h.square();
        let i = hh.double().double();
        let j = h.mul(&i);
        let r = r.double();
        let v = self.x.mul(&i);
        let x = r.square().sub(&j).sub(&v.double());
        let y = r.mul(&v.sub(&x)).sub(&self.y.mul(&j).double());
        let z = self.z.add(&h).square().sub(&z1z1).sub(&hh);
        Jacobian { x, y, z }
    }
}

/// Affine forms of many points with one field inversion (Montgomery's trick);
/// None if one of them is the point at infinity.
fn to_affine<F: Field>(points: &[Jacobian<F>]) -> Option<Vec<Affine<F>>> {
    // prefix[i] = z_0 · … · z_i
    let mut prefix = Vec::with_capacity(points.len());
    let mut acc = F::ONE;
    for p in points {
        if p.is_infinity() {
            return None;
        }
        acc = acc.mul(&p.z);
        prefix.push(acc);
    }
    let mut inv = acc.invert()?;
    let mut out = vec![Affine { x: acc, y: acc }; points.len()];
    for i in (0..points.len()).rev() {
        // inv = (z_0 · … · z_i)⁻¹
        let z_inv = match i {
            0 => inv,
            _ => inv.mul(prefix.get(i - 1)?),
        };
        let p = points.get(i)?;
        inv = inv.mul(&p.z);
        let z2 = z_inv.square();
        *out.get_mut(i)? = Affine {
            x: p.x.mul(&z2),
            y: p.y.mul(&z2.mul(&z_inv)),
        };
    }
    Some(out)
}

/// For each piece j of a scalar: the odd multiples 1·P_j, 3·P_j, …, (2^(w-1) - 1)·P_j of
/// P_j = 2^(j·h)·P, affine.
#[derive(Clone, Debug)]
pub struct Tables<F> {
    points: Vec<Affine<F>>,
    window: u32,
    parts: u32,
    part_bits: u32,
}

impl<F: Field> Tables<F> {
    fn build(p: &Affine<F>, window: u32, parts: u32, part_bits: u32) -> Option<Self> {
        if !(2..=8).contains(&window) {
            return None;
        }
        let per_part = 1usize << (window - 2);
        // P_j and 2·P_j for every piece, made affine together.
        let mut bases = Vec::with_capacity(2 * parts as usize);
        let mut base = Jacobian::from_affine(p);
        for j in 0..parts {
            if j > 0 {
                for _ in 0..part_bits {
                    base = base.double();
                }
            }
            bases.push(base);
            bases.push(base.double());
        }
        let bases = to_affine(&bases)?;
        let mut multiples = Vec::with_capacity(parts as usize * per_part);
        for pair in bases.chunks_exact(2) {
            let [b, b2] = pair else { return None };
            let mut m = Jacobian::from_affine(b);
            multiples.push(m);
            for _ in 1..per_part {
                m = m.add_affine(b2, false);
                multiples.push(m);
            }
        }
        Some(Tables {
            points: to_affine(&multiples)?,
            window,
            parts,
            part_bits,
        })
    }

    fn per_part(&self) -> usize {
        1 << (self.window - 2)
    }
}

/// Width-w NAF digits of bits [start, start + len) of `k`, least significant first (len + 1
/// digits): every non-zero digit is odd with |d| < 2^(w-1), and any w consecutive digits hold at
/// most one non-zero digit.
fn wnaf<const L: usize>(k: &Uint<L>, start: u32, len: u32, w: u32, out: &mut [i8]) {
    let bit = |i: u32| -> i32 {
        if i >= len {
            return 0;
        }
        let i = start + i;
        k.as_words()
            .get((i / Limb::BITS) as usize)
            .map_or(0, |word| ((word >> (i % Limb::BITS)) & 1) as i32)
    };
    let width = 1i32 << w;
    let mut carry = 0;
    let mut pos = 0;
    while pos <= len {
        let window = carry + (0..w).map(|b| bit(pos + b) << b).sum::<i32>();
        if window & 1 == 0 {
            pos += 1;
            continue;
        }
        let digit = if window < width / 2 {
            carry = 0;
            window
        } else {
            carry = 1;
            window - width
        };
        if let Some(d) = out.get_mut(pos as usize) {
            *d = digit as i8;
        }
        pos += w;
    }
}

/// Σ k_i·P_i over (tables of P_i, k_i), with all tables split alike; None on inconsistent tables.
fn lincomb<const L: usize, F: Field>(terms: &[(&Tables<F>, &Uint<L>)]) -> Option<Jacobian<F>> {
    let (first, _) = terms.first()?;
    let (parts, h) = (first.parts, first.part_bits);
    let stride = h as usize + 1;
    let mut digits = vec![0i8; terms.len() * parts as usize * stride];
    let mut chunks = digits.chunks_mut(stride);
    for (tables, k) in terms {
        if tables.parts != parts || tables.part_bits != h || !(2..=8).contains(&tables.window) {
            return None;
        }
        for j in 0..parts {
            wnaf(k, j * h, h, tables.window, chunks.next()?);
        }
    }
    let mut acc = Jacobian::INFINITY;
    for i in (0..stride).rev() {
        acc = acc.double();
        for (t, (tables, _)) in terms.iter().enumerate() {
            for j in 0..parts as usize {
                let d = *digits.get((t * parts as usize + j) * stride + i)?;
                if d != 0 {
                    let index = j * tables.per_part() + (d.unsigned_abs() >> 1) as usize;
                    acc = acc.add_affine(tables.points.get(index)?, d < 0);
                }
            }
        }
    }
    Some(acc)
}

/// An ECDSA public key with its precomputed tables.
#[derive(Clone)]
pub struct EcPublicKey<const L: usize, C: Curve<L>> {
    tables: Tables<C::F>,
}

pub type P256PublicKey = EcPublicKey<L256, P256>;
pub type P384PublicKey = EcPublicKey<L384, P384>;
pub type P521PublicKey = EcPublicKey<L521, P521>;

impl<const L: usize, C: Curve<L>> Debug for EcPublicKey<L, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EcPublicKey({})", C::NAME)
    }
}

impl<const L: usize, C: Curve<L>> EcPublicKey<L, C> {
    /// From affine coordinates, exactly `C::BYTES` big-endian bytes each. Rejects coordinates
    /// ≥ p and points not on the curve (the identity has no affine coordinates; every other
    /// curve point generates the whole group, the cofactor being 1).
    pub fn from_coordinates(x: &[u8], y: &[u8]) -> Result<Self, String> {
        let bad = || format!("EC point is not on {}", C::NAME);
        if x.len() != C::BYTES || y.len() != C::BYTES {
            return Err(format!(
                "{} coordinates must be {} bytes",
                C::NAME,
                C::BYTES
            ));
        }
        let p = C::F::MODULUS;
        let (x, y) = match (uint_from_be::<L>(x), uint_from_be::<L>(y)) {
            (Some(x), Some(y)) if x < p && y < p => (x, y),
            _ => return Err(bad()),
        };
        let q = Affine::<C::F>::from_uint(&x, &y);
        let x3 = q.x.square().mul(&q.x);
        let rhs = x3.sub(&q.x.double().add(&q.x)).add(&C::F::from_uint(&C::B));
        if q.y.square() != rhs {
            return Err(bad());
        }
        let tables =
            Tables::build(&q, C::Q_WINDOW, C::PARTS, part_bits::<L, C>()).ok_or_else(bad)?;
        // G's tables (once per curve, 3-10 ms in V8) at JWKS load rather than on a request.
        C::generator_tables().ok_or_else(|| format!("no {} generator tables", C::NAME))?;
        Ok(EcPublicKey { tables })
    }

    /// ECDSA verification of a JWS signature (r||s, each `C::BYTES` big-endian bytes).
    /// High-s signatures are valid, as in BoringSSL and RustCrypto.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        self.verify_inner(msg, sig).unwrap_or(false)
    }

    fn verify_inner(&self, msg: &[u8], sig: &[u8]) -> Option<bool> {
        if sig.len() != 2 * C::BYTES {
            return Some(false);
        }
        let (r, s) = sig.split_at(C::BYTES);
        let (r, s) = (scalar::<L, C>(r)?, scalar::<L, C>(s)?);
        // e = the leftmost N_BITS bits of the hash (FIPS 186-4 §6.4; no truncation happens for
        // the JWS pairs: 256/256, 384/384, 512/521).
        let hash = C::Hash::digest(msg);
        let n_bytes = C::N_BITS.div_ceil(8) as usize;
        let e = if 8 * hash.len() > C::N_BITS as usize {
            uint_from_be::<L>(hash.get(..n_bytes)?)?.shr_vartime(8 * n_bytes as u32 - C::N_BITS)
        } else {
            uint_from_be::<L>(&hash)?
        };
        // Montgomery conversion reduces e < 2^N_BITS modulo n.
        let w: Monty<L, C::N> = Option::from(Monty::<L, C::N>::new(&s).invert_vartime())?;
        let u1 = Monty::<L, C::N>::new(&e).mul(&w).retrieve();
        let u2 = Monty::<L, C::N>::new(&r).mul(&w).retrieve();
        let point = lincomb(&[(C::generator_tables()?, &u1), (&self.tables, &u2)])?;
        Some(x_mod_n_is::<L, C>(&point, &r))
    }
}

/// Whether R ≠ ∞ and x(R) mod n = r, without an inversion: x = X/Z² < p < 2n, so
/// x mod n = r iff X = r·Z² or (when r + n < p) X = (r + n)·Z².
fn x_mod_n_is<const L: usize, C: Curve<L>>(point: &Jacobian<C::F>, r: &Uint<L>) -> bool {
    if point.is_infinity() {
        return false;
    }
    let z2 = point.z.square();
    if point.x == C::F::from_uint(r).mul(&z2) {
        return true;
    }
    let (r_plus_n, carry) = r.carrying_add(order::<L, C>(), Limb::ZERO);
    carry == Limb::ZERO
        && r_plus_n < C::F::MODULUS
        && point.x == C::F::from_uint(&r_plus_n).mul(&z2)
}

/// A JWS ECDSA signature (r||s) as the DER `SEQUENCE { INTEGER r, INTEGER s }` BoringSSL expects;
/// None when the length is wrong or r or s is not in [1, n-1].
pub fn raw_to_der<const L: usize, C: Curve<L>>(sig: &[u8]) -> Option<Vec<u8>> {
    if sig.len() != 2 * C::BYTES {
        return None;
    }
    let (r, s) = sig.split_at(C::BYTES);
    scalar::<L, C>(r)?;
    scalar::<L, C>(s)?;
    let content = [der_int(r), der_int(s)].concat();
    Some(super::rsa::der(0x30, &content))
}

/// A positive INTEGER, minimally encoded.
fn der_int(be: &[u8]) -> Vec<u8> {
    let first = be.iter().position(|&b| b != 0).unwrap_or(be.len());
    super::rsa::der_uint(be.get(first..).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn order_times_g<const L: usize, C: Curve<L>>() -> bool {
        // (n-1)·G + G = ∞, through the table path.
        let tables = C::generator_tables().unwrap();
        let n_minus_1 = order::<L, C>().wrapping_sub(&Uint::ONE);
        let p = lincomb(&[(tables, &n_minus_1)]).unwrap();
        let g = Affine::<C::F>::from_uint(&C::GX, &C::GY);
        p.add_affine(&g, false).is_infinity() && !p.is_infinity()
    }

    fn same_point<F: Field>(a: &Jacobian<F>, b: &Jacobian<F>) -> bool {
        let (a, b) = (to_affine(&[*a]).unwrap()[0], to_affine(&[*b]).unwrap()[0]);
        a.x == b.x && a.y == b.y
    }

    fn addition_edge_cases<const L: usize, C: Curve<L>>() {
        let g = Affine::<C::F>::from_uint(&C::GX, &C::GY);
        let g_jac = Jacobian::from_affine(&g);
        // A non-trivial Z: P = 3G computed in Jacobian coordinates.
        let p = g_jac.double().add_affine(&g, false);
        let p_aff = to_affine(&[p]).unwrap()[0];
        assert!(
            same_point(&p.add_affine(&p_aff, false), &p.double()),
            "P + P = 2P"
        );
        assert!(p.add_affine(&p_aff, true).is_infinity(), "P - P = ∞");
        assert!(
            same_point(&Jacobian::INFINITY.add_affine(&p_aff, false), &p),
            "∞ + P = P"
        );
        assert!(Jacobian::<C::F>::INFINITY.double().is_infinity(), "2∞ = ∞");
        // 3G - G = 2G, 3G + G = 4G = 2(2G)
        assert!(same_point(&p.add_affine(&g, true), &g_jac.double()));
        assert!(same_point(
            &p.add_affine(&g, false),
            &g_jac.double().double()
        ));
        // u1·G + u2·Q with u2·Q = ±u1·G: Q = G, u1 = u2 = k, and u2 = n - k.
        let tables = C::generator_tables().unwrap();
        let k = Uint::<L>::from_u64(0x1234_5678_9abc_def1);
        let two_k = k.wrapping_add(&k);
        let sum = lincomb(&[(tables, &k), (tables, &k)]).unwrap();
        assert!(
            same_point(&sum, &lincomb(&[(tables, &two_k)]).unwrap()),
            "kG + kG"
        );
        let n_minus_k = order::<L, C>().wrapping_sub(&k);
        assert!(
            lincomb(&[(tables, &k), (tables, &n_minus_k)])
                .unwrap()
                .is_infinity(),
            "kG + (n-k)G"
        );
    }

    #[test]
    fn addition_handles_equal_and_opposite_points() {
        addition_edge_cases::<L256, P256>();
        addition_edge_cases::<L384, P384>();
        addition_edge_cases::<L521, P521>();
    }

    fn x_check<const L: usize, C: Curve<L>>() {
        // X = x·Z² for a random-looking Z; x = r + n must match r when r + n < p.
        let z = C::F::from_uint(&Uint::from_u64(0xdead_beef_1234_5677));
        let z2 = z.square();
        let n = *order::<L, C>();
        let p = C::F::MODULUS;
        let at = |x: &Uint<L>| Jacobian::<C::F> {
            x: C::F::from_uint(x).mul(&z2),
            y: C::F::ONE,
            z,
        };
        let r = Uint::<L>::from_u64(12345);
        assert!(x_mod_n_is::<L, C>(&at(&r), &r));
        assert!(!x_mod_n_is::<L, C>(&at(&r), &Uint::from_u64(12346)));
        let x = r.wrapping_add(&n);
        assert!(x < p);
        assert!(x_mod_n_is::<L, C>(&at(&x), &r), "x = r + n");
        // r close to n: r + n ≥ p, only x = r can match.
        let r = n.wrapping_sub(&Uint::ONE);
        assert!(x_mod_n_is::<L, C>(&at(&r), &r));
        assert!(!x_mod_n_is::<L, C>(&at(&p.wrapping_sub(&Uint::ONE)), &r));
        assert!(!x_mod_n_is::<L, C>(&Jacobian::INFINITY, &r));
    }

    #[test]
    fn x_mod_n_accepts_r_plus_n() {
        x_check::<L256, P256>();
        x_check::<L384, P384>();
        x_check::<L521, P521>();
    }

    modulus!(P521Monty, L521, U576, P521_P_HEX);

    #[test]
    fn p521_field_matches_montgomery_arithmetic() {
        type M = Monty<L521, P521Monty>;
        let p = P521Fe::MODULUS;
        let mut values = vec![
            Uint::ZERO,
            Uint::ONE,
            Uint::from_u64(2),
            p.wrapping_sub(&Uint::ONE),
            p.wrapping_sub(&Uint::from_u64(2)),
            Uint::ONE.shl_vartime(520),
            Uint::ONE.shl_vartime(520).wrapping_sub(&Uint::ONE),
            p.shr_vartime(1),
        ];
        let mut x = 0x0123_4567_89ab_cdefu64;
        for _ in 0..40 {
            let mut v = Uint::<L521>::ZERO;
            for _ in 0..9 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                v = v.shl_vartime(64).bitor(&Uint::from_u64(x));
            }
            values.push(
                v.bitand(&p)
                    .wrapping_sub(&Uint::from_u64(u64::from(v.is_zero_vartime()))),
            );
        }
        let values: Vec<_> = values.into_iter().filter(|v| *v < p).collect();
        for a in &values {
            let (fa, ma) = (P521Fe::from_uint(a), M::new(a));
            assert_eq!(fa.square().0, ma.square().retrieve());
            assert_eq!(fa.neg().0, ma.neg().retrieve());
            assert_eq!(fa.double().0, ma.double().retrieve());
            assert_eq!(
                fa.invert().map(|i| i.0),
                Option::<M>::from(ma.invert_vartime()).map(|i| i.retrieve())
            );
            for b in &values {
                let (fb, mb) = (P521Fe::from_uint(b), M::new(b));
                assert_eq!(fa.mul(&fb).0, ma.mul(&mb).retrieve());
                assert_eq!(fa.add(&fb).0, ma.add(&mb).retrieve());
                assert_eq!(fa.sub(&fb).0, ma.sub(&mb).retrieve());
            }
        }
    }

    #[test]
    fn generator_has_order_n() {
        assert!(order_times_g::<L256, P256>());
        assert!(order_times_g::<L384, P384>());
        assert!(order_times_g::<L521, P521>());
    }

    #[test]
    fn wnaf_reconstructs_the_scalar() {
        let k =
            U256::from_be_hex("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632550")
                .resize::<L256>();
        for w in 2..=8 {
            for (start, len) in [(0, 256), (0, 64), (64, 64), (192, 64), (250, 6)] {
                let mut d = vec![0i8; len as usize + 1];
                wnaf(&k, start, len, w, &mut d);
                let want = k
                    .shr_vartime(start)
                    .bitand(&Uint::MAX.shr_vartime(256 - len));
                let mut got = Uint::<L256>::ZERO;
                for &digit in d.iter().rev() {
                    got = got.shl_vartime(1);
                    let abs = Uint::from_u8(digit.unsigned_abs());
                    got = if digit < 0 {
                        got.wrapping_sub(&abs)
                    } else {
                        got.wrapping_add(&abs)
                    };
                    assert!(
                        digit == 0 || (digit % 2 != 0 && i32::from(digit).abs() < 1 << (w - 1))
                    );
                }
                assert_eq!(got, want, "w={w} start={start} len={len}");
            }
        }
    }

    #[test]
    fn key_import_rejects_bad_points() {
        let gx = hex("6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296");
        let gy = hex("4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5");
        assert!(P256PublicKey::from_coordinates(&gx, &gy).is_ok());
        let mut bad_y = gy.clone();
        bad_y[31] ^= 1;
        assert!(P256PublicKey::from_coordinates(&gx, &bad_y).is_err());
        assert!(
            P256PublicKey::from_coordinates(&gx[1..], &gy).is_err(),
            "short x"
        );
        assert!(
            P256PublicKey::from_coordinates(&[0; 32], &[0; 32]).is_err(),
            "identity as 0,0"
        );
        let p = hex("ffffffff00000001000000000000000000000000ffffffffffffffffffffffff");
        assert!(P256PublicKey::from_coordinates(&p, &gy).is_err(), "x = p");
    }

    #[test]
    fn der_integers_are_minimal() {
        let mut sig = vec![0u8; 64];
        sig[31] = 1;
        sig[32] = 0x80;
        assert_eq!(
            raw_to_der::<L256, P256>(&sig).unwrap(),
            [
                &[0x30, 0x26, 0x02, 0x01, 0x01, 0x02, 0x21, 0x00, 0x80][..],
                &[0; 31]
            ]
            .concat()
        );
        assert!(raw_to_der::<L256, P256>(&[0; 64]).is_none());
        assert!(raw_to_der::<L256, P256>(&sig[1..]).is_none());
        // P-521: 2 × (2 + 66) bytes of content need a long-form length.
        let mut sig = vec![0xffu8; 132];
        sig[0] = 0x01;
        sig[66] = 0x01;
        sig[1] = 0;
        sig[67] = 0;
        let der = raw_to_der::<L521, P521>(&sig).unwrap();
        assert_eq!(&der[..5], &[0x30, 0x81, 136, 0x02, 66]);
    }
}
