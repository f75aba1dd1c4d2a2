//! `meshgate` command-line tool (feature `cli`; never part of the .wasm).
//!
//! `meshgate convert`: existing Istio RequestAuthentication / AuthorizationPolicy YAML in, equivalent
//! WasmPlugin(s) for the meshgate filter out. See `meshgate convert --help`.

#[path = "meshgate/convert.rs"]
mod convert;
#[path = "meshgate/yamldoc.rs"]
mod yamldoc;

use convert::{Input, Options, OutputFormat};
use std::io::{Read, Write};
use std::process::ExitCode;

const VERSION: &str = env!("CARGO_PKG_VERSION");

const USAGE: &str = "\
usage: meshgate convert [OPTIONS] [FILES...|-]
       meshgate --version | --help";

const CONVERT_HELP: &str = "\
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
  --match-mode MODE     add spec.match [{mode: MODE}]: SERVER, CLIENT or CLIENT_AND_SERVER
                        (default: no match, i.e. CLIENT_AND_SERVER)
  --merge-inherited     copy namespace-wide and mesh-wide policies into every WasmPlugin of a more specific
                        selector (as Istio merges them per workload) instead of reporting the overlap;
                        workloads that no selector matches then lose those policies
  --keep-going          convert what can be converted, report the rest; exit status still 1 on any error
  -o, --output FORMAT   yaml (default) or json (one object, or a v1 List for several)
  -h, --help            this help

exit status: 0 converted, 1 conversion errors, 2 usage or I/O errors";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("convert") => run_convert(&args[1..]),
        Some("--version" | "-V" | "version") => {
            println!("meshgate {VERSION}");
            ExitCode::SUCCESS
        }
        Some("--help" | "-h" | "help") => {
            println!("{USAGE}\n\n{CONVERT_HELP}");
            ExitCode::SUCCESS
        }
        Some(other) => usage_error(&format!("unknown command {other:?}")),
        None => usage_error("missing command"),
    }
}

fn usage_error(msg: &str) -> ExitCode {
    eprintln!("meshgate: {msg}\n{USAGE}\n(try `meshgate convert --help`)");
    ExitCode::from(2)
}

struct ConvertArgs {
    options: Options,
    files: Vec<String>,
}

enum Parsed {
    Run(ConvertArgs),
    Help,
}

fn parse_convert_args(args: &[String]) -> Result<Parsed, String> {
    let mut options = Options::new(VERSION);
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
            "--match-mode" => options.match_mode = Some(value(flag)?),
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

fn run_convert(args: &[String]) -> ExitCode {
    let parsed = match parse_convert_args(args) {
        Ok(Parsed::Help) => {
            println!("{CONVERT_HELP}");
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Run(p)) => p,
        Err(msg) => return usage_error(&msg),
    };
    let files = if parsed.files.is_empty() {
        vec!["-".to_string()]
    } else {
        parsed.files
    };
    let mut inputs = Vec::new();
    let mut stdin_used = false;
    for f in &files {
        let (label, read) = if f == "-" {
            if stdin_used {
                return usage_error("standard input (-) given twice");
            }
            stdin_used = true;
            let mut s = String::new();
            (
                "<stdin>".to_string(),
                std::io::stdin().read_to_string(&mut s).map(|_| s),
            )
        } else {
            (f.clone(), std::fs::read_to_string(f))
        };
        match read {
            Ok(text) => inputs.push(Input { label, text }),
            Err(e) => {
                eprintln!("meshgate: {label}: {e}");
                return ExitCode::from(2);
            }
        }
    }

    let outcome = convert::convert(&inputs, &parsed.options);
    let mut stderr = std::io::stderr().lock();
    for m in &outcome.messages {
        // A closed stderr is no reason to fail differently: the exit status tells.
        let _ = writeln!(stderr, "{m}");
    }
    if !outcome.stdout.is_empty() {
        let mut stdout = std::io::stdout().lock();
        if let Err(e) = stdout
            .write_all(outcome.stdout.as_bytes())
            .and_then(|()| stdout.flush())
        {
            let _ = writeln!(stderr, "meshgate: writing standard output: {e}");
            return ExitCode::from(2);
        }
    }
    if outcome.errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
