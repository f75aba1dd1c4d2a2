//! A host-independent view of the request: what the adapter reads from Envoy and the core decides on.

use std::net::IpAddr;

/// Request attributes, filled by the proxy-wasm adapter (or by tests).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestAttrs {
    /// `:method`.
    pub method: String,
    /// `:path` including the query string, as received.
    pub path: String,
    /// `:authority` (host header).
    pub host: String,
    /// `:scheme` ("http"/"https").
    pub scheme: String,
    /// Regular headers with lower-case names, in arrival order (a name may repeat).
    pub headers: Vec<(String, String)>,
    /// Original client address (`remote.ip`, Envoy's `source.address`): the downstream remote
    /// address as Envoy computed it (from X-Forwarded-For when the listener trusts it). Envoy does
    /// not expose the direct TCP peer to Wasm, so `source.ip`/`ipBlocks` are not supported.
    pub remote_ip: Option<IpAddr>,
    /// Local address of the connection (`destination.ip`).
    pub destination_ip: Option<IpAddr>,
    /// Local port of the connection (`destination.port`).
    pub destination_port: Option<u16>,
    /// Peer identity from mTLS: the URI SAN of the client certificate (`spiffe://td/ns/<ns>/sa/<sa>`).
    pub source_principal: Option<String>,
    /// `connection.sni`: requested server name of the downstream TLS connection.
    pub sni: Option<String>,
    /// The request is on a sidecar's outbound listener (the workload is calling out): only the
    /// egress stage runs. Set by the adapter, and only when `egress` is configured.
    pub outbound: bool,
}

impl RequestAttrs {
    /// A copy without the headers named in `without` (which are never copied: a session's
    /// cookie header can be kilobytes).
    pub fn clone_without_headers(&self, without: &[&str]) -> RequestAttrs {
        RequestAttrs {
            method: self.method.clone(),
            path: self.path.clone(),
            host: self.host.clone(),
            scheme: self.scheme.clone(),
            headers: self
                .headers
                .iter()
                .filter(|(n, _)| !without.contains(&n.as_str()))
                .cloned()
                .collect(),
            remote_ip: self.remote_ip,
            destination_ip: self.destination_ip,
            destination_port: self.destination_port,
            source_principal: self.source_principal.clone(),
            sni: self.sni.clone(),
            outbound: self.outbound,
        }
    }

    /// First value of a header (name in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The path without the query string (what AuthorizationPolicy `paths` match).
    pub fn path_only(&self) -> &str {
        match self.path.find(['?', '#']) {
            Some(i) => &self.path[..i],
            None => &self.path,
        }
    }

    /// The raw query string, without `?` ("" when none).
    pub fn query(&self) -> &str {
        match self.path.find('?') {
            Some(i) => {
                let rest = &self.path[i + 1..];
                match rest.find('#') {
                    Some(j) => &rest[..j],
                    None => rest,
                }
            }
            None => "",
        }
    }

    /// `source.namespace` derived from the peer principal (`spiffe://<td>/ns/<ns>/sa/<sa>`).
    pub fn source_namespace(&self) -> Option<&str> {
        let p = self.source_principal.as_deref()?;
        let i = p.find("/ns/")?;
        let rest = &p[i + 4..];
        Some(rest.split('/').next().unwrap_or(rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clone_without_headers_is_a_clone_minus_those_headers() {
        let req = RequestAttrs {
            method: "GET".into(),
            path: "/a?b".into(),
            host: "h".into(),
            scheme: "https".into(),
            headers: vec![
                ("cookie".into(), "a=1".into()),
                ("accept".into(), "*/*".into()),
                ("authorization".into(), "Bearer x".into()),
                ("cookie".into(), "b=2".into()),
            ],
            remote_ip: "10.0.0.1".parse().ok(),
            destination_ip: "10.0.0.2".parse().ok(),
            destination_port: Some(8080),
            source_principal: Some("spiffe://td/ns/n/sa/s".into()),
            sni: Some("h".into()),
            outbound: true,
        };
        let mut want = req.clone();
        want.headers
            .retain(|(n, _)| n != "authorization" && n != "cookie");
        assert_eq!(
            req.clone_without_headers(&["authorization", "cookie"]),
            want
        );
        assert_eq!(req.clone_without_headers(&[]), req);
    }
}
