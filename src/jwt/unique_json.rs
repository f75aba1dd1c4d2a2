//! JSON objects whose member names are unique at every depth, for the JOSE header and the claims.
//!
//! RFC 7515 §4 and RFC 7519 §4 let a recipient either reject duplicate member names or keep the
//! lexically last one. serde_json keeps the last one, while jwt-compact's typed fields (`exp`,
//! `kid`, ...) reject a repeated name — so, left alone, `{"iss":"a","iss":"b"}` would pass as
//! `b` while `{"exp":1,"exp":2}` fails, and a backend reading the forwarded token with a
//! first-wins parser would see another identity than the one meshgate checked. Envoy's
//! jwt_verify_lib parses into a protobuf `Struct` and rejects any repeated name
//! (google/jwt_verify_lib#63); meshgate does the same, with Envoy's reasons (`Jwt header is an
//! invalid JSON`, `Jwt payload is an invalid JSON`).
//!
//! The depth stays bounded by serde_json's recursion limit (128): these visitors only ever run
//! inside a serde_json parse (directly, or over the content serde buffered for a `flatten`).

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Number, Value};
use std::fmt;

/// A JSON object with no repeated member name at any depth.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UniqueObject(pub Map<String, Value>);

impl<'de> Deserialize<'de> for UniqueObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ObjectVisitor).map(UniqueObject)
    }
}

/// Deserializes any JSON value, rejecting repeated member names in every object.
#[derive(Clone, Copy)]
pub struct UniqueValue;

impl<'de> DeserializeSeed<'de> for UniqueValue {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

/// The members of one object, in order; an error names the first repeated one.
pub fn unique_members<'de, A: MapAccess<'de>>(mut map: A) -> Result<Map<String, Value>, A::Error> {
    let mut out = Map::new();
    while let Some(name) = map.next_key::<String>()? {
        let value = map.next_value_seed(UniqueValue)?;
        if out.contains_key(&name) {
            return Err(de::Error::custom(format_args!(
                "duplicate member name {name:?}"
            )));
        }
        out.insert(name, value);
    }
    Ok(out)
}

struct ObjectVisitor;

impl<'de> Visitor<'de> for ObjectVisitor {
    type Value = Map<String, Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        unique_members(map)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // As serde_json's own `Value`: a non-finite float (never produced by its parser) is null.
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(v) = seq.next_element_seed(UniqueValue)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Value, A::Error> {
        unique_members(map).map(Value::Object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Map<String, Value>, String> {
        serde_json::from_str::<UniqueObject>(s)
            .map(|o| o.0)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn same_values_as_serde_json_without_duplicates() {
        let text = r#"{"a":1,"b":-2,"c":1.5,"d":"x\u00e9","e":[true,null,{"f":[]}],"g":{},"h":18446744073709551615}"#;
        let want: Map<String, Value> = serde_json::from_str(text).unwrap();
        assert_eq!(parse(text).unwrap(), want);
    }

    #[test]
    fn a_repeated_name_at_any_depth_is_an_error() {
        for text in [
            r#"{"iss":"a","iss":"b"}"#,
            r#"{"a":{"r":1,"r":2}}"#,
            r#"{"a":[{"x":{"y":1,"y":1}}]}"#,
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.starts_with("duplicate member name"), "{text}: {err}");
        }
        // The same name in different objects is fine.
        assert!(parse(r#"{"a":{"x":1},"b":{"x":1},"x":[{"x":1},{"x":2}]}"#).is_ok());
    }

    #[test]
    fn not_an_object_and_deep_nesting_are_errors() {
        assert!(parse("[]").is_err());
        assert!(parse("1").is_err());
        let deep = format!(r#"{{"a":{}1{}}}"#, "[".repeat(100), "]".repeat(100));
        assert!(parse(&deep).is_ok());
        let deep = format!(r#"{{"a":{}1{}}}"#, "[".repeat(5000), "]".repeat(5000));
        assert!(parse(&deep).unwrap_err().contains("recursion limit"));
    }
}
