use std::time::Instant;
#[cfg(feature = "chacha")]
use chacha20poly1305::{aead::AeadInPlace, KeyInit, XChaCha20Poly1305 as C, XNonce as N};
#[cfg(feature = "aes")]
use aes_gcm::{aead::AeadInPlace, KeyInit, Aes256Gcm as C, Nonce as N};

fn main() {
    let key = [7u8; 32];
    let c = C::new(&key.into());
    #[cfg(feature = "chacha")]
    let nonce = N::from([3u8; 24]);
    #[cfg(feature = "aes")]
    let nonce = N::from([3u8; 12]);
    let size: usize = std::env::args().nth(1).map(|s| s.parse().unwrap()).unwrap_or(3500);
    let msg = vec![0x41u8; size];
    let mut ct = msg.clone();
    c.encrypt_in_place(&nonce, b"aad", &mut ct).unwrap();
    let n = 20000;
    // warm-up
    for _ in 0..2000 { let mut b = ct.clone(); c.decrypt_in_place(&nonce, b"aad", &mut b).unwrap(); }
    let t = Instant::now();
    let mut acc = 0u64;
    for _ in 0..n {
        let mut b = ct.clone();
        c.decrypt_in_place(&nonce, b"aad", &mut b).unwrap();
        acc += b[0] as u64;
    }
    let us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    println!("{} bytes: decrypt {:.2} us ({acc})", size, us);
}
