//! Randomness for `state`, `nonce`, the PKCE verifier and cookie nonces: an input of the core
//! (deterministic in tests), from the host in the filter — never derived from a clock.

pub trait Random {
    /// Fills `buf` with unpredictable bytes; false when the source failed.
    fn fill(&mut self, buf: &mut [u8]) -> bool;
}

/// The host's random source through `getrandom`: WASI `random_get` on wasm32-wasip1 (Envoy
/// answers it from BoringSSL's `RAND_bytes`), the OS generator natively.
#[derive(Debug, Default, Clone, Copy)]
pub struct HostRandom;

impl Random for HostRandom {
    fn fill(&mut self, buf: &mut [u8]) -> bool {
        getrandom::fill(buf).is_ok()
    }
}

/// Fills an array, or None when the source failed.
pub fn bytes<const N: usize>(rng: &mut dyn Random) -> Option<[u8; N]> {
    let mut b = [0u8; N];
    rng.fill(&mut b).then_some(b)
}
