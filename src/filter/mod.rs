//! The proxy-wasm adapter: turns host events into [`Vm`] calls and implements [`Host`] with
//! proxy-wasm host calls. No policy and no request bookkeeping live here (see `vm.rs`). One root
//! context per Wasm VM (one VM per Envoy worker) owns the runtime; HTTP contexts share it through
//! `Rc<RefCell<_>>` (a VM is single-threaded).

mod host;

use crate::calls::HttpCall;
use crate::config::{CryptoMode, Settings};
use crate::engine::{Engine, Forward};
use crate::error::Reply;
use crate::jwt::crypto::{SignatureBackend, WasmCrypto};
use crate::jwt::host_sig::{self, HostCrypto};
use crate::metrics::MetricSink;
use crate::vm::{Host, Verdict, Vm};
use host::{now_ms, HostMetrics};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { shared: Rc::new(RefCell::new(Shared::default())) }) });
}}

/// How often the root context wakes up: refresh keys, retry after failures, expire waits.
const TICK: Duration = Duration::from_millis(500);
/// The tick asked for when a request queued a call (see `vm.rs`: calls leave from the root).
const SOON: Duration = Duration::from_millis(1);
/// Largest call response body read (a JWKS or discovery document is far smaller).
const MAX_CALL_RESPONSE_BYTES: usize = crate::jwt::jwk::MAX_JWKS_BYTES;

struct Shared {
    vm: Vm,
    metrics: HostMetrics,
    /// Read `listener_direction` per request: `egress` is configured and this is not a gateway.
    read_direction: bool,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            vm: Vm::new(None, Box::new(WasmCrypto)),
            metrics: HostMetrics::default(),
            read_direction: false,
        }
    }
}

fn host_call(args: &[u8]) -> Option<Vec<u8>> {
    hostcalls::call_foreign_function(host_sig::FOREIGN_FUNCTION, Some(args))
        .ok()
        .flatten()
}

/// [`Host`] over proxy-wasm host calls. `ctx` is the context the callback runs in: calls are
/// dispatched through it (the SDK routes the response back to it).
struct WasmHost<'a> {
    ctx: &'a dyn Context,
    metrics: &'a mut HostMetrics,
}

impl Host for WasmHost<'_> {
    fn now_ms(&self) -> u64 {
        now_ms()
    }

    fn dispatch(&mut self, call: &HttpCall) -> Result<u32, String> {
        let headers: Vec<(&str, &str)> = call
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.ctx
            .dispatch_http_call(
                &call.cluster,
                headers,
                call.body.as_deref(),
                vec![],
                call.timeout,
            )
            .map_err(|status| format!("{status:?}"))
    }

    fn tick_soon(&mut self) {
        if let Err(e) = hostcalls::set_tick_period(SOON) {
            log::warn!("cannot shorten the tick period: {e:?}");
        }
    }

    fn tick_regularly(&mut self) {
        if let Err(e) = hostcalls::set_tick_period(TICK) {
            log::warn!("cannot restore the tick period: {e:?}");
        }
    }

    fn enter(&mut self, ctx: u32) -> bool {
        hostcalls::set_effective_context(ctx).is_ok()
    }

    fn forward(&mut self, fwd: &Forward) {
        host::apply_forward(fwd);
    }

    fn resume(&mut self) {
        host::resume();
    }

    fn reply(&mut self, reply: &Reply) {
        host::send_reply(reply);
    }

    fn metrics(&mut self) -> &mut dyn MetricSink {
        self.metrics
    }
}

struct Root {
    shared: Rc<RefCell<Shared>>,
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        // Bytes: the SDK's string getter panics on a value that is not UTF-8.
        let status = hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten()
            .and_then(|s| std::str::from_utf8(&s).ok()?.parse::<u32>().ok());
        // One byte past the limit is enough for the core to say "too large" (not "not JSON").
        let body = if body_size > 0 {
            let len = body_size.min(MAX_CALL_RESPONSE_BYTES + 1);
            hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, len)
                .ok()
                .flatten()
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let shared = self.shared.clone();
        let s = &mut *shared.borrow_mut();
        let mut host = WasmHost {
            ctx: self,
            metrics: &mut s.metrics,
        };
        s.vm.on_call_response(&mut host, token_id, status, &body);
        s.metrics.flush();
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        // Follow the host's log level so debug lines cost nothing unless asked for
        // (`--component-log-level wasm:debug`).
        if let Ok(level) = hostcalls::get_log_level() {
            proxy_wasm::set_log_level(level);
        }
        let bytes = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
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
        // Egress runs on a sidecar's outbound listeners only. Gateway listeners are OUTBOUND
        // too (Istio), and there jwtRules and policies must keep running on every request.
        let read_direction = !settings.egress.is_empty() && !host::is_gateway();
        if !settings.egress.is_empty() && !read_direction {
            log::warn!("egress is configured but this proxy is an Istio gateway: egress runs only on sidecar outbound listeners and is ignored here");
        }
        log::info!(
            "configured {} jwtRules, {} policies, {} egress targets{}; signature verification: {}",
            settings.rules.len(),
            settings.policies.names().count(),
            settings.egress.len(),
            match &settings.oidc {
                Some(o) => format!(", single sign-on for client {:?}", o.client_id),
                None => String::new(),
            },
            if host_crypto {
                "host (BoringSSL)"
            } else {
                "in-wasm"
            }
        );
        let crypto: Box<dyn SignatureBackend> = if host_crypto {
            Box::new(HostCrypto { call: host_call })
        } else {
            Box::new(WasmCrypto)
        };
        if let Err(e) = hostcalls::set_tick_period(TICK) {
            log::error!("cannot set tick period: {e:?}");
            return false;
        }
        let shared = self.shared.clone();
        let s = &mut *shared.borrow_mut();
        s.metrics.register_static(settings.oidc.is_some());
        s.metrics
            .register_egress(settings.egress.iter().map(|t| t.name.as_str()));
        s.read_direction = read_direction;
        s.vm = Vm::new(Some(Engine::new(Rc::new(settings))), crypto);
        let mut host = WasmHost {
            ctx: self,
            metrics: &mut s.metrics,
        };
        s.vm.on_configure(&mut host);
        s.metrics.flush();
        true
    }

    fn on_tick(&mut self) {
        let shared = self.shared.clone();
        let s = &mut *shared.borrow_mut();
        let mut host = WasmHost {
            ctx: self,
            metrics: &mut s.metrics,
        };
        s.vm.on_tick(&mut host);
        // Counters of the requests since the last tick reach Envoy now (see `HostMetrics`).
        s.metrics.flush();
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
    fn on_done(&mut self) -> bool {
        if let Ok(mut s) = self.shared.try_borrow_mut() {
            s.vm.on_done(self.id);
        }
        true
    }
}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let shared = self.shared.clone();
        let s = &mut *shared.borrow_mut();
        let mut req = host::request_attrs(s.vm.connection_needs());
        if s.read_direction {
            req.outbound = host::outbound_listener();
        }
        let mut host = WasmHost {
            ctx: self,
            metrics: &mut s.metrics,
        };
        match s.vm.on_request(&mut host, self.id, req) {
            Verdict::Continue => Action::Continue,
            Verdict::Pause => Action::Pause,
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        // Only a request forwarded with a refreshed session has headers waiting here.
        let headers = match self.shared.try_borrow_mut() {
            Ok(mut s) => s.vm.take_response_headers(self.id),
            Err(_) => None,
        };
        for (name, value) in headers.into_iter().flatten() {
            host::add_response_header(&name, &value);
        }
        Action::Continue
    }
}
