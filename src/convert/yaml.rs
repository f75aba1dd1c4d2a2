//! YAML streams -> JSON values, one per document, numbered as a reader counts them.
//!
//! Scalars are resolved as Kubernetes' YAML reader resolves them into JSON (YAML 1.1 booleans such as
//! `yes` become `true`, unquoted numbers become numbers), so a field Istio declares as a string and that
//! the API server would reject as a number is rejected here too, with its path.

use serde_json::Value;
use serde_saphyr::granit_parser::{Event, Parser};
use serde_saphyr::{DuplicateKeyPolicy, Spanned};

/// One non-empty document of a stream.
#[derive(Debug)]
pub struct Document {
    /// 1-based position in the stream, empty documents included (`---` starts a new one).
    pub number: usize,
    pub value: Value,
}

/// Parses a multi-document YAML stream. Empty and `null` documents are skipped (but counted).
/// A syntax error anywhere fails the whole stream: what follows it cannot be trusted.
pub fn parse_stream(text: &str) -> Result<Vec<Document>, String> {
    let options = serde_saphyr::options! {
        with_snippet: false,
        duplicate_keys: DuplicateKeyPolicy::Error,
    };
    let docs: Vec<Spanned<Value>> =
        serde_saphyr::from_multiple_with_options(text, options).map_err(|e| e.to_string())?;

    // Lines where documents start, empty ones included, to number documents the way people count them.
    let mut starts = Vec::new();
    for event in Parser::new_from_str(text) {
        match event {
            Ok((Event::DocumentStart(..), span)) => starts.push(span.start.line()),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(docs
        .into_iter()
        .enumerate()
        .map(|(i, d)| {
            let line = d.referenced.line() as usize;
            let by_start = starts.iter().filter(|&&s| s <= line).count();
            Document {
                number: by_start.max(i + 1),
                value: d.value,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_count_empty_documents() {
        let text = "# c\n---\n---\nkind: A\n---\n~\n---\n  kind: B\n...\n";
        let docs = parse_stream(text).unwrap();
        let got: Vec<usize> = docs.iter().map(|d| d.number).collect();
        assert_eq!(got, vec![2, 4]);
        assert_eq!(docs[1].value["kind"], "B");
    }

    #[test]
    fn implicit_first_document() {
        let docs = parse_stream("kind: A\n---\nkind: B\n").unwrap();
        assert_eq!(
            docs.iter().map(|d| d.number).collect::<Vec<_>>(),
            vec![1, 2]
        );
    }

    #[test]
    fn kubernetes_scalar_resolution() {
        let docs = parse_stream("a: [yes, '8080', 8080, 1.10, \"x\"]\n").unwrap();
        assert_eq!(
            docs[0].value["a"],
            serde_json::json!([true, "8080", 8080, 1.1, "x"])
        );
    }

    #[test]
    fn errors_have_positions() {
        let e = parse_stream("a: 1\na: 2\n").unwrap_err();
        assert!(e.contains("duplicate") && e.contains("line 2"), "{e}");
        let e = parse_stream("k: v\n  bad: x\n").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
    }
}
