//! Raft payloads with a format version, so a build can change a command's layout and still
//! read the entries of older builds.
//!
//! A replica's `Command` and the meta's `MetaCommand` live in raft logs and travel between
//! servers of different builds during an upgrade. As plain bincode enums they carry no version:
//! a build that changed a variant would misread every entry of the old layout.
//!
//! Reading is covered; writing a newer version while older members run is not: an older build
//! refuses it (clearly). Until a cluster-wide write-version gate exists (the lowest version
//! every member reads, raised once all are upgraded), a group whose entries change layout is
//! upgraded with all its members stopped together. [`Versioned`]
//! writes the payload as an enum variant whose index is a version tag (`TAG_BASE + version`,
//! far above any enum's variant count), followed by the command in that version's layout.
//!
//! Reading accepts:
//! - the current version;
//! - the unversioned payloads of the first releases (they start with the command's own
//!   variant index, below `LEGACY_VARIANTS`): their layout is version 1's, so they are read
//!   as version 1;
//! - nothing newer: a payload of a later version fails with an error that says to upgrade this
//!   node, instead of being misread.
//!
//! To change a command's layout: keep the old enum as `CommandV1`, bump [`FORMAT_VERSION`],
//! and read version-1 tags (and legacy payloads) as `CommandV1` converted to the new type.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, IntoDeserializer, VariantAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// The format version this build writes (and the newest it reads).
pub const FORMAT_VERSION: u32 = 1;

/// Variant index of format version 0 ("WG" in the high half): version `v` is tagged
/// `TAG_BASE + v`.
const TAG_BASE: u32 = 0x5747_0000;

/// An unversioned payload starts with its command's variant index, always below this.
const LEGACY_VARIANTS: u32 = 1 << 16;

/// Variant names of the tags, for self-describing formats (bincode writes the index).
const VARIANTS: &[&str] = &["V1"];

/// A raft payload written with its format version (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T>(pub T);

impl<T> Deref for Versioned<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: Serialize> Serialize for Versioned<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_newtype_variant("Versioned", TAG_BASE + FORMAT_VERSION, VARIANTS[0], &self.0)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Versioned<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_enum("Versioned", VARIANTS, VersionedVisitor(PhantomData))
    }
}

struct VersionedVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for VersionedVisitor<T> {
    type Value = Versioned<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a versioned raft payload")
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        match data.variant_seed(TagSeed)? {
            (Tag::Version(FORMAT_VERSION), variant) => variant.newtype_variant().map(Versioned),
            (Tag::Version(v), _) => Err(de::Error::custom(format!(
                "raft payload of format version {v}; this build reads versions up to {FORMAT_VERSION}: \
                 upgrade this node"
            ))),
            // The first releases' layout is version 1's: the command itself, variant first.
            (Tag::Legacy(index), variant) => {
                T::deserialize(Replay { index, variant, lifetime: PhantomData }).map(Versioned)
            }
        }
    }
}

/// What a payload's first variant index says.
enum Tag {
    /// A tagged payload of this format version.
    Version(u32),
    /// An unversioned payload whose command has this variant index.
    Legacy(u32),
}

struct TagSeed;

impl<'de> DeserializeSeed<'de> for TagSeed {
    type Value = Tag;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Tag, D::Error> {
        d.deserialize_identifier(TagVisitor)
    }
}

struct TagVisitor;

impl Visitor<'_> for TagVisitor {
    type Value = Tag;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a format version tag or a command's variant index")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Tag, E> {
        match u32::try_from(v) {
            Ok(v) if v >= TAG_BASE => Ok(Tag::Version(v - TAG_BASE)),
            Ok(v) if v < LEGACY_VARIANTS => Ok(Tag::Legacy(v)),
            _ => Err(E::custom(format!("raft payload tag {v:#x} is neither a format version nor a command"))),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Tag, E> {
        match v.strip_prefix('V').and_then(|n| n.parse().ok()) {
            Some(version) => Ok(Tag::Version(version)),
            None => Err(E::unknown_variant(v, VARIANTS)),
        }
    }
}

/// Hands a command's derived deserializer the variant index already read from the input and
/// the rest of the input, as if it had read the index itself.
struct Replay<'de, A> {
    index: u32,
    variant: A,
    lifetime: PhantomData<&'de ()>,
}

impl<'de, A: VariantAccess<'de>> Deserializer<'de> for Replay<'de, A> {
    type Error = A::Error;

    fn deserialize_enum<Vis: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: Vis,
    ) -> Result<Vis::Value, Self::Error> {
        visitor.visit_enum(self)
    }

    fn deserialize_any<Vis: Visitor<'de>>(self, _visitor: Vis) -> Result<Vis::Value, Self::Error> {
        Err(de::Error::custom("an unversioned raft payload holds an enum"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

impl<'de, A: VariantAccess<'de>> EnumAccess<'de> for Replay<'de, A> {
    type Error = A::Error;
    type Variant = A;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, A), A::Error> {
        let index: de::value::U32Deserializer<A::Error> = self.index.into_deserializer();
        Ok((seed.deserialize(index)?, self.variant))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{decode, encode};

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    enum Sample {
        Put { key: Vec<u8>, value: Vec<u8> },
        Delete(Vec<u8>),
        Batch(Vec<Sample>),
        Nothing,
    }

    fn samples() -> Vec<Sample> {
        vec![
            Sample::Put { key: b"k".to_vec(), value: b"v".to_vec() },
            Sample::Delete(b"gone".to_vec()),
            Sample::Batch(vec![Sample::Nothing, Sample::Delete(vec![])]),
            Sample::Nothing,
        ]
    }

    #[test]
    fn a_payload_round_trips_with_its_version_tag() {
        for s in samples() {
            let bytes = encode(&Versioned(s.clone())).unwrap();
            assert_eq!(&bytes[..4], &(TAG_BASE + FORMAT_VERSION).to_le_bytes(), "{s:?}");
            assert_eq!(decode::<Versioned<Sample>>(&bytes).unwrap(), Versioned(s));
        }
    }

    /// The size computed before encoding (to refuse an entry too large for a raft message
    /// without building it) is the size encoding gives.
    #[test]
    fn the_encoded_length_is_known_before_encoding() {
        for s in samples() {
            let v = Versioned(s);
            assert_eq!(crate::raft::encoded_len(&v).unwrap(), encode(&v).unwrap().len() as u64);
        }
    }

    /// What the first releases wrote (the bare enum) still reads.
    #[test]
    fn an_unversioned_payload_reads_as_version_1() {
        for s in samples() {
            let legacy = encode(&s).unwrap();
            assert_eq!(decode::<Versioned<Sample>>(&legacy).unwrap(), Versioned(s));
        }
    }

    #[test]
    fn a_newer_version_is_refused_saying_so() {
        let mut bytes = encode(&Versioned(Sample::Nothing)).unwrap();
        bytes[..4].copy_from_slice(&(TAG_BASE + 2).to_le_bytes());
        let e = decode::<Versioned<Sample>>(&bytes).unwrap_err().to_string();
        assert!(e.contains("format version 2") && e.contains("upgrade this node"), "{e}");
        bytes[..4].copy_from_slice(&0x0100_0000u32.to_le_bytes());
        let e = decode::<Versioned<Sample>>(&bytes).unwrap_err().to_string();
        assert!(e.contains("neither a format version nor a command"), "{e}");
    }

    #[test]
    fn self_describing_formats_work_too() {
        let json = serde_json::to_string(&Versioned(Sample::Delete(vec![1]))).unwrap();
        assert_eq!(serde_json::from_str::<Versioned<Sample>>(&json).unwrap(), Versioned(Sample::Delete(vec![1])));
    }
}
