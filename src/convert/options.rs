//! What `meshgate convert` can be told: the options, their checks, and the command line that sets them.

pub const HELP: &str = "\
meshgate convert: Istio RequestAuthentication + AuthorizationPolicy -> meshgate WasmPlugin(s)

usage: meshgate convert [OPTIONS] [FILES...|-]

Reads Kubernetes YAML (multi-document; also `kind: List`) from FILES, or standard input when no file or `-`
is given. security.istio.io/v1 and v1beta1 RequestAuthentication and AuthorizationPolicy objects are
converted; other kinds are ignored with a note. Writes one extensions.istio.io/v1alpha1 WasmPlugin per
(namespace, workload selector / targetRefs) to standard output: phase AUTHN, failStrategy FAIL_CLOSE,
pluginName meshgate, pluginConfig {jwtRules, policies}. The generated pluginConfig is checked with the
filter's own configuration parser.

Anything that cannot be expressed (CUSTOM policies, unsupported fields or condition keys, unknown fields,
workloads that two WasmPlugins would select, ...) is an error naming the file, document and field path.
On any error nothing is written and the exit status is 1, unless --keep-going.

options:
  --name N              WasmPlugin name (default: meshgate). With several WasmPlugins in one namespace the
                        namespace-wide one is N and the others N-<selector values>.
  --namespace NS        namespace of objects without metadata.namespace (default: default)
  --root-namespace NS   Istio root namespace: policies there without selector are mesh-wide
                        (default: istio-system)
  --url URL             WasmPlugin spec.url: oci://, https://, http:// or file://
                        (default: oci://registry.local/meshgate:<version>, a placeholder)
  --sha256 HEX          WasmPlugin spec.sha256 (64 hex digits)
  --match-mode MODE     spec.match of the WasmPlugins (default: auto)
                          auto   [{mode: SERVER}] for workload selectors: the filter runs on requests the
                                 sidecars receive, where Istio applies these policies, and not on the
                                 requests they send. No match for selectors of gateways (label istio, a
                                 gateway-name label, app=*gateway*: gateway listeners are CLIENT, SERVER would
                                 never run there), for targetRefs, and for objects without selector (they may
                                 select gateways too)
                          none   no match on any WasmPlugin (Istio's default, CLIENT_AND_SERVER), as
                                 earlier versions of meshgate convert wrote them
                          SERVER | CLIENT | CLIENT_AND_SERVER   that mode on every WasmPlugin
                        The mode only chooses the listeners the filter is on: its key fetches go to the
                        proxy's clusters in every mode (checked against istio/istio#53612, see istio/README.md)
  --merge-inherited     copy namespace-wide and mesh-wide policies into every WasmPlugin of a more specific
                        selector (as Istio merges them per workload) instead of reporting the overlap;
                        workloads that no selector matches then lose those policies
  --keep-going          convert what can be converted, report the rest; exit status still 1 on any error
  -o, --output FORMAT   yaml (default) or json (one object, or a v1 List for several)
  -h, --help            this help

exit status: 0 converted, 1 conversion errors, 2 usage or I/O errors";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Yaml,
    Json,
}

/// `spec.match` of the generated WasmPlugins (`--match-mode`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatchMode {
    /// `[{mode: SERVER}]` for workload selectors; no match for gateway selectors, targetRefs and
    /// objects without selector.
    Auto,
    /// No `match` anywhere (Istio's default, CLIENT_AND_SERVER).
    None,
    /// `SERVER`, `CLIENT` or `CLIENT_AND_SERVER` on every WasmPlugin.
    Every(String),
}

impl MatchMode {
    pub fn parse(s: &str) -> Result<MatchMode, String> {
        match s.to_ascii_uppercase().as_str() {
            "AUTO" => Ok(MatchMode::Auto),
            "NONE" => Ok(MatchMode::None),
            m @ ("SERVER" | "CLIENT" | "CLIENT_AND_SERVER") => Ok(MatchMode::Every(m.to_string())),
            _ => Err(format!(
                "--match-mode {s:?}: must be auto, none, SERVER, CLIENT or CLIENT_AND_SERVER"
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub version: &'static str,
    pub name: String,
    pub default_namespace: String,
    pub root_namespace: String,
    pub url: Option<String>,
    pub sha256: Option<String>,
    pub match_mode: MatchMode,
    pub merge_inherited: bool,
    pub keep_going: bool,
    pub output: OutputFormat,
}

impl Options {
    pub fn new(version: &'static str) -> Options {
        Options {
            version,
            name: "meshgate".into(),
            default_namespace: "default".into(),
            root_namespace: "istio-system".into(),
            url: None,
            sha256: None,
            match_mode: MatchMode::Auto,
            merge_inherited: false,
            keep_going: false,
            output: OutputFormat::Yaml,
        }
    }

    /// Checks and normalizes the options; the message is for a usage error.
    pub fn validate(&mut self) -> Result<(), String> {
        if !is_dns_subdomain(&self.name) {
            return Err(format!(
                "--name {:?}: must be a lower-case DNS subdomain (a-z, 0-9, '-', '.')",
                self.name
            ));
        }
        for (flag, ns) in [
            ("--namespace", &self.default_namespace),
            ("--root-namespace", &self.root_namespace),
        ] {
            if !is_dns_label(ns) {
                return Err(format!(
                    "{flag} {ns:?}: must be a DNS label (a-z, 0-9, '-', at most 63)"
                ));
            }
        }
        if let Some(h) = &self.sha256 {
            let h = h.to_ascii_lowercase();
            if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("--sha256 {h:?}: must be 64 hex digits"));
            }
            self.sha256 = Some(h);
        }
        if let Some(url) = &self.url {
            if let Some((scheme, rest)) = url.split_once("://") {
                if !["oci", "http", "https", "file"].contains(&scheme) || rest.is_empty() {
                    return Err(format!(
                        "--url {url:?}: scheme must be oci://, https://, http:// or file://"
                    ));
                }
            } else if url.is_empty() {
                return Err("--url must not be empty".into());
            }
            if let (Some((_, digest)), Some(sha)) = (url.split_once("@sha256:"), &self.sha256) {
                if !digest.eq_ignore_ascii_case(sha) {
                    return Err(format!(
                        "--sha256 differs from the digest in --url {url:?} (Istio rejects that)"
                    ));
                }
            }
        }
        Ok(())
    }

    pub(super) fn url(&self) -> String {
        self.url
            .clone()
            .unwrap_or_else(|| format!("oci://registry.local/meshgate:{}", self.version))
    }
}

/// A `meshgate convert` command line, parsed.
pub struct ConvertArgs {
    pub options: Options,
    /// Input files as given; `-` is standard input (none given: standard input).
    pub files: Vec<String>,
}

pub enum Parsed {
    Run(ConvertArgs),
    Help,
}

/// Parses the arguments after `convert`; the error is a usage error.
pub fn parse_args(args: &[String], version: &'static str) -> Result<Parsed, String> {
    let mut options = Options::new(version);
    let mut files = Vec::new();
    let mut only_files = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if only_files || arg == "-" || !arg.starts_with('-') {
            files.push(arg.clone());
            continue;
        }
        if arg == "--" {
            only_files = true;
            continue;
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value")),
            }
        };
        match flag {
            "-h" | "--help" => return Ok(Parsed::Help),
            "--name" => options.name = value(flag)?,
            "--namespace" | "-n" => options.default_namespace = value(flag)?,
            "--root-namespace" => options.root_namespace = value(flag)?,
            "--url" => options.url = Some(value(flag)?),
            "--sha256" => options.sha256 = Some(value(flag)?),
            "--match-mode" => options.match_mode = MatchMode::parse(&value(flag)?)?,
            "--merge-inherited" => options.merge_inherited = true,
            "--keep-going" | "-k" => options.keep_going = true,
            "-o" | "--output" => {
                options.output = match value(flag)?.as_str() {
                    "yaml" => OutputFormat::Yaml,
                    "json" => OutputFormat::Json,
                    other => return Err(format!("--output must be yaml or json, not {other:?}")),
                }
            }
            other => return Err(format!("unknown option {other:?}")),
        }
        if inline.is_some() && matches!(flag, "--merge-inherited" | "--keep-going" | "--help") {
            return Err(format!("{flag} takes no value"));
        }
    }
    options.validate()?;
    Ok(Parsed::Run(ConvertArgs { options, files }))
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn is_dns_label(s: &str) -> bool {
    s.len() <= 63 && !s.contains('.') && is_dns_subdomain(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn run_args(a: &[&str]) -> ConvertArgs {
        match parse_args(&args(a), "1.2.3") {
            Ok(Parsed::Run(r)) => r,
            Ok(Parsed::Help) => panic!("{a:?}: help"),
            Err(e) => panic!("{a:?}: {e}"),
        }
    }

    fn usage_error(a: &[&str]) -> String {
        match parse_args(&args(a), "1.2.3") {
            Err(e) => e,
            Ok(_) => panic!("{a:?} was accepted"),
        }
    }

    #[test]
    fn flags_values_and_files() {
        let r = run_args(&[
            "a.yaml",
            "--name=gate",
            "-n",
            "apps",
            "--root-namespace",
            "mesh-root",
            "-o",
            "json",
            "-",
            "--keep-going",
            "--merge-inherited",
            "--",
            "--not-a-flag.yaml",
        ]);
        assert_eq!(r.files, args(&["a.yaml", "-", "--not-a-flag.yaml"]));
        let o = &r.options;
        assert_eq!(
            (o.name.as_str(), o.default_namespace.as_str()),
            ("gate", "apps")
        );
        assert_eq!(o.root_namespace, "mesh-root");
        assert_eq!(o.output, OutputFormat::Json);
        assert!(o.keep_going && o.merge_inherited);
        assert_eq!(o.version, "1.2.3");
        assert_eq!(o.url(), "oci://registry.local/meshgate:1.2.3");
    }

    #[test]
    fn help_wins() {
        assert!(matches!(
            parse_args(&args(&["x.yaml", "--help"]), "1"),
            Ok(Parsed::Help)
        ));
        assert!(HELP.starts_with("meshgate convert: "));
    }

    #[test]
    fn usage_errors_say_what_is_wrong() {
        assert_eq!(usage_error(&["--name"]), "--name needs a value");
        assert_eq!(
            usage_error(&["--keep-going=yes"]),
            "--keep-going takes no value"
        );
        assert_eq!(usage_error(&["--bogus"]), "unknown option \"--bogus\"");
        assert_eq!(
            usage_error(&["--output", "xml"]),
            "--output must be yaml or json, not \"xml\""
        );
        assert_eq!(
            usage_error(&["--name", "Not_A_Name"]),
            "--name \"Not_A_Name\": must be a lower-case DNS subdomain (a-z, 0-9, '-', '.')"
        );
        assert_eq!(
            usage_error(&["-n", "a.b"]),
            "--namespace \"a.b\": must be a DNS label (a-z, 0-9, '-', at most 63)"
        );
        assert_eq!(
            usage_error(&["--url", "ftp://x/y"]),
            "--url \"ftp://x/y\": scheme must be oci://, https://, http:// or file://"
        );
        assert_eq!(
            usage_error(&["--sha256", "abc"]),
            "--sha256 \"abc\": must be 64 hex digits"
        );
        let b = "b".repeat(64);
        assert_eq!(
            usage_error(&["--url", "oci://r/m@sha256:aaaa", "--sha256", &b]),
            "--sha256 differs from the digest in --url \"oci://r/m@sha256:aaaa\" (Istio rejects that)"
        );
    }

    #[test]
    fn sha256_is_normalized_and_may_repeat_the_url_digest() {
        let upper = "AB".repeat(32);
        let url = format!("oci://r/m:1@sha256:{}", "ab".repeat(32));
        let r = run_args(&["--url", &url, "--sha256", &upper]);
        assert_eq!(r.options.sha256, Some("ab".repeat(32)));
        assert_eq!(r.options.url(), url);
    }

    #[test]
    fn dns_names() {
        assert!(is_dns_subdomain("a.b-c"));
        assert!(!is_dns_subdomain("-a") && !is_dns_subdomain("a.") && !is_dns_subdomain(""));
        assert!(!is_dns_subdomain(&"a".repeat(254)));
        assert!(is_dns_label(&"a".repeat(63)) && !is_dns_label(&"a".repeat(64)));
        assert!(!is_dns_label("a.b"));
    }
}
