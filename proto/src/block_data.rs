//! Block content as one byte string on the wire.
//!
//! Serde writes a `Vec<u8>` as a sequence of numbers, one call per byte, and reads it
//! back the same way. Postcard writes a byte string as exactly the same bytes (a varint
//! length, then the bytes) in one copy. Putting `#[serde(with = "crate::block_data")]`
//! on a block result changes the speed of the codec, not the format.

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::wire::BlockError;

struct Bytes<'a>(&'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

struct ByteBuf(Vec<u8>);

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ByteBuf;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("block content")
            }

            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v.to_vec()))
            }

            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v))
            }

            // Formats without byte strings write a sequence of numbers.
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ByteBuf, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
                while let Some(b) = seq.next_element()? {
                    out.push(b);
                }
                Ok(ByteBuf(out))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

/// `Result` as serde names its variants, with the content as a byte string.
#[derive(Serialize)]
#[serde(rename = "Result")]
enum ResultRef<'a> {
    Ok(Bytes<'a>),
    Err(&'a BlockError),
}

#[derive(Deserialize)]
#[serde(rename = "Result")]
enum ResultBuf {
    Ok(ByteBuf),
    Err(BlockError),
}

pub fn serialize<S: Serializer>(r: &Result<Vec<u8>, BlockError>, s: S) -> Result<S::Ok, S::Error> {
    match r {
        Ok(data) => ResultRef::Ok(Bytes(data)),
        Err(e) => ResultRef::Err(e),
    }
    .serialize(s)
}

pub fn deserialize<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Result<Vec<u8>, BlockError>, D::Error> {
    Ok(match ResultBuf::deserialize(d)? {
        ResultBuf::Ok(data) => Ok(data.0),
        ResultBuf::Err(e) => Err(e),
    })
}

/// A whole file's content as one byte string (`#[serde(with = "crate::block_data::bytes")]`).
pub mod bytes {
    use super::*;

    pub fn serialize<S: Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
        Bytes(data).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        Ok(ByteBuf::deserialize(d)?.0)
    }
}

/// Content that may be absent, as one byte string when present
/// (`#[serde(with = "crate::block_data::optional")]`).
pub mod optional {
    use super::*;

    pub fn serialize<S: Serializer>(data: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        data.as_deref().map(Bytes).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Ok(Option::<ByteBuf>::deserialize(d)?.map(|b| b.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Fast(#[serde(with = "super")] Result<Vec<u8>, BlockError>);

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Plain(Result<Vec<u8>, BlockError>);

    #[test]
    fn same_bytes_as_a_plain_vec() {
        for r in [
            Ok(Vec::new()),
            Ok((0..=255).collect::<Vec<u8>>()),
            Ok(vec![7; 300_000]),
            Err(BlockError::NotAvailable),
            Err(BlockError::Refused("too big".into())),
        ] {
            let fast = postcard::to_stdvec(&Fast(r.clone())).unwrap();
            let plain = postcard::to_stdvec(&Plain(r.clone())).unwrap();
            assert_eq!(fast, plain);
            assert_eq!(
                postcard::from_bytes::<Fast>(&plain).unwrap(),
                Fast(r.clone())
            );
            assert_eq!(postcard::from_bytes::<Plain>(&fast).unwrap(), Plain(r));
        }
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct FastOpt(#[serde(with = "super::optional")] Option<Vec<u8>>);

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct PlainOpt(Option<Vec<u8>>);

    #[test]
    fn optional_content_is_the_same_bytes_as_a_plain_option() {
        for o in [None, Some(Vec::new()), Some(vec![9; 70_000])] {
            let fast = postcard::to_stdvec(&FastOpt(o.clone())).unwrap();
            let plain = postcard::to_stdvec(&PlainOpt(o.clone())).unwrap();
            assert_eq!(fast, plain);
            assert_eq!(postcard::from_bytes::<FastOpt>(&plain).unwrap(), FastOpt(o));
        }
    }
}
