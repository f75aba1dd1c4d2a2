//! Golden-file tests of `meshgate convert`: `cargo test --features cli --test converter` (Cargo.toml
//! declares the target with `required-features = ["cli"]`: without the feature it is not built at all).
//!
//! Every directory under tests/converter/ is one case: `args` (one argument per line; run with the case
//! directory as working directory), optional `stdin`, and the expected `expected.out` (stdout),
//! `expected.err` (stderr) and `expected.exit` (exit status). `UPDATE_GOLDEN=1` rewrites the expected
//! files from the current output (review the diff).
//!
//! Beyond byte equality: every WasmPlugin written is parsed back and its pluginConfig accepted by
//! `Settings::from_json` (what the filter runs), JSON and YAML output agree, and the JSON twins of
//! inputs (used by tests/e2e/test_converter_differential.py, which has no YAML parser) match the YAML.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshgate::config::Settings;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_meshgate");

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/converter")
}

struct Run {
    stdout: String,
    stderr: String,
    code: i32,
}

/// The crate version appears in generated comments and the default URL; goldens say `<version>`.
fn unversion(s: String) -> String {
    s.replace(env!("CARGO_PKG_VERSION"), "<version>")
}

fn run(dir: &Path, args: &[String], stdin: Option<Vec<u8>>) -> Run {
    let mut child = Command::new(BIN)
        .arg("convert")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run meshgate");
    {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(&stdin.unwrap_or_default()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    Run {
        stdout: unversion(String::from_utf8(out.stdout).expect("stdout is UTF-8")),
        stderr: unversion(String::from_utf8(out.stderr).expect("stderr is UTF-8")),
        code: out.status.code().expect("exit status"),
    }
}

fn case_args(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("args"))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

fn run_case(dir: &Path) -> Run {
    run(dir, &case_args(dir), std::fs::read(dir.join("stdin")).ok())
}

/// The WasmPlugin objects of a YAML or JSON output.
fn plugins(stdout: &str) -> Vec<Value> {
    if stdout.trim_start().starts_with('{') {
        let v: Value = serde_json::from_str(stdout).unwrap();
        return match v.get("kind").and_then(Value::as_str) {
            Some("List") => v["items"].as_array().unwrap().clone(),
            _ => vec![v],
        };
    }
    serde_saphyr::from_multiple::<Value>(stdout).unwrap()
}

fn check_plugins(name: &str, stdout: &str) {
    for p in plugins(stdout) {
        assert_eq!(p["apiVersion"], "extensions.istio.io/v1alpha1", "{name}");
        assert_eq!(p["kind"], "WasmPlugin", "{name}");
        let spec = &p["spec"];
        assert_eq!(
            (spec["phase"].as_str(), spec["failStrategy"].as_str()),
            (Some("AUTHN"), Some("FAIL_CLOSE")),
            "{name}"
        );
        assert_eq!(spec["pluginName"], "meshgate", "{name}");
        assert!(
            spec["url"].as_str().is_some_and(|u| !u.is_empty()),
            "{name}"
        );
        // istiod hands the filter spec.pluginConfig as JSON: it must load
        let config = serde_json::to_vec(&spec["pluginConfig"]).unwrap();
        if let Err(e) = Settings::from_json(&config) {
            panic!(
                "{name}: {}/{}: pluginConfig rejected by the filter: {e:?}",
                p["metadata"]["namespace"], p["metadata"]["name"]
            );
        }
    }
}

#[test]
fn golden_cases() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(cases_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("args").is_file())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 10, "golden cases missing: {dirs:?}");
    let mut failures = Vec::new();
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let got = run_case(dir);
        if update {
            std::fs::write(dir.join("expected.out"), &got.stdout).unwrap();
            std::fs::write(dir.join("expected.err"), &got.stderr).unwrap();
            std::fs::write(dir.join("expected.exit"), format!("{}\n", got.code)).unwrap();
        }
        let want_out = std::fs::read_to_string(dir.join("expected.out")).unwrap_or_default();
        let want_err = std::fs::read_to_string(dir.join("expected.err")).unwrap_or_default();
        let want_code: i32 = std::fs::read_to_string(dir.join("expected.exit"))
            .unwrap_or_default()
            .trim()
            .parse()
            .unwrap_or(-1);
        if got.stdout != want_out {
            failures.push(format!(
                "{name}: stdout differs\n--- want\n{want_out}\n--- got\n{}",
                got.stdout
            ));
        }
        if got.stderr != want_err {
            failures.push(format!(
                "{name}: stderr differs\n--- want\n{want_err}\n--- got\n{}",
                got.stderr
            ));
        }
        if got.code != want_code {
            failures.push(format!(
                "{name}: exit status {} (want {want_code})",
                got.code
            ));
        }
        // Invariants of every case, whatever the golden files say.
        assert!(!got.stderr.contains("panicked"), "{name}: {}", got.stderr);
        match got.code {
            0 => assert!(
                !got.stderr.contains("error: "),
                "{name}: exit 0 with errors"
            ),
            1 => {
                assert!(
                    got.stderr.contains("error: "),
                    "{name}: exit 1 without an error"
                );
                let keep_going = case_args(dir).iter().any(|a| a == "--keep-going");
                assert_eq!(
                    got.stdout.is_empty(),
                    !keep_going,
                    "{name}: nothing is written on errors unless --keep-going"
                );
            }
            2 => assert!(got.stdout.is_empty(), "{name}"),
            other => panic!("{name}: exit status {other}"),
        }
        check_plugins(&name, &got.stdout);
    }
    assert!(
        failures.is_empty(),
        "{} golden mismatch(es) (UPDATE_GOLDEN=1 to accept):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn json_output_equals_yaml_output() {
    let dir = cases_dir().join("reference");
    let yaml = run(&dir, &["input.yaml".into()], None);
    let json = run(
        &dir,
        &["-o".into(), "json".into(), "input.yaml".into()],
        None,
    );
    assert_eq!((yaml.code, json.code), (0, 0));
    assert_eq!(plugins(&yaml.stdout), plugins(&json.stdout));
    let many = run(
        &cases_dir().join("multi-selector"),
        &["--output=json".into(), "input.yaml".into()],
        None,
    );
    let v: Value = serde_json::from_str(&many.stdout).unwrap();
    assert_eq!(
        (v["apiVersion"].as_str(), v["kind"].as_str()),
        (Some("v1"), Some("List"))
    );
    assert_eq!(v["items"].as_array().unwrap().len(), 4);
}

/// `input.json` next to an `input.yaml` is the same objects for a reader without YAML (the Python
/// differential test reads the reference inputs that way).
#[test]
fn json_twins_match_yaml() {
    let mut twins = 0;
    for entry in std::fs::read_dir(cases_dir()).unwrap() {
        let dir = entry.unwrap().path();
        let Ok(json) = std::fs::read_to_string(dir.join("input.json")) else {
            continue;
        };
        let yaml: Vec<Value> =
            serde_saphyr::from_multiple(&std::fs::read_to_string(dir.join("input.yaml")).unwrap())
                .unwrap();
        let json: Vec<Value> = serde_json::from_str(&json).unwrap();
        assert_eq!(yaml, json, "{}", dir.display());
        twins += 1;
    }
    assert!(
        twins >= 2,
        "reference/input.json and actions/input.json are used by tests/e2e"
    );
}

#[test]
fn stdin_and_file_agree() {
    let dir = cases_dir().join("reference");
    let text = std::fs::read(dir.join("input.yaml")).unwrap();
    let from_file = run(&dir, &["input.yaml".into()], None);
    let from_stdin = run(&dir, &[], Some(text.clone()));
    let from_dash = run(&dir, &["-".into()], Some(text));
    assert_eq!(from_stdin.code, 0, "{}", from_stdin.stderr);
    assert_eq!(plugins(&from_file.stdout), plugins(&from_stdin.stdout));
    assert_eq!(from_stdin.stdout, from_dash.stdout);
    assert!(from_stdin
        .stdout
        .contains("#   <stdin>: doc 1 (RequestAuthentication backend/backend-jwt)"));
}

#[test]
fn generated_output_converts_to_nothing_new() {
    // Feeding WasmPlugins back in: ignored with a note, nothing to convert, exit 0.
    let dir = cases_dir().join("reference");
    let first = run(&dir, &["input.yaml".into()], None);
    let again = run(&dir, &[], Some(first.stdout.into_bytes()));
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(again.stdout.is_empty());
    assert!(
        again
            .stderr
            .contains("ignored: WasmPlugin (extensions.istio.io/v1alpha1)"),
        "{}",
        again.stderr
    );
}

#[test]
fn usage_errors_exit_2() {
    let dir = cases_dir().join("reference");
    for args in [
        vec!["--sha256", "abc", "input.yaml"],
        vec!["--url", "ftp://x/y", "input.yaml"],
        vec!["--name", "Not_A_Name", "input.yaml"],
        vec!["--match-mode", "INBOUND", "input.yaml"],
        vec!["--output", "xml", "input.yaml"],
        vec!["--bogus", "input.yaml"],
        vec!["no-such-file.yaml"],
        vec![
            "--url",
            "oci://r/m@sha256:aaaa",
            "--sha256",
            &"b".repeat(64),
            "input.yaml",
        ],
    ] {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let r = run(&dir, &args, None);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(r.stdout.is_empty(), "{args:?}");
    }
    let help = run(&dir, &["--help".into()], None);
    assert_eq!(help.code, 0);
    assert!(help.stdout.contains("usage: meshgate convert"));
}

#[test]
fn garbage_never_panics() {
    let dir = cases_dir();
    let inputs: [&[u8]; 12] = [
        b"",
        b"---\n---\n",
        b"- 1\n- 2\n",
        b"just a string\n",
        b"kind: AuthorizationPolicy\n",
        b"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: x}\nspec: []\n",
        b"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: x}\nspec: {rules: [null, 1, {from: [{}]}]}\n",
        b"apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: x}\nspec: {jwtRules: [null, [], {issuer: 1}]}\n",
        b"apiVersion: v1\nkind: List\nitems: [1, {kind: List, apiVersion: v1, items: [{}]}]\n",
        b"a: &a [*a]\n",
        b"\xff\xfe\x00",
        b"a: !!binary aGVsbG8=\nb: !custom {x: 1}\n",
    ];
    for input in inputs {
        let r = run(&dir, &[], Some(input.to_vec()));
        assert!(
            matches!(r.code, 0..=2),
            "{input:?}: {} {}",
            r.code,
            r.stderr
        );
        assert!(!r.stderr.contains("panicked"), "{input:?}: {}", r.stderr);
    }
}

/// The default `match` is the only difference to `--match-mode none` (the output of earlier versions):
/// `[{mode: SERVER}]` exactly on WasmPlugins whose selector is not a gateway's.
#[test]
fn default_match_is_server_for_workload_selectors_only() {
    let (mut checked, mut server) = (0, 0);
    for case in [
        "reference",
        "multi-selector",
        "merge-inherited",
        "mesh-wide",
        "gateways",
        "targetrefs",
    ] {
        let dir = cases_dir().join(case);
        let args = case_args(&dir);
        let auto = run(&dir, &args, None);
        let none_args = [vec!["--match-mode".into(), "none".into()], args].concat();
        let none = run(&dir, &none_args, None);
        assert_eq!(
            (auto.code, none.code),
            (0, 0),
            "{case}: {}{}",
            auto.stderr,
            none.stderr
        );
        let (auto, none) = (plugins(&auto.stdout), plugins(&none.stdout));
        assert_eq!(auto.len(), none.len(), "{case}");
        for (mut a, n) in auto.into_iter().zip(none) {
            let labels = a["spec"]["selector"]["matchLabels"].as_object().cloned();
            let gateway = labels.as_ref().is_some_and(|l| {
                l.contains_key("istio")
                    || l.contains_key("gateway.networking.k8s.io/gateway-name")
                    || l.get("app")
                        .and_then(Value::as_str)
                        .is_some_and(|v| v.contains("gateway"))
            });
            let want = match (labels, gateway) {
                (Some(_), false) => serde_json::json!([{"mode": "SERVER"}]),
                _ => Value::Null,
            };
            server += usize::from(!want.is_null());
            let spec = a["spec"].as_object_mut().unwrap();
            assert_eq!(
                spec.remove("match").unwrap_or(Value::Null),
                want,
                "{case}: {}",
                a["metadata"]
            );
            assert_eq!(a, n, "{case}");
            checked += 1;
        }
    }
    // 1 + 4 + 2 + 1 + 4 + 1 WasmPlugins, 6 of them for workload selectors
    assert_eq!((checked, server), (13, 6));
}
