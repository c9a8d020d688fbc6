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
}
