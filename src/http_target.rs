//! An http(s) URL as a `dispatch_http_call` target: the Envoy cluster Istio creates for its host and
//! port (`outbound|<port>||<host>`), the `:authority` and the `:path`. Used by the filter's
//! configuration (jwksUri, OIDC discovery) and by `meshgate convert` (which clusters the proxy needs).

/// An HTTP endpoint reached through an Envoy cluster with `dispatch_http_call`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    pub uri: String,
    pub cluster: String,
    pub authority: String,
    pub path: String,
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
}
