//! The pluginConfig istiod hands the plugin: parsed and compiled (policies included) or refused
//! with field paths; a configuration that loads must run: its first fetches are well-formed
//! calls, and a request without a token is decided at once, the same way twice.
#![no_main]

mod shared;

use libfuzzer_sys::fuzz_target;
use meshgate::config::Settings;
use meshgate::engine::{Decision, Engine};
use meshgate::jwt::crypto::WasmCrypto;
use meshgate::metrics::CountingSink;
use meshgate::request::RequestAttrs;
use std::rc::Rc;

fuzz_target!(|data: &[u8]| {
    let settings = match Settings::from_json(data) {
        Ok(s) => s,
        Err(errors) => {
            assert!(!errors.is_empty(), "a refusal names at least one error");
            for e in &errors {
                assert!(!e.to_string().is_empty());
            }
            return;
        }
    };
    let mut engine = Engine::new(Rc::new(settings));
    for call in engine.on_tick(shared::NOW_MS) {
        let header = |name: &str| {
            call.headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(header(":method"), Some("GET"), "{call:?}");
        assert!(
            header(":path").is_some_and(|p| p.starts_with('/')),
            "{call:?}"
        );
        assert!(
            header(":authority").is_some_and(|a| !a.is_empty()),
            "{call:?}"
        );
        assert!(!call.cluster.is_empty(), "{call:?}");
    }
    let req = RequestAttrs {
        method: "GET".into(),
        path: "/api/data?x=1".into(),
        host: "backend:8080".into(),
        scheme: "https".into(),
        headers: vec![("x-role".into(), "admin".into())],
        ..RequestAttrs::default()
    };
    let mut metrics = CountingSink::default();
    let first = engine.on_request(&req, shared::NOW_MS, &WasmCrypto, &mut metrics);
    let again = engine.on_request(&req, shared::NOW_MS, &WasmCrypto, &mut metrics);
    assert_eq!(first, again);
    match first {
        Decision::Wait(w) => panic!("a request without a token waited: {w:?}"),
        Decision::Respond(r) => assert!(matches!(r.status, 401 | 403), "{r:?}"),
        Decision::Forward(_) => {}
    }
});
