//! `meshgate convert`'s input (`meshgate::convert`, behind the `cli` feature): any text as a
//! Kubernetes YAML stream. The converter never panics, and every WasmPlugin it writes without an
//! error carries a pluginConfig the filter loads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshgate::config::Settings;
use meshgate::convert::{self, Input, Options, OutputFormat};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data).into_owned();
    let inputs = [Input {
        label: "fuzz.yaml".into(),
        text,
    }];
    let mut options = Options::new("0.0.0");
    let _ = convert::convert(&inputs, &options);
    options.output = OutputFormat::Json;
    let out = convert::convert(&inputs, &options);
    if out.errors > 0 || out.stdout.is_empty() {
        return;
    }
    let Ok(doc) = serde_json::from_str::<Value>(&out.stdout) else {
        panic!("-o json wrote something that is not JSON: {}", out.stdout);
    };
    let plugins = match doc.get("items") {
        Some(Value::Array(items)) => items.clone(),
        _ => vec![doc],
    };
    for p in plugins {
        let config = p["spec"]["pluginConfig"].to_string();
        if let Err(e) = Settings::from_json(config.as_bytes()) {
            panic!("a converted pluginConfig does not load: {e:?}\n{config}");
        }
    }
});
