//! meshgate: Keycloak JWT authentication and Istio AuthorizationPolicy semantics inside Envoy.
//!
//! Everything outside `filter` is host-independent and tested natively with `cargo test`;
//! `filter` is the thin proxy-wasm adapter and only exists on wasm32.

pub mod authz;
pub mod calls;
pub mod config;
/// `meshgate convert` (host tool only: the feature `cli` is never enabled for the .wasm).
#[cfg(feature = "cli")]
pub mod convert;
pub mod duration;
pub mod egress;
pub mod engine;
pub mod error;
pub mod extract;
pub mod http_target;
pub mod identity;
pub mod idp_text;
mod json_path;
pub mod jwks;
pub mod jwt;
pub mod metrics;
pub mod request;
pub mod sso;
pub mod token_cache;
pub mod vm;

#[cfg(target_arch = "wasm32")]
mod filter;
