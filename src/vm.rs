//! The per-VM runtime between the proxy-wasm adapter and the engine: paused requests, calls in
//! flight, and which request to wake when a call settles. Host-independent — the adapter
//! implements [`Host`] with proxy-wasm host calls; tests implement it in memory — so pause,
//! resume, wait expiry and call failures are tested natively.
//!
//! Calls are only ever sent from root-context callbacks (configure, tick, call response). The
//! host owns a call by the root context either way, but the SDK hands the response to the
//! context that was active when it was sent, and drops it if that request has ended meanwhile
//! (client gone, or answered). A request that needs a call queues it and asks for a tick at
//! once; the call then belongs to the root and its response always arrives.

use crate::authz::ConnectionNeeds;
use crate::calls::{CallId, HttpCall, WaitKey};
use crate::engine::{Decision, Engine, Forward, RequestState};
use crate::error::{AuthnError, Denial, Reply, ReplyOptions};
use crate::jwt::crypto::SignatureBackend;
use crate::metrics::{Metric, MetricSink};
use crate::request::RequestAttrs;
use std::collections::HashMap;

/// Paused requests per VM; beyond this, requests that need to wait fail closed at once.
pub const MAX_WAITING: usize = 4096;
/// Rounds of "send calls, wake whom their failure settles" per root callback. Each failed send
/// puts its resource in backoff, so a second round normally has nothing left to send.
const MAX_SEND_ROUNDS: usize = 4;

/// What the adapter needs from the proxy.
pub trait Host {
    fn now_ms(&self) -> u64;
    /// Sends a call; the token identifies its response. Only called from root callbacks.
    fn dispatch(&mut self, call: &HttpCall) -> Result<u32, String>;
    /// Asks for a root callback (`on_tick`) as soon as possible.
    fn tick_soon(&mut self);
    /// Back to the regular tick period after `tick_soon`.
    fn tick_regularly(&mut self);
    /// Makes the request context `ctx` the one later host calls act on; false when it is gone.
    fn enter(&mut self, ctx: u32) -> bool;
    /// Applies header changes to the current request.
    fn forward(&mut self, fwd: &Forward);
    /// Resumes the current (paused) request.
    fn resume(&mut self);
    /// Answers the current request locally.
    fn reply(&mut self, reply: &Reply);
    fn metrics(&mut self) -> &mut dyn MetricSink;
}

/// What the filter callback returns to the host for the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Continue,
    Pause,
}

struct Waiting {
    req: RequestAttrs,
    on: Vec<WaitKey>,
    deadline_ms: u64,
    /// Where the engine stopped (e.g. a callback waiting for its code exchange).
    state: RequestState,
}

/// Denials decided here, outside the engine, render with the defaults (no policy is involved).
static DEFAULT_REPLY: ReplyOptions = ReplyOptions {
    insufficient_scope_challenge: false,
    debug_headers: false,
};

pub struct Vm {
    engine: Option<Engine>,
    crypto: Box<dyn SignatureBackend>,
    waiting: HashMap<u32, Waiting>,
    /// Calls sent, by host token.
    in_flight: HashMap<u32, CallId>,
    /// Calls requests asked for, sent at the next root callback.
    queued: Vec<HttpCall>,
    tick_soon_asked: bool,
    /// Response headers of forwarded requests, added when their response headers pass
    /// (`Set-Cookie` of a refreshed session). Empty for almost every request.
    response_headers: HashMap<u32, Vec<(String, String)>>,
}

impl Vm {
    /// A VM with a configured engine (`None`: configuration was refused — every request that
    /// reaches it anyway is denied).
    pub fn new(engine: Option<Engine>, crypto: Box<dyn SignatureBackend>) -> Vm {
        Vm {
            engine,
            crypto,
            waiting: HashMap::new(),
            in_flight: HashMap::new(),
            queued: Vec::new(),
            tick_soon_asked: false,
            response_headers: HashMap::new(),
        }
    }

    pub fn engine(&self) -> Option<&Engine> {
        self.engine.as_ref()
    }

    /// Connection properties the policies read (each one is a host call per request).
    pub fn connection_needs(&self) -> ConnectionNeeds {
        self.engine
            .as_ref()
            .map(|e| e.settings.policies.connection_needs())
            .unwrap_or_default()
    }

    /// Number of paused requests.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Root callback right after configuration: fetch keys before the first request.
    pub fn on_configure(&mut self, host: &mut dyn Host) {
        self.on_tick(host);
    }

    /// A new request (its headers). Decides, or pauses it.
    pub fn on_request(&mut self, host: &mut dyn Host, ctx: u32, req: RequestAttrs) -> Verdict {
        let verdict = self.run(host, ctx, req, RequestState::default(), false);
        if !self.queued.is_empty() && !self.tick_soon_asked {
            self.tick_soon_asked = true;
            host.tick_soon();
        }
        verdict
    }

    /// The request context ended (answered, or the client went away).
    pub fn on_done(&mut self, ctx: u32) {
        if !self.waiting.is_empty() {
            if let Some(w) = self.waiting.remove(&ctx) {
                if let Some(engine) = self.engine.as_mut() {
                    engine.on_request_done(&w.state);
                }
            }
        }
        if !self.response_headers.is_empty() {
            self.response_headers.remove(&ctx);
        }
    }

    /// Headers to add to the response of request `ctx` (once; None for almost every request).
    pub fn take_response_headers(&mut self, ctx: u32) -> Option<Vec<(String, String)>> {
        if self.response_headers.is_empty() {
            return None;
        }
        self.response_headers.remove(&ctx)
    }

    /// Root tick: send queued calls, answer requests whose wait ran out, start due fetches.
    pub fn on_tick(&mut self, host: &mut dyn Host) {
        if self.tick_soon_asked {
            self.tick_soon_asked = false;
            host.tick_regularly();
        }
        let now = host.now_ms();
        self.expire_waiting(host, now);
        if let Some(engine) = self.engine.as_mut() {
            self.queued.extend(engine.on_tick(now));
        }
        self.send_queued(host);
    }

    /// A call response reached the root context (`status` None: no HTTP response).
    pub fn on_call_response(
        &mut self,
        host: &mut dyn Host,
        token: u32,
        status: Option<u32>,
        body: &[u8],
    ) {
        let Some(id) = self.in_flight.remove(&token) else {
            return;
        };
        let now = host.now_ms();
        let Some(engine) = self.engine.as_mut() else {
            return;
        };
        let outcome = engine.on_call_response(id, status, body, now, host.metrics());
        self.queued.extend(outcome.calls);
        self.wake(host, &outcome.settled);
        self.send_queued(host);
    }

    /// Sends queued calls from a root callback. A call the host refuses fails its resource at
    /// once, and the requests waiting for it are answered.
    fn send_queued(&mut self, host: &mut dyn Host) {
        for _ in 0..MAX_SEND_ROUNDS {
            if self.queued.is_empty() {
                return;
            }
            let mut settled = Vec::new();
            for call in std::mem::take(&mut self.queued) {
                match host.dispatch(&call) {
                    Ok(token) => {
                        self.in_flight.insert(token, call.id);
                    }
                    Err(why) => {
                        log::warn!(
                            "dispatch_http_call to cluster {:?} failed ({why}): the cluster must exist in this proxy (Istio names it outbound|<port>||<host>; set jwksCluster or the egress target's cluster to override)",
                            call.cluster
                        );
                        if let Some(engine) = self.engine.as_mut() {
                            let now = host.now_ms();
                            settled.extend(engine.on_call_dispatch_failed(
                                call.id,
                                now,
                                host.metrics(),
                            ));
                        }
                    }
                }
            }
            self.wake(host, &settled);
        }
        if !self.queued.is_empty() {
            log::warn!(
                "{} calls left for the next tick (the host keeps refusing them)",
                self.queued.len()
            );
        }
    }

    /// Re-runs the paused requests that wait for one of `settled`, and only those.
    fn wake(&mut self, host: &mut dyn Host, settled: &[WaitKey]) {
        if settled.is_empty() || self.waiting.is_empty() {
            return;
        }
        let ids: Vec<u32> = self
            .waiting
            .iter()
            .filter(|(_, w)| w.on.iter().any(|k| settled.contains(k)))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if !host.enter(id) {
                self.waiting.remove(&id);
                continue;
            }
            if let Some(w) = self.waiting.get_mut(&id) {
                let req = w.req.clone();
                let state = std::mem::take(&mut w.state);
                self.run(host, id, req, state, true);
            }
        }
    }

    /// Answers requests that waited longer than their rules' `timeout`.
    fn expire_waiting(&mut self, host: &mut dyn Host, now: u64) {
        if self.waiting.is_empty() {
            return;
        }
        let expired: Vec<u32> = self
            .waiting
            .iter()
            .filter(|(_, w)| now >= w.deadline_ms)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(w) = self.waiting.remove(&id) {
                if host.enter(id) {
                    log::debug!("request waited its whole timeout for {:?}", w.on);
                    self.give_up(host, &w.req, &w.on, &w.state, true);
                }
            }
        }
    }

    /// The current request cannot wait (any longer) for `on`: the engine's fallback decision
    /// (fail closed for keys; `onError` for an egress token), applied. `resumed`: it was paused.
    fn give_up(
        &mut self,
        host: &mut dyn Host,
        req: &RequestAttrs,
        on: &[WaitKey],
        state: &RequestState,
        resumed: bool,
    ) -> Verdict {
        let decision = match self.engine.as_mut() {
            Some(engine) => engine.on_wait_timeout_in(req, on, state, host.metrics()),
            None => {
                fail_closed(host, req);
                return Verdict::Pause;
            }
        };
        match decision {
            Decision::Forward(fwd) => {
                host.forward(&fwd);
                if resumed {
                    host.resume();
                }
                Verdict::Continue
            }
            Decision::Respond(reply) => {
                host.reply(&reply);
                Verdict::Pause
            }
            // Never asked to wait again; fail closed rather than hang.
            Decision::Wait(_) => {
                fail_closed(host, req);
                Verdict::Pause
            }
        }
    }

    /// Runs the engine for the request of context `ctx` and applies the decision. `resumed`:
    /// the request was paused earlier and must be resumed or answered now.
    fn run(
        &mut self,
        host: &mut dyn Host,
        ctx: u32,
        req: RequestAttrs,
        mut state: RequestState,
        resumed: bool,
    ) -> Verdict {
        let now = host.now_ms();
        let Some(engine) = self.engine.as_mut() else {
            // Not configured: never silently allow.
            self.waiting.remove(&ctx);
            fail_closed(host, &req);
            return Verdict::Pause;
        };
        match engine.on_request_in(&req, &mut state, now, self.crypto.as_ref(), host.metrics()) {
            Decision::Forward(fwd) => {
                if resumed {
                    self.waiting.remove(&ctx);
                }
                if !fwd.response_headers.is_empty() {
                    self.response_headers
                        .insert(ctx, fwd.response_headers.clone());
                }
                host.forward(&fwd);
                if resumed {
                    host.resume();
                }
                Verdict::Continue
            }
            Decision::Respond(reply) => {
                self.waiting.remove(&ctx);
                host.reply(&reply);
                Verdict::Pause
            }
            Decision::Wait(wait) => {
                self.queued.extend(wait.calls);
                if let Some(w) = self.waiting.get_mut(&ctx) {
                    // Still waiting (for another resource, or a refetch): the first deadline holds.
                    w.on = wait.on;
                    w.req = req;
                    w.state = state;
                } else if self.waiting.len() >= MAX_WAITING {
                    log::warn!("{MAX_WAITING} requests already wait; not pausing this one");
                    return self.give_up(host, &req, &wait.on, &state, false);
                } else {
                    self.waiting.insert(
                        ctx,
                        Waiting {
                            req,
                            on: wait.on,
                            deadline_ms: now.saturating_add(wait.timeout_ms),
                            state,
                        },
                    );
                }
                Verdict::Pause
            }
        }
    }
}

/// `401 Jwks remote fetch is failed` for a request that could not get keys in time, counted
/// like every other denial.
fn fail_closed(host: &mut dyn Host, req: &RequestAttrs) {
    let err = AuthnError::JwksFetchFailed;
    host.metrics().increment(Metric::Denied(err));
    host.reply(&Denial::Authn(err).to_reply(&crate::engine::realm(req), &DEFAULT_REPLY));
}
