//! The proxy-wasm adapter: turns host events into engine calls and engine decisions into host
//! actions. No policy lives here. One root context per Wasm VM (one VM per Envoy worker) owns the
//! engine; HTTP contexts share it through `Rc<RefCell<_>>` (a VM is single-threaded).

mod host;

use crate::config::{CryptoMode, Settings};
use crate::engine::{Decision, Engine};
use crate::error::AuthnError;
use crate::jwks::{FetchId, FetchRequest};
use crate::jwt::crypto::{SignatureBackend, WasmCrypto};
use crate::jwt::host_sig::{self, HostCrypto};
use crate::request::RequestAttrs;
use host::{now_ms, HostMetrics};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { shared: Rc::new(RefCell::new(Shared::default())) }) });
}}

/// How often the root context wakes up: refresh keys, retry after failures, expire waits.
const TICK: Duration = Duration::from_millis(500);
/// A paused request is re-evaluated at most this many times (discovery, JWKS, kid refetch).
const MAX_WAKEUPS: u32 = 4;
/// Paused requests per VM; beyond this, requests that need keys fail closed at once.
const MAX_WAITING: usize = 4096;

struct Waiting {
    req: RequestAttrs,
    deadline_ms: u64,
    wakeups: u32,
}

#[derive(Default)]
struct Shared {
    engine: Option<Engine>,
    host_crypto: bool,
    metrics: HostMetrics,
    /// Paused requests by context id.
    waiting: HashMap<u32, Waiting>,
    /// Outstanding fetches by callout token.
    fetches: HashMap<u32, FetchId>,
    /// Longest time a request may wait for keys.
    max_wait_ms: u64,
}

fn host_call(args: &[u8]) -> Option<Vec<u8>> {
    hostcalls::call_foreign_function(host_sig::FOREIGN_FUNCTION, Some(args))
        .ok()
        .flatten()
}

impl Shared {
    fn backend(&self) -> Box<dyn SignatureBackend> {
        if self.host_crypto {
            Box::new(HostCrypto { call: host_call })
        } else {
            Box::new(WasmCrypto)
        }
    }

    /// Dispatches fetches through `ctx` (so the SDK routes the response back to it). A fetch
    /// that cannot be dispatched fails at once (fail closed, with backoff). Returns how many failed.
    fn dispatch(&mut self, ctx: &dyn Context, fetches: Vec<FetchRequest>) -> usize {
        let now = now_ms();
        let mut failed = 0;
        for f in fetches {
            let headers: Vec<(&str, &str)> = f
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            match ctx.dispatch_http_call(&f.cluster, headers, None, vec![], f.timeout) {
                Ok(token) => {
                    self.fetches.insert(token, f.id);
                }
                Err(status) => {
                    log::warn!(
                        "dispatch_http_call to cluster {:?} failed ({status:?}): the cluster must exist in this proxy (Istio names it outbound|<port>||<host>; set jwksCluster to override)",
                        f.cluster
                    );
                    failed += 1;
                    if let Some(engine) = self.engine.as_mut() {
                        engine.on_fetch_dispatch_failed(f.id, now, &mut self.metrics);
                    }
                }
            }
        }
        failed
    }

    /// Runs the engine for the request of context `id` (the effective context) and applies the
    /// decision. `resumed`: the request was paused earlier and must be resumed or answered.
    fn run(&mut self, ctx: &dyn Context, id: u32, req: RequestAttrs, resumed: bool) -> Action {
        let backend = self.backend();
        for _ in 0..2 {
            let Some(engine) = self.engine.as_mut() else {
                // Not configured (configuration rejected): never silently allow.
                host::reply_authn(&req, AuthnError::JwksFetchFailed, engine_reply_opts());
                return Action::Pause;
            };
            let now = now_ms();
            match engine.on_request(&req, now, backend.as_ref(), &mut self.metrics) {
                Decision::Forward(fwd) => {
                    if resumed {
                        self.waiting.remove(&id);
                    }
                    host::apply_forward(&fwd);
                    if resumed {
                        host::resume();
                    }
                    return Action::Continue;
                }
                Decision::Respond(reply) => {
                    self.waiting.remove(&id);
                    host::send_reply(&reply);
                    return Action::Pause;
                }
                Decision::Wait(fetches) => {
                    if self.waiting.len() >= MAX_WAITING && !self.waiting.contains_key(&id) {
                        log::warn!(
                            "{MAX_WAITING} requests already wait for keys; failing this one"
                        );
                        self.metrics.count_denied(AuthnError::JwksFetchFailed);
                        self.dispatch(ctx, fetches);
                        break;
                    }
                    if self.dispatch(ctx, fetches) > 0 {
                        // The fetch could not even be sent: decide again (now without keys → 401).
                        continue;
                    }
                    let max_wait = self.max_wait_ms;
                    let w = self.waiting.entry(id).or_insert_with(|| Waiting {
                        req: RequestAttrs::default(),
                        deadline_ms: now + max_wait,
                        wakeups: 0,
                    });
                    w.req = req;
                    return Action::Pause;
                }
            }
        }
        self.waiting.remove(&id);
        host::reply_authn(&req, AuthnError::JwksFetchFailed, engine_reply_opts());
        Action::Pause
    }

    /// A fetch response arrived (through whichever context dispatched it).
    fn on_fetch_response(&mut self, ctx: &dyn Context, token: u32, body_size: usize) {
        let Some(id) = self.fetches.remove(&token) else {
            return;
        };
        let status = hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten()
            .and_then(|s| s.parse::<u32>().ok());
        let body = if body_size > 0 && body_size <= crate::jwt::jwk::MAX_JWKS_BYTES {
            hostcalls::get_buffer(
                proxy_wasm::types::BufferType::HttpCallResponseBody,
                0,
                body_size,
            )
            .ok()
            .flatten()
            .unwrap_or_default()
        } else {
            Vec::new()
        };
        let now = now_ms();
        let next = match self.engine.as_mut() {
            Some(engine) => engine.on_fetch_response(id, status, &body, now, &mut self.metrics),
            None => return,
        };
        self.dispatch(ctx, next);
        self.wake_waiting(ctx);
    }

    /// Re-evaluates every paused request (keys may have arrived or failed for good).
    fn wake_waiting(&mut self, ctx: &dyn Context) {
        let ids: Vec<u32> = self.waiting.keys().copied().collect();
        for id in ids {
            let Some(w) = self.waiting.get_mut(&id) else {
                continue;
            };
            w.wakeups += 1;
            let (req, exhausted) = (w.req.clone(), w.wakeups > MAX_WAKEUPS);
            if hostcalls::set_effective_context(id).is_err() {
                self.waiting.remove(&id);
                continue;
            }
            if exhausted {
                self.waiting.remove(&id);
                host::reply_authn(&req, AuthnError::JwksFetchFailed, engine_reply_opts());
                continue;
            }
            self.run(ctx, id, req, true);
        }
    }

    /// Answers requests that waited too long: 401 `Jwks remote fetch is failed`.
    fn expire_waiting(&mut self, now: u64) {
        let expired: Vec<u32> = self
            .waiting
            .iter()
            .filter(|(_, w)| now >= w.deadline_ms)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(w) = self.waiting.remove(&id) {
                if hostcalls::set_effective_context(id).is_ok() {
                    self.metrics.count_denied(AuthnError::JwksFetchFailed);
                    host::reply_authn(&w.req, AuthnError::JwksFetchFailed, engine_reply_opts());
                }
            }
        }
    }
}

fn engine_reply_opts() -> &'static crate::error::ReplyOptions {
    static DEFAULT: crate::error::ReplyOptions = crate::error::ReplyOptions {
        insufficient_scope_challenge: false,
        debug_headers: false,
    };
    &DEFAULT
}

struct Root {
    shared: Rc<RefCell<Shared>>,
}

/// A JWKS/discovery response reached the context (root or request) that dispatched it.
fn fetch_response(ctx: &dyn Context, shared: &RefCell<Shared>, token: u32, body_size: usize) {
    shared.borrow_mut().on_fetch_response(ctx, token, body_size);
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        fetch_response(self, &self.shared, token_id, body_size);
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        // Follow the host's log level so debug lines cost nothing unless asked for
        // (`--component-log-level wasm:debug`).
        if let Ok(level) = hostcalls::get_log_level() {
            proxy_wasm::set_log_level(level);
        }
        let bytes = hostcalls::get_buffer(
            proxy_wasm::types::BufferType::PluginConfiguration,
            0,
            usize::MAX,
        )
        .ok()
        .flatten()
        .unwrap_or_default();
        let settings = match Settings::from_json(&bytes) {
            Ok(s) => s,
            Err(errors) => {
                for e in &errors {
                    log::error!("invalid configuration: {e}");
                }
                log::error!("refusing to load ({} configuration error(s))", errors.len());
                return false;
            }
        };
        let host_crypto = match settings.crypto {
            CryptoMode::Wasm => false,
            mode => {
                let available = host_sig::probe(host_call);
                if !available && mode == CryptoMode::Host {
                    log::error!("invalid configuration: crypto: \"host\" but this proxy has no working verify_signature foreign function");
                    return false;
                }
                available
            }
        };
        log::info!(
            "configured {} jwtRules, {} policies; signature verification: {}",
            settings.rules.len(),
            settings.policies.names().count(),
            if host_crypto {
                "host (BoringSSL)"
            } else {
                "in-wasm"
            }
        );
        let max_wait_ms = settings
            .rules
            .iter()
            .map(|r| r.timeout.as_millis() as u64)
            .max()
            .unwrap_or(0)
            + 2_000;
        let mut engine = Engine::new(Rc::new(settings));
        let initial = engine.on_tick(now_ms());
        let shared = self.shared.clone();
        let mut s = shared.borrow_mut();
        s.engine = Some(engine);
        s.host_crypto = host_crypto;
        s.max_wait_ms = max_wait_ms;
        s.metrics.register_static();
        s.dispatch(self, initial);
        drop(s);
        if let Err(e) = hostcalls::set_tick_period(TICK) {
            log::error!("cannot set tick period: {e:?}");
            return false;
        }
        true
    }

    fn on_tick(&mut self) {
        let shared = self.shared.clone();
        let mut s = shared.borrow_mut();
        let now = now_ms();
        s.expire_waiting(now);
        let due = match s.engine.as_mut() {
            Some(e) => e.on_tick(now),
            None => return,
        };
        s.dispatch(self, due);
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Request {
            id: context_id,
            shared: self.shared.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Request {
    id: u32,
    shared: Rc<RefCell<Shared>>,
}

impl Context for Request {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        fetch_response(self, &self.shared, token_id, body_size);
    }

    fn on_done(&mut self) -> bool {
        if let Ok(mut s) = self.shared.try_borrow_mut() {
            if !s.waiting.is_empty() {
                s.waiting.remove(&self.id);
            }
        }
        true
    }
}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let shared = self.shared.clone();
        let mut s = shared.borrow_mut();
        let needs = s
            .engine
            .as_ref()
            .map(|e| e.settings.policies.connection_needs())
            .unwrap_or_default();
        let req = host::request_attrs(needs);
        s.run(self, self.id, req, false)
    }
}
