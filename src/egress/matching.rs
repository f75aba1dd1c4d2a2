//! Which outbound requests a target covers: `:authority` against `hosts`, the path (without the
//! query) against `paths`. Compiled once; matching is plain byte comparisons.

/// A `hosts` entry: `backend`, `backend.demo.svc.cluster.local:8080`, `*.demo.svc.cluster.local`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostPattern {
    name: HostName,
    /// `None`: any port (and none). `Some`: only an `:authority` with exactly this port.
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostName {
    /// Lower case.
    Exact(String),
    /// `*.suffix`: the lower-case `.suffix`; the name must be longer than it.
    Suffix(String),
}

/// Splits `host[:port]` (`[v6]:port` too). `None` when the port is not a number.
fn split_authority(a: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if a.starts_with('[') {
        match a.find(']') {
            Some(i) => (&a[..=i], a[i + 1..].strip_prefix(':')),
            None => (a, None),
        }
    } else {
        match a.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (a, None),
        }
    };
    match port {
        None => Some((host, None)),
        Some(p) => Some((host, Some(p.parse::<u16>().ok()?))),
    }
}

impl HostPattern {
    pub(crate) fn parse(s: &str) -> Result<HostPattern, String> {
        if s.is_empty() {
            return Err("must not be empty".into());
        }
        if s.contains("://") || s.contains('/') || s.chars().any(char::is_whitespace) {
            return Err(format!(
                "{s:?}: must be a host name, optionally with :port (not a URL)"
            ));
        }
        let (host, port) = split_authority(s).ok_or_else(|| format!("{s:?}: bad port"))?;
        if port == Some(0) {
            return Err(format!("{s:?}: bad port"));
        }
        let host = host.to_ascii_lowercase();
        let name = if host == "*" {
            return Err(format!(
                "{s:?}: a bare * would send the token to every host; list the hosts or use *.suffix"
            ));
        } else if let Some(suffix) = host.strip_prefix("*.") {
            if suffix.is_empty() || suffix.contains('*') {
                return Err(format!("{s:?}: only one leading *. wildcard is supported"));
            }
            HostName::Suffix(format!(".{suffix}"))
        } else if host.contains('*') {
            return Err(format!("{s:?}: only a leading *. wildcard is supported"));
        } else {
            HostName::Exact(host)
        };
        let valid = |h: &str| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b))
        };
        let ok = match &name {
            HostName::Exact(h) => valid(h),
            HostName::Suffix(h) => valid(&h[1..]),
        };
        if !ok {
            return Err(format!("{s:?}: bad host name"));
        }
        Ok(HostPattern { name, port })
    }

    pub(crate) fn matches(&self, authority: &str) -> bool {
        let Some((host, port)) = split_authority(authority) else {
            return false;
        };
        if self.port.is_some() && self.port != port {
            return false;
        }
        match &self.name {
            HostName::Exact(h) => host.eq_ignore_ascii_case(h),
            HostName::Suffix(x) => {
                host.len() > x.len()
                    && host.as_bytes()[host.len() - x.len()..].eq_ignore_ascii_case(x.as_bytes())
            }
        }
    }
}

/// A `paths` entry in Istio's syntax: exact, `prefix*`, `*suffix`, or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PathPattern {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Any,
}

impl PathPattern {
    pub(crate) fn parse(s: &str) -> Result<PathPattern, String> {
        let p = if s == "*" {
            PathPattern::Any
        } else if let Some(x) = s.strip_prefix('*') {
            PathPattern::Suffix(x.to_string())
        } else if let Some(x) = s.strip_suffix('*') {
            PathPattern::Prefix(x.to_string())
        } else {
            PathPattern::Exact(s.to_string())
        };
        let inner = match &p {
            PathPattern::Exact(x) | PathPattern::Prefix(x) | PathPattern::Suffix(x) => x.as_str(),
            PathPattern::Any => "",
        };
        if inner.contains('*') {
            return Err(format!(
                "{s:?}: * is only allowed at the start or the end (Istio path syntax)"
            ));
        }
        if matches!(p, PathPattern::Exact(_) | PathPattern::Prefix(_)) && !s.starts_with('/') {
            return Err(format!("{s:?}: must start with /"));
        }
        Ok(p)
    }

    pub(crate) fn matches(&self, path: &str) -> bool {
        match self {
            PathPattern::Exact(x) => path == x,
            PathPattern::Prefix(x) => path.starts_with(x.as_str()),
            PathPattern::Suffix(x) => path.ends_with(x.as_str()),
            PathPattern::Any => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(p: &str, a: &str) -> bool {
        HostPattern::parse(p).unwrap().matches(a)
    }

    #[test]
    fn exact_hosts_with_and_without_port() {
        assert!(host("backend", "backend"));
        assert!(
            host("backend", "backend:8080"),
            "no port in the pattern: any port"
        );
        assert!(host("backend", "BACKEND:80"));
        assert!(!host("backend", "backend.demo"));
        assert!(!host("backend", "xbackend"));
        assert!(host("backend:8080", "backend:8080"));
        assert!(!host("backend:8080", "backend:80"));
        assert!(
            !host("backend:8080", "backend"),
            "a port in the pattern must be in the authority"
        );
        assert!(host(
            "Backend.Demo.svc.cluster.local",
            "backend.demo.svc.cluster.local"
        ));
        assert!(host("[::1]:8080", "[::1]:8080"));
        assert!(!host("[::1]:8080", "[::1]"));
        assert!(!host("backend", "backend:notaport"));
    }

    #[test]
    fn wildcard_suffix_hosts() {
        assert!(host(
            "*.demo.svc.cluster.local",
            "backend.demo.svc.cluster.local"
        ));
        assert!(host(
            "*.demo.svc.cluster.local",
            "a.b.demo.svc.cluster.local:80"
        ));
        assert!(!host("*.demo.svc.cluster.local", "demo.svc.cluster.local"));
        assert!(!host("*.demo.svc.cluster.local", "xdemo.svc.cluster.local"));
        assert!(host("*.demo:8080", "backend.demo:8080"));
        assert!(!host("*.demo:8080", "backend.demo:80"));
    }

    #[test]
    fn bad_host_patterns() {
        for bad in [
            "",
            "*",
            "*:80",
            "a*b",
            "*.",
            "http://backend",
            "backend/x",
            "b c",
            "backend:0",
            "backend:99999",
            "*.*.x",
            "bäck",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn paths_in_istio_syntax() {
        let m = |p: &str, path: &str| PathPattern::parse(p).unwrap().matches(path);
        assert!(m("/data", "/data"));
        assert!(!m("/data", "/data/1"));
        assert!(m("/api/*", "/api/x"));
        assert!(!m("/api/*", "/api"));
        assert!(m("*.json", "/a/b.json"));
        assert!(m("*", "/anything"));
        for bad in ["/a*b", "data", "x*", "**x*"] {
            assert!(PathPattern::parse(bad).is_err(), "{bad:?}");
        }
    }
}
