//! Host calls, each wrapped so a failure is logged, never a panic.

use crate::authz::ConnectionNeeds;
use crate::engine::Forward;
use crate::error::{AuthnError, Reply, SsoError};
use crate::metrics::{
    EgressEvent, Metric, MetricSink, Slot, SsoEvent, EGRESS_KINDS, FIXED_SLOTS, POLICY_KINDS,
};
use crate::request::RequestAttrs;
use foldhash::fast::FixedState;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{MapType, MetricType};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::UNIX_EPOCH;

pub fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

fn property_string(path: &[&str]) -> Option<String> {
    let bytes = hostcalls::get_property(path.to_vec()).ok().flatten()?;
    String::from_utf8(bytes).ok().filter(|s| !s.is_empty())
}

fn property_addr(path: &[&str]) -> Option<SocketAddr> {
    let s = property_string(path)?;
    s.parse::<SocketAddr>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 0)))
}

/// Bytes as text, invalid UTF-8 sequences replaced by U+FFFD (no copy when already valid).
pub fn utf8_lossy(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Reads the request attributes the engine needs: all headers, and only the connection
/// properties some policy reads (each is a host call on the request path).
pub fn request_attrs(needs: ConnectionNeeds) -> RequestAttrs {
    let mut req = RequestAttrs::default();
    // Values as bytes: HTTP allows obs-text (0x80-0xFF) in header values, and the SDK's
    // `get_map` panics on a value that is not UTF-8 (one such request would trap the VM and
    // fail every later request). Invalid sequences become U+FFFD; a JWT is ASCII, so the
    // extracted token stops there, as Envoy's extractor stops at the first non-JWT byte.
    let map = hostcalls::get_map_bytes(MapType::HttpRequestHeaders).unwrap_or_default();
    req.headers.reserve_exact(map.len());
    for (mut name, value) in map {
        let value = utf8_lossy(value);
        match name.as_str() {
            ":method" => req.method = value,
            ":path" => req.path = value,
            ":authority" => req.host = value,
            ":scheme" => req.scheme = value,
            n if n.starts_with(':') => {}
            _ => {
                // Envoy already lower-cases header names; this only guards other hosts.
                name.make_ascii_lowercase();
                req.headers.push((name, value));
            }
        }
    }
    if needs.remote_ip {
        // Envoy's `source.address` is the downstream remote address it computed (from
        // X-Forwarded-For when the listener uses it), which is what Istio's `remote.ip` means.
        req.remote_ip = property_addr(&["source", "address"]).map(|a| a.ip());
    }
    if needs.destination {
        let destination = property_addr(&["destination", "address"]);
        req.destination_ip = destination.map(|a| a.ip());
        req.destination_port = destination.map(|a| a.port()).filter(|p| *p != 0);
    }
    if needs.source_principal {
        req.source_principal = property_string(&["connection", "uri_san_peer_certificate"]);
    }
    if needs.sni {
        req.sni = property_string(&["connection", "requested_server_name"]);
    }
    req
}

/// `config.core.v3.TrafficDirection::OUTBOUND`. Istio sets the direction on every listener it
/// generates: INBOUND on a sidecar's inbound listeners, OUTBOUND on its outbound listeners and on
/// every gateway listener.
const LISTENER_DIRECTION_OUTBOUND: i64 = 2;

/// A property under its current name (`xds.*`, Envoy 1.40) or, when that is not found, under the
/// name older Envoys used.
fn property_either(current: &[&str], older: &[&str]) -> Option<Vec<u8>> {
    hostcalls::get_property(current.to_vec())
        .ok()
        .flatten()
        .or_else(|| hostcalls::get_property(older.to_vec()).ok().flatten())
}

/// Whether the current request arrived on an OUTBOUND listener (false when the direction is
/// missing or UNSPECIFIED). Envoy exposes it to request contexts only (not at configure time),
/// so this is one host call per request — made only when `egress` is configured.
pub fn outbound_listener() -> bool {
    let Some(bytes) = property_either(&["xds", "listener_direction"], &["listener_direction"])
    else {
        return false;
    };
    // Integers come as 8 little-endian bytes.
    <[u8; 8]>::try_from(bytes.as_slice())
        .map(i64::from_le_bytes)
        .is_ok_and(|d| d == LISTENER_DIRECTION_OUTBOUND)
}

/// Whether this proxy is an Istio gateway: its node id is `router~<ip>~<pod>.<ns>~<domain>`
/// (sidecars have `sidecar~...`). Read once, at configure time.
pub fn is_gateway() -> bool {
    property_either(&["xds", "node", "id"], &["node", "id"])
        .is_some_and(|id| id.starts_with(b"router~"))
}

pub fn apply_forward(fwd: &Forward) {
    for name in &fwd.remove_headers {
        if let Err(e) = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, None) {
            log::warn!("cannot remove header {name}: {e:?}");
        }
    }
    for (name, value) in &fwd.set_headers {
        if let Err(e) = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value)) {
            log::warn!("cannot set header {name}: {e:?}");
        }
    }
}

pub fn add_response_header(name: &str, value: &str) {
    if let Err(e) = hostcalls::add_map_value(MapType::HttpResponseHeaders, name, value) {
        log::warn!("cannot add response header {name}: {e:?}");
    }
}

pub fn resume() {
    if let Err(e) = hostcalls::resume_http_request() {
        log::warn!("cannot resume request: {e:?}");
    }
}

pub fn send_reply(reply: &Reply) {
    let headers: Vec<(&str, &str)> = reply
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if let Err(e) =
        hostcalls::send_http_response(reply.status, headers, Some(reply.body.as_bytes()))
    {
        log::warn!("cannot send local reply: {e:?}");
    }
}

/// A defined proxy-wasm counter and the increments not yet handed to the host.
struct Counter {
    id: u32,
    pending: u64,
}

/// Where a metric's counter is in [`HostMetrics::counters`], once defined.
type Slots<const N: usize> = [Option<usize>; N];

/// proxy-wasm counters, defined on first use. Each is found by [`Slot`] (an array index, or the
/// policy name and kind) so counting on the request path neither formats a stat name nor makes
/// more than one lookup.
///
/// Increments are batched per VM (one VM per Envoy worker) and handed to Envoy by [`flush`] at
/// the end of every root callback — the tick comes every 0.5 s — so a counter may lag the
/// requests it counts by up to a tick (about 0.5 s; under 1 s) and the request path makes no
/// host call for counting.
///
/// [`flush`]: HostMetrics::flush
pub struct HostMetrics {
    counters: Vec<Counter>,
    fixed: Slots<{ FIXED_SLOTS + 1 }>,
    policy: HashMap<Box<str>, Slots<POLICY_KINDS>, FixedState>,
    egress: HashMap<Box<str>, Slots<EGRESS_KINDS>, FixedState>,
}

impl Default for HostMetrics {
    fn default() -> Self {
        HostMetrics {
            counters: Vec::new(),
            fixed: [None; FIXED_SLOTS + 1],
            policy: HashMap::default(),
            egress: HashMap::default(),
        }
    }
}

fn define(name: &str) -> Option<Counter> {
    match hostcalls::define_metric(MetricType::Counter, name) {
        Ok(id) => Some(Counter { id, pending: 0 }),
        Err(e) => {
            log::warn!("cannot define metric {name}: {e:?}");
            None
        }
    }
}

impl HostMetrics {
    fn counter(&mut self, metric: Metric<'_>) -> Option<&mut Counter> {
        let defined = match metric.slot() {
            Slot::Fixed(i) => self.fixed.get(i).copied().flatten(),
            Slot::Policy(p, kind) => self
                .policy
                .get(p)
                .and_then(|s| s.get(kind).copied().flatten()),
            Slot::Egress(t, kind) => self
                .egress
                .get(t)
                .and_then(|s| s.get(kind).copied().flatten()),
        };
        let index = match defined {
            Some(i) => i,
            None => self.define(metric)?,
        };
        self.counters.get_mut(index)
    }

    /// Defines a metric's counter (first use; retried on the next use if the host refused).
    fn define(&mut self, metric: Metric<'_>) -> Option<usize> {
        let slot = match metric.slot() {
            Slot::Fixed(i) => self.fixed.get_mut(i)?,
            Slot::Policy(p, kind) => self
                .policy
                .entry(p.into())
                .or_insert([None; POLICY_KINDS])
                .get_mut(kind)?,
            Slot::Egress(t, kind) => self
                .egress
                .entry(t.into())
                .or_insert([None; EGRESS_KINDS])
                .get_mut(kind)?,
        };
        self.counters.push(define(&metric.name())?);
        let index = self.counters.len() - 1;
        *slot = Some(index);
        Some(index)
    }

    /// Defines the fixed counters up front so they show up as 0 before the first event (the
    /// single sign-on ones only when it is configured).
    pub fn register_static(&mut self, sso: bool) {
        let fixed = [
            Metric::Allowed,
            Metric::JwksFetchOk,
            Metric::JwksFetchFailed,
            Metric::TokenCacheHit,
            Metric::TokenCacheMiss,
        ];
        for m in fixed
            .into_iter()
            .chain(AuthnError::ALL.into_iter().map(Metric::Denied))
        {
            self.counter(m);
        }
        if sso {
            for m in SsoEvent::ALL
                .into_iter()
                .map(Metric::Sso)
                .chain(SsoError::ALL.into_iter().map(Metric::SsoDenied))
            {
                self.counter(m);
            }
        }
    }

    /// Defines every counter of these egress targets up front (0 before the first event).
    pub fn register_egress<'a>(&mut self, targets: impl Iterator<Item = &'a str>) {
        for t in targets {
            for e in EgressEvent::ALL {
                self.counter(Metric::Egress(t, e));
            }
        }
    }

    /// Hands the batched increments to Envoy: one host call per counter that changed.
    pub fn flush(&mut self) {
        for c in self.counters.iter_mut().filter(|c| c.pending > 0) {
            if let Err(e) = hostcalls::increment_metric(c.id, c.pending as i64) {
                log::warn!("cannot increment metric {}: {e:?}", c.id);
            }
            c.pending = 0;
        }
    }
}

impl MetricSink for HostMetrics {
    fn increment(&mut self, metric: Metric<'_>) {
        if let Some(c) = self.counter(metric) {
            c.pending += 1;
        }
    }
}
