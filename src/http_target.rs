//! An http(s) URL as a `dispatch_http_call` target: the Envoy cluster Istio creates for its host and
//! port (`outbound|<port>||<host>`), the `:authority` and the `:path`. Used by the filter's
//! configuration (jwksUri, OIDC discovery), by the back-channel calls of jwks, sso and egress (their
//! headers and discovered endpoints), and by `meshgate convert` (which clusters the proxy needs).

/// An HTTP endpoint reached through an Envoy cluster with `dispatch_http_call`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    pub uri: String,
    pub cluster: String,
    pub authority: String,
    pub path: String,
}

/// Upper bound of an OpenID discovery document (Keycloak's is about 6 KiB).
pub const MAX_DISCOVERY_BYTES: usize = 64 * 1024;

impl HttpTarget {
    /// The headers of a `dispatch_http_call` to this target: the pseudo-headers, JSON accepted,
    /// meshgate as the user agent. Every back-channel call (JWKS, discovery, token) starts here.
    pub fn request_headers(&self, method: &str) -> Vec<(String, String)> {
        let scheme = if self.uri.starts_with("https") {
            "https"
        } else {
            "http"
        };
        vec![
            (":method".into(), method.into()),
            (":path".into(), self.path.clone()),
            (":authority".into(), self.authority.clone()),
            (":scheme".into(), scheme.into()),
            ("accept".into(), "application/json".into()),
            ("user-agent".into(), "meshgate".into()),
        ]
    }

    /// The headers of a form POST (RFC 6749 token requests) of `body_len` bytes.
    pub fn form_post_headers(&self, body_len: usize) -> Vec<(String, String)> {
        let mut headers = self.request_headers("POST");
        headers.push((
            "content-type".into(),
            "application/x-www-form-urlencoded".into(),
        ));
        headers.push(("content-length".into(), body_len.to_string()));
        headers
    }
}

/// The parsed OpenID discovery document (bounded), or why it is unusable.
pub fn discovery_document(body: &[u8]) -> Result<serde_json::Value, String> {
    if body.len() > MAX_DISCOVERY_BYTES {
        return Err("discovery document is too large".into());
    }
    serde_json::from_slice(body).map_err(|e| format!("discovery document is not JSON: {e}"))
}

/// The endpoint `field` (`jwks_uri`, `token_endpoint`) of a discovery document as a call target.
pub fn discovered_endpoint(
    body: &[u8],
    field: &str,
    cluster_override: Option<&str>,
) -> Result<HttpTarget, String> {
    let doc = discovery_document(body)?;
    let uri = doc
        .get(field)
        .and_then(|v| v.as_str())
        .ok_or_else(|| format!("discovery document has no {field}"))?;
    http_target(uri, cluster_override).map_err(|e| format!("discovery {field}: {e}"))
}

/// Splits an http(s) URL and names the Envoy cluster the way Istio does:
/// `outbound|<port>||<host>` (port defaults to 80/443 by scheme), unless overridden.
pub fn http_target(uri: &str, cluster_override: Option<&str>) -> Result<HttpTarget, String> {
    let (scheme, rest) = uri
        .split_once("://")
        .ok_or_else(|| format!("{uri:?} is not an absolute URL"))?;
    let default_port = match scheme {
        "http" => 80,
        "https" => 443,
        _ => return Err(format!("{uri:?}: scheme must be http or https")),
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    if authority.contains('@') {
        return Err(format!("{uri:?}: userinfo is not allowed"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{uri:?}: bad IPv6 host"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse::<u16>().map_err(|_| format!("{uri:?}: bad port"))?,
            None if after.is_empty() => default_port,
            None => return Err(format!("{uri:?}: bad host")),
        };
        (format!("[{h}]"), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                p.parse::<u16>().map_err(|_| format!("{uri:?}: bad port"))?,
            ),
            None => (authority.to_string(), default_port),
        }
    };
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b))
    {
        return Err(format!("{uri:?}: bad host"));
    }
    let host = host.to_ascii_lowercase();
    Ok(HttpTarget {
        uri: uri.to_string(),
        cluster: cluster_override
            .map(str::to_owned)
            .unwrap_or_else(|| format!("outbound|{port}||{host}")),
        authority: if port == default_port {
            host
        } else {
            format!("{host}:{port}")
        },
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names_follow_istio() {
        let t = http_target("http://keycloak.keycloak.svc.cluster.local/realms/myrealm/protocol/openid-connect/certs", None).unwrap();
        assert_eq!(
            t.cluster,
            "outbound|80||keycloak.keycloak.svc.cluster.local"
        );
        assert_eq!(t.authority, "keycloak.keycloak.svc.cluster.local");
        assert_eq!(t.path, "/realms/myrealm/protocol/openid-connect/certs");
        let t = http_target("https://idp.example.com:8443/certs?x=1", None).unwrap();
        assert_eq!(t.cluster, "outbound|8443||idp.example.com");
        assert_eq!(t.authority, "idp.example.com:8443");
        assert_eq!(t.path, "/certs?x=1");
        assert_eq!(
            http_target("https://idp/", None).unwrap().cluster,
            "outbound|443||idp"
        );
        assert_eq!(
            http_target("https://idp", Some("my-cluster"))
                .unwrap()
                .cluster,
            "my-cluster"
        );
        assert!(http_target("ftp://x/", None).is_err());
        assert!(http_target("http://u@x/", None).is_err());
        assert!(http_target("http://x:99999/", None).is_err());
    }

    #[test]
    fn call_headers_name_the_target() {
        let t = http_target("https://kc.example:8443/realms/r/token", None).unwrap();
        let h = |hs: &[(String, String)], n: &str| {
            hs.iter()
                .filter(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
                .collect::<Vec<_>>()
        };
        let get = t.request_headers("GET");
        assert_eq!(h(&get, ":method"), ["GET"]);
        assert_eq!(h(&get, ":path"), ["/realms/r/token"]);
        assert_eq!(h(&get, ":authority"), ["kc.example:8443"]);
        assert_eq!(h(&get, ":scheme"), ["https"]);
        assert_eq!(h(&get, "content-length"), Vec::<String>::new());
        let post = t.form_post_headers(17);
        assert_eq!(h(&post, ":method"), ["POST"]);
        assert_eq!(
            h(&post, "content-type"),
            ["application/x-www-form-urlencoded"]
        );
        assert_eq!(h(&post, "content-length"), ["17"]);
        let plain = http_target("http://kc/x", None).unwrap();
        assert_eq!(h(&plain.request_headers("GET"), ":scheme"), ["http"]);
    }

    #[test]
    fn discovered_endpoints_and_why_not() {
        let doc = br#"{"jwks_uri":"http://kc:8080/certs","token_endpoint":"ftp://x"}"#;
        let t = discovered_endpoint(doc, "jwks_uri", None).unwrap();
        assert_eq!(
            (t.cluster.as_str(), t.path.as_str()),
            ("outbound|8080||kc", "/certs")
        );
        assert_eq!(
            discovered_endpoint(doc, "jwks_uri", Some("c"))
                .unwrap()
                .cluster,
            "c"
        );
        assert_eq!(
            discovered_endpoint(doc, "token_endpoint", None).unwrap_err(),
            "discovery token_endpoint: \"ftp://x\": scheme must be http or https"
        );
        assert_eq!(
            discovered_endpoint(b"{}", "jwks_uri", None).unwrap_err(),
            "discovery document has no jwks_uri"
        );
        assert!(discovered_endpoint(b"<html>", "jwks_uri", None)
            .unwrap_err()
            .starts_with("discovery document is not JSON: "));
        let big = vec![b' '; MAX_DISCOVERY_BYTES + 1];
        assert_eq!(
            discovered_endpoint(&big, "jwks_uri", None).unwrap_err(),
            "discovery document is too large"
        );
    }
}
