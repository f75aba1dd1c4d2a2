//! JWS compact tokens: parsing (untrusted, through jwt-compact), keys, signature backends and
//! verification.

pub mod algorithms;
pub mod crypto;
pub mod ec;
pub mod host_sig;
pub mod jwk;
pub mod rsa;
pub mod token;
pub mod unique_json;
pub mod verify;

use base64::engine::general_purpose::{GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::{DecodePaddingMode, GeneralPurpose};
use base64::Engine as _;

/// Asymmetric JWS algorithms we verify. `none` and HS* are deliberately absent: a JWKS-driven
/// verifier must never accept them (RFC 8725 §3.1, §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    ES512,
    EdDSA,
}

impl Alg {
    pub fn from_name(name: &str) -> Option<Alg> {
        Some(match name {
            "RS256" => Alg::RS256,
            "RS384" => Alg::RS384,
            "RS512" => Alg::RS512,
            "PS256" => Alg::PS256,
            "PS384" => Alg::PS384,
            "PS512" => Alg::PS512,
            "ES256" => Alg::ES256,
            "ES384" => Alg::ES384,
            "ES512" => Alg::ES512,
            "EdDSA" => Alg::EdDSA,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::ES512 => "ES512",
            Alg::EdDSA => "EdDSA",
        }
    }

    /// Hash function name as Envoy's `verify_signature` foreign function expects it.
    pub fn hash_name(self) -> &'static str {
        match self {
            Alg::RS256 | Alg::PS256 | Alg::ES256 => "sha256",
            Alg::RS384 | Alg::PS384 | Alg::ES384 => "sha384",
            Alg::RS512 | Alg::PS512 | Alg::ES512 | Alg::EdDSA => "sha512",
        }
    }
}

/// Base64url decoding that accepts padded and unpadded input, for JWK members (Envoy accepts
/// `=` padding there). Token segments are decoded strictly (RFC 7515 §2: no padding).
const B64URL_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

pub fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    B64URL_LENIENT.decode(s).ok()
}

pub fn b64url_encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub use token::{parse, StdClaims, UntrustedJwt};
