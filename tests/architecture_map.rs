//! README.md's architecture map names every module under src/, and nothing that is gone: a file
//! `src/x.rs` has its line `x.rs`, a directory `src/d/` its line `d/` that names each of its files (or
//! one line per file, `d/f.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::Path;

/// The map's entries: first word of each line indented by two spaces → the entry's text.
fn map_entries() -> BTreeMap<String, String> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let section = readme
        .split_once("\n## Architecture\n")
        .expect("README.md has a `## Architecture` section")
        .1;
    let block = section
        .split_once("```\nsrc/\n")
        .expect("the architecture section opens a code block with `src/`")
        .1
        .split_once("```")
        .expect("the code block ends")
        .0;
    let mut entries: BTreeMap<String, String> = BTreeMap::new();
    let mut current = None;
    for line in block.lines() {
        if let Some(rest) = line.strip_prefix("  ").filter(|r| !r.starts_with(' ')) {
            let key = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            assert!(!entries.contains_key(&key), "{key} is in the map twice");
            entries.insert(key.clone(), rest.to_string());
            current = Some(key);
        } else if let Some(k) = &current {
            let text = entries.get_mut(k).unwrap();
            text.push(' ');
            text.push_str(line.trim());
        }
    }
    entries
}

fn names(dir: &Path) -> Vec<(String, bool)> {
    let mut out: Vec<(String, bool)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                e.file_type().unwrap().is_dir(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_module_is_on_the_map() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let entries = map_entries();
    let mut missing = Vec::new();
    let mut covered = Vec::new();
    for (name, is_dir) in names(&src) {
        if !is_dir {
            if entries.contains_key(&name) {
                covered.push(name);
            } else {
                missing.push(format!("src/{name}"));
            }
            continue;
        }
        let dir_entry = entries.get(&format!("{name}/"));
        if dir_entry.is_some() {
            covered.push(format!("{name}/"));
        }
        for (file, sub_dir) in names(&src.join(&name)) {
            let shown = if sub_dir { format!("{file}/") } else { file };
            let own_line = format!("{name}/{shown}");
            if entries.contains_key(&own_line) {
                covered.push(own_line);
            } else if !dir_entry.is_some_and(|t| t.contains(&shown)) {
                missing.push(format!("src/{name}/{shown}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "add to README.md's architecture map: {missing:?}"
    );
    let stale: Vec<&String> = entries.keys().filter(|k| !covered.contains(k)).collect();
    assert!(
        stale.is_empty(),
        "README.md's architecture map names what src/ does not have: {stale:?}"
    );
    // the block was found and read (a parse that finds nothing would pass the checks above vacuously)
    assert!(
        entries.contains_key("lib.rs") && entries.contains_key("authz/"),
        "{entries:?}"
    );
}
