//! What the assignment endpoints share about requests: body limits, content
//! types, the checks on units and segments, and JSON strings that borrow from
//! the request body instead of copying it.

use std::{borrow::Cow, fmt};

use axum::{
    body::Bytes,
    extract::rejection::{BytesRejection, FailedToBufferBody},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{
    Deserialize, Deserializer, Serialize,
    de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor},
};

/// The largest request body read, in bytes; larger ones get 413.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;

/// The longest unit id, in characters: the CRD's limit for override units
/// (OpenAPI `maxLength` counts characters, not bytes), so that any unit an
/// override can name can be asked for.
pub(crate) const MAX_UNIT_CHARS: usize = 256;

/// The most segments one request may carry; each costs a hash lookup.
pub(crate) const MAX_SEGMENTS: usize = 64;

/// The longest segment name, in characters: the CRD's limit for override
/// segments. A longer one could never match, so it is refused rather than
/// silently ignored.
pub(crate) const MAX_SEGMENT_CHARS: usize = 63;

/// Why a request body could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BodyError {
    /// Over [`MAX_BODY_BYTES`].
    TooLarge,
    /// The connection failed while the body was read.
    Unreadable,
}

impl BodyError {
    /// The HTTP status for this failure.
    pub fn status(self) -> StatusCode {
        match self {
            BodyError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Unreadable => StatusCode::BAD_REQUEST,
        }
    }
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::TooLarge => write!(
                f,
                "the request body is larger than {} KiB: send fewer units per request",
                MAX_BODY_BYTES / 1024
            ),
            BodyError::Unreadable => {
                f.write_str("the request body could not be read: send it again")
            }
        }
    }
}

/// The body as read by axum's `Bytes` extractor (which applies the
/// `DefaultBodyLimit` layer), with its rejection sorted into our errors.
pub(crate) fn read_body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, BodyError> {
    match body {
        Ok(bytes) => Ok(bytes),
        Err(BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_))) => {
            Err(BodyError::TooLarge)
        }
        Err(_) => Err(BodyError::Unreadable),
    }
}

/// Whether the request says its body is JSON (`application/json`, or an
/// `application/*+json` type, any parameters); `None` without a
/// `Content-Type`.
pub(crate) fn declares_json(headers: &HeaderMap) -> Option<bool> {
    let value = headers.get(header::CONTENT_TYPE)?;
    let Ok(text) = value.to_str() else {
        return Some(false);
    };
    let essence = text.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return Some(false);
    };
    Some(
        kind.eq_ignore_ascii_case("application")
            && (subtype.eq_ignore_ascii_case("json")
                || subtype
                    .get(subtype.len().saturating_sub(5)..)
                    .is_some_and(|suffix| suffix.eq_ignore_ascii_case("+json"))),
    )
}

/// Whether `body` starts, after whitespace, with `{`: serde accepts a JSON
/// array for a struct (by position), which no client means.
pub(crate) fn is_json_object(body: &[u8]) -> bool {
    body.iter()
        .find(|byte| !byte.is_ascii_whitespace())
        .is_some_and(|byte| *byte == b'{')
}

/// Splits a URL query (`application/x-www-form-urlencoded`) into its pairs,
/// refusing any name or value whose bytes are not UTF-8. The usual decoders
/// replace such bytes with U+FFFD, which would make distinct units (Latin-1
/// `M%FCller` and `M%E4ller`) the same one; JSON bodies refuse them, and so
/// does this. The error names the parameter for the caller.
pub(crate) fn decode_query(query: Option<&str>) -> Result<Vec<(String, String)>, String> {
    let Some(query) = query else {
        return Ok(Vec::new());
    };
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = percent_decode(name).map_err(|_| {
                "a query parameter name is not UTF-8 once percent-decoded: encode text as UTF-8 before percent-encoding it".to_owned()
            })?;
            let value = percent_decode(value).map_err(|_| {
                format!(
                    "{name} is not UTF-8 once percent-decoded: encode text as UTF-8 before percent-encoding it"
                )
            })?;
            Ok((name, value))
        })
        .collect()
}

/// Decodes `+` and `%XX` as forms do; a `%` not followed by two hex digits
/// stands for itself.
fn percent_decode(text: &str) -> Result<String, std::string::FromUtf8Error> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        let escaped = (byte == b'%')
            .then(|| bytes.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (byte, escaped) {
            (_, Some(value)) => {
                decoded.push(value);
                index += 3;
            }
            (b'+', None) => {
                decoded.push(b' ');
                index += 1;
            }
            (other, None) => {
                decoded.push(other);
                index += 1;
            }
        }
    }
    String::from_utf8(decoded)
}

/// Why a unit id is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UnitError {
    /// The empty string.
    Empty,
    /// Longer than [`MAX_UNIT_CHARS`]; carries its length in characters.
    TooLong(usize),
}

impl fmt::Display for UnitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnitError::Empty => f.write_str(
                "is empty: pass the id of the unit (customer, device or session) to assign",
            ),
            UnitError::TooLong(length) => write!(
                f,
                "is {length} characters long; unit ids are at most {MAX_UNIT_CHARS} characters"
            ),
        }
    }
}

/// Checks a unit id.
pub(crate) fn check_unit(unit: &str) -> Result<(), UnitError> {
    if unit.is_empty() {
        return Err(UnitError::Empty);
    }
    // A string of at most MAX_UNIT_CHARS bytes has at most as many
    // characters, so the count is only taken for long ids.
    if unit.len() > MAX_UNIT_CHARS {
        let length = unit.chars().count();
        if length > MAX_UNIT_CHARS {
            return Err(UnitError::TooLong(length));
        }
    }
    Ok(())
}

/// Checks a request's segments, naming the problem in a sentence.
pub(crate) fn check_segments<S: AsRef<str>>(segments: &[S]) -> Result<(), String> {
    if segments.len() > MAX_SEGMENTS {
        return Err(format!(
            "{} segments were sent; at most {MAX_SEGMENTS} are accepted: send only those the unit belongs to",
            segments.len()
        ));
    }
    for segment in segments {
        let segment = segment.as_ref();
        if segment.is_empty() {
            return Err("a segment is empty: segment names are at least 1 character".to_owned());
        }
        let length = segment.chars().count();
        if length > MAX_SEGMENT_CHARS {
            return Err(format!(
                "a segment is {length} characters long; segment names are at most {MAX_SEGMENT_CHARS} characters"
            ));
        }
    }
    Ok(())
}

/// A JSON response from bytes serialized beforehand.
pub(crate) fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// Serializes `value` as a JSON response. Serializing our own response types
/// cannot fail (string keys, no custom serializers); should it, the client
/// gets a 500 that says so rather than a dropped connection.
pub(crate) fn to_json_response(status: StatusCode, value: &impl Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => json_response(status, body),
        Err(error) => {
            tracing::error!(%error, "cannot serialize a response");
            json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                br#"{"error":"the server could not serialize its answer; please report this"}"#
                    .to_vec(),
            )
        }
    }
}

/// A JSON string that borrows from the request body unless it holds escapes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Text<'a>(pub Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(text)))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(text.to_owned())))
            }
            fn visit_string<E: de::Error>(self, text: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(text)))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

/// Any JSON value, keeping only what an evaluation context attribute needs:
/// strings (borrowed where possible), lists, and the kind of anything else
/// for error messages. Objects are skipped without being stored.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Attribute<'a> {
    /// `null`.
    Null,
    /// A string.
    Text(Cow<'a, str>),
    /// A list.
    List(Vec<Attribute<'a>>),
    /// Anything else: "a boolean", "a number", "an object".
    Other(&'static str),
}

impl Attribute<'_> {
    /// What kind of JSON value this is, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Attribute::Null => "null",
            Attribute::Text(_) => "a string",
            Attribute::List(_) => "a list",
            Attribute::Other(kind) => kind,
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Attribute<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AttributeVisitor;
        impl<'de> Visitor<'de> for AttributeVisitor {
            type Value = Attribute<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Attribute::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Attribute::Null)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Attribute::Other("a boolean"))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Attribute::Other("a number"))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Attribute::Other("a number"))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Attribute::Other("a number"))
            }
            fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
                Ok(Attribute::Text(Cow::Borrowed(text)))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
                Ok(Attribute::Text(Cow::Owned(text.to_owned())))
            }
            fn visit_string<E: de::Error>(self, text: String) -> Result<Self::Value, E> {
                Ok(Attribute::Text(Cow::Owned(text)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(16));
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Attribute::List(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Attribute::Other("an object"))
            }
        }
        deserializer.deserialize_any(AttributeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types_are_recognised() {
        let headers = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            headers
        };
        assert_eq!(declares_json(&headers("application/json")), Some(true));
        assert_eq!(
            declares_json(&headers("Application/JSON; charset=utf-8")),
            Some(true)
        );
        assert_eq!(
            declares_json(&headers("application/merge-patch+json")),
            Some(true)
        );
        assert_eq!(declares_json(&headers("text/plain")), Some(false));
        assert_eq!(
            declares_json(&headers("application/x-www-form-urlencoded")),
            Some(false)
        );
        assert_eq!(declares_json(&headers("json")), Some(false));
        assert_eq!(declares_json(&HeaderMap::new()), None);
    }

    #[test]
    fn only_objects_count_as_json_objects() {
        assert!(is_json_object(b"  \n{\"a\": 1}"));
        assert!(!is_json_object(b"[1]"));
        assert!(!is_json_object(b""));
        assert!(!is_json_object(b"null"));
    }

    #[test]
    fn queries_decode_as_forms_and_refuse_bytes_that_are_not_utf8() {
        let pairs = |query| decode_query(Some(query)).expect("decodes");
        assert_eq!(
            pairs("unit=M%C3%BCller&segment=a+b&&segment=%zz&flag"),
            vec![
                ("unit".to_owned(), "Müller".to_owned()),
                ("segment".to_owned(), "a b".to_owned()),
                ("segment".to_owned(), "%zz".to_owned()),
                ("flag".to_owned(), String::new()),
            ]
        );
        assert_eq!(decode_query(None), Ok(Vec::new()));
        assert_eq!(
            pairs("unit=100%25"),
            vec![("unit".to_owned(), "100%".to_owned())]
        );
        // Latin-1 bytes are not replaced (which would make these two the
        // same unit) but refused.
        let error = decode_query(Some("realm=NA&unit=M%FCller")).expect_err("not UTF-8");
        assert!(error.starts_with("unit is not UTF-8"), "{error}");
        assert!(decode_query(Some("unit=M%E4ller")).is_err());
        assert!(decode_query(Some("%FF=1")).is_err());
        // A truncated escape at the end stands for itself.
        assert_eq!(
            pairs("unit=a%4"),
            vec![("unit".to_owned(), "a%4".to_owned())]
        );
    }

    #[test]
    fn units_are_checked_for_length() {
        assert_eq!(check_unit("customer-1"), Ok(()));
        assert_eq!(check_unit(""), Err(UnitError::Empty));
        assert_eq!(check_unit(&"u".repeat(MAX_UNIT_CHARS)), Ok(()));
        assert_eq!(
            check_unit(&"u".repeat(MAX_UNIT_CHARS + 1)),
            Err(UnitError::TooLong(MAX_UNIT_CHARS + 1))
        );
        // Characters, as the CRD counts them: 256 three-byte characters are
        // 768 bytes and still a valid unit.
        assert_eq!(check_unit(&"顧".repeat(256)), Ok(()));
        assert_eq!(check_unit(&"顧".repeat(257)), Err(UnitError::TooLong(257)));
        assert!(
            UnitError::TooLong(300)
                .to_string()
                .contains("at most 256 characters")
        );
    }

    #[test]
    fn segments_are_checked_for_count_and_length() {
        assert_eq!(check_segments(&["beta", "staff"]), Ok(()));
        assert_eq!(check_segments::<&str>(&[]), Ok(()));
        assert!(check_segments(&[""]).is_err());
        assert_eq!(check_segments(&["é".repeat(63)]), Ok(()));
        assert!(check_segments(&["s".repeat(64)]).is_err());
        let many: Vec<String> = (0..65).map(|i| format!("s{i}")).collect();
        let error = check_segments(&many).expect_err("too many");
        assert!(error.contains("at most 64"), "{error}");
    }

    #[test]
    fn text_borrows_unless_escaped() {
        let plain: Text = serde_json::from_str(r#""customer-1""#).expect("a string");
        assert!(matches!(plain.0, Cow::Borrowed("customer-1")));
        let escaped: Text = serde_json::from_str(r#""caf\u00e9""#).expect("a string");
        assert_eq!(escaped.0, "café");
        assert!(serde_json::from_str::<Text>("42").is_err());
    }

    #[test]
    fn attributes_keep_strings_and_lists_and_name_the_rest() {
        let parsed: Vec<Attribute> =
            serde_json::from_str(r#"["NA", null, true, 1.5, -3, {"a": [1]}, ["beta", 2]]"#)
                .expect("a list");
        assert_eq!(
            parsed,
            vec![
                Attribute::Text(Cow::Borrowed("NA")),
                Attribute::Null,
                Attribute::Other("a boolean"),
                Attribute::Other("a number"),
                Attribute::Other("a number"),
                Attribute::Other("an object"),
                Attribute::List(vec![
                    Attribute::Text(Cow::Borrowed("beta")),
                    Attribute::Other("a number")
                ]),
            ]
        );
        assert_eq!(parsed[6].kind(), "a list");
    }

    #[test]
    fn body_errors_have_statuses_and_sentences() {
        assert_eq!(BodyError::TooLarge.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(BodyError::TooLarge.to_string().contains("64 KiB"));
        assert_eq!(BodyError::Unreadable.status(), StatusCode::BAD_REQUEST);
    }
}
