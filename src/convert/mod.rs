//! `meshgate convert` (feature `cli`; never part of the .wasm): Istio RequestAuthentication /
//! AuthorizationPolicy objects -> meshgate WasmPlugins.
//!
//! Pure: inputs and options in, the text for stdout plus diagnostics out. Every generated pluginConfig
//! is checked with `crate::config::Settings::from_json`, the code the filter runs in `on_configure`,
//! and its error paths are mapped back to the object and field they came from.
//!
//! Grouping follows where Istio applies a policy: one WasmPlugin per (namespace, selector) or
//! (namespace, targetRefs), namespace-wide objects (no selector) give a WasmPlugin without selector,
//! and objects in the root namespace without selector a mesh-wide one. Istio merges every policy that
//! applies to a workload into one decision, but two meshgate filters on one workload decide separately
//! (and the first removes the token), so WasmPlugins that could select the same workload are an error,
//! unless `--merge-inherited` copies the namespace-wide and mesh-wide policies into the more specific
//! WasmPlugins.
//!
//! The parts, in the order a document goes through them:
//! - `yaml`: YAML stream -> numbered JSON documents (Kubernetes' scalar resolution)
//! - `shapes`: the Istio objects read and written (serde types, Istio's field lists)
//! - `translate`: one object -> a `Source` (its jwtRules or its policy), checked by the filter's parser
//! - `group`: Sources -> one group per WasmPlugin, `--merge-inherited`, names, overlapping WasmPlugins
//! - `plugin`: one group -> one checked WasmPlugin object, with notes
//! - `render`: WasmPlugins -> YAML or JSON
//! - `options`: what the command line can set

mod group;
pub mod options;
mod plugin;
mod render;
mod shapes;
mod translate;
pub mod yaml;

pub use options::{MatchMode, Options, OutputFormat};

use std::collections::HashMap;
use std::fmt;
use translate::{DocRef, Kind, Source};

pub struct Input {
    /// File name as given, or `<stdin>`.
    pub label: String,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Error,
    Note,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub level: Level,
    pub text: String,
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.level {
            Level::Error => write!(f, "error: {}", self.text),
            Level::Note => write!(f, "note: {}", self.text),
        }
    }
}

#[derive(Debug, Default)]
pub struct Outcome {
    /// Everything for standard output (empty when nothing may be written).
    pub stdout: String,
    pub messages: Vec<Message>,
    pub errors: usize,
}

/// Converts every input. Never panics on any input.
pub fn convert(inputs: &[Input], opts: &Options) -> Outcome {
    let mut cx = Converter::new(opts);
    for input in inputs {
        match yaml::parse_stream(&input.text) {
            Err(e) => cx.error(format!("{}: invalid YAML: {e}", input.label)),
            Ok(docs) => {
                for d in docs {
                    let doc = DocRef {
                        file: input.label.clone(),
                        number: d.number,
                        items: Vec::new(),
                        what: None,
                    };
                    cx.object(doc, &d.value);
                }
            }
        }
    }
    let plugins = cx.build();
    let mut out = cx.out;
    if out.errors > 0 && !opts.keep_going {
        out.messages.push(Message {
            level: Level::Note,
            text: format!(
                "{} error(s): nothing written (--keep-going converts the rest)",
                out.errors
            ),
        });
        return out;
    }
    if !plugins.is_empty() && opts.url.is_none() {
        out.messages.push(Message {
            level: Level::Note,
            text: format!(
                "spec.url is a placeholder ({}): pass --url with the image you publish",
                opts.url()
            ),
        });
    }
    for text in plugin::match_notes(&plugins, &opts.match_mode) {
        out.messages.push(Message {
            level: Level::Note,
            text,
        });
    }
    if out.errors > 0 {
        out.messages.push(Message {
            level: Level::Note,
            text: format!(
                "{} error(s): --keep-going wrote the {} WasmPlugin(s) without errors",
                out.errors,
                plugins.len()
            ),
        });
    } else if plugins.is_empty() {
        out.messages.push(Message {
            level: Level::Note,
            text: "no RequestAuthentication or AuthorizationPolicy to convert: nothing written"
                .into(),
        });
    }
    match render::render(&plugins, opts.output) {
        Ok(text) => out.stdout = text,
        Err(e) => {
            out.errors += 1;
            out.messages.push(Message {
                level: Level::Error,
                text: format!("writing the output: {e}"),
            });
        }
    }
    out
}

/// The state of one conversion; `translate`, `group` and `plugin` add its methods.
struct Converter<'a> {
    opts: &'a Options,
    out: Outcome,
    sources: Vec<Source>,
    seen: HashMap<(Kind, String, String), DocRef>,
}

impl<'a> Converter<'a> {
    fn new(opts: &'a Options) -> Converter<'a> {
        Converter {
            opts,
            out: Outcome::default(),
            sources: Vec::new(),
            seen: HashMap::new(),
        }
    }

    fn error(&mut self, text: String) {
        let m = Message {
            level: Level::Error,
            text,
        };
        if !self.out.messages.contains(&m) {
            self.out.errors += 1;
            self.out.messages.push(m);
        }
    }

    fn note(&mut self, text: String) {
        let m = Message {
            level: Level::Note,
            text,
        };
        if !self.out.messages.contains(&m) {
            self.out.messages.push(m);
        }
    }
}

/// Shared by the unit tests of the parts.
#[cfg(test)]
mod testing {
    use super::*;

    pub(super) fn options() -> Options {
        let mut o = Options::new("9.9.9");
        o.url = Some("oci://registry.test/meshgate:9.9.9".into());
        o
    }

    /// `convert` of one file named `in.yaml`.
    pub(super) fn run(yaml: &str, opts: &Options) -> Outcome {
        convert(
            &[Input {
                label: "in.yaml".into(),
                text: yaml.into(),
            }],
            opts,
        )
    }

    /// The texts of the messages of one level.
    pub(super) fn texts(out: &Outcome, level: Level) -> Vec<String> {
        out.messages
            .iter()
            .filter(|m| m.level == level)
            .map(|m| m.text.clone())
            .collect()
    }

    /// A Converter that has read `yaml` (objects translated, nothing grouped yet).
    pub(super) fn read<'a>(yaml: &str, opts: &'a Options) -> Converter<'a> {
        let mut cx = Converter::new(opts);
        for d in yaml::parse_stream(yaml).unwrap_or_default() {
            let doc = DocRef {
                file: "in.yaml".into(),
                number: d.number,
                items: Vec::new(),
                what: None,
            };
            cx.object(doc, &d.value);
        }
        cx
    }
}
