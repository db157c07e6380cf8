//! The digest a bulk-load or backup directory records for each file, and the streaming hasher
//! that checks it.
//!
//! Two kinds: **md5**, what DESIGN §5 asks of every bulk-load producer, and **xxh3** (XXH3,
//! 64 bits), what backups write. md5 runs at ~0.7 GB/s a core here; a restore hashes every byte
//! on every replica, and md5 was half of its CPU. XXH3 runs at memory speed and catches the
//! damage a file digest is for (a transfer or a disk that changed bytes); neither is a defence
//! against a forger, who could rewrite the metadata too.
//!
//! In JSON a file names its digest by key (`"md5"` or `"xxh3"`). In the raft log (bincode) a
//! file keeps the layout of the releases that knew only md5, three fields, the third a string:
//! an md5 is its 32 hex digits as before, an xxh3 is `xxh3:` and 16 hex digits. So entries
//! written before this change read unchanged, and no format version is needed. The other way
//! round, a build from before reads an xxh3 entry but cannot check its files (no md5 matches
//! `xxh3:…`): a restore, whose files are listed by xxh3, wants every replica server upgraded.

use std::fmt;

use md5::Digest as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::WingError;

/// The prefix of an xxh3 digest in the raft log's layout.
const XXH3_WIRE_PREFIX: &str = "xxh3:";

/// Which function a digest is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestKind {
    /// MD5: 16 bytes, 32 hex digits.
    Md5,
    /// XXH3, 64 bits: 16 hex digits.
    Xxh3,
}

impl DigestKind {
    /// The JSON key naming it, and how errors call it.
    pub fn name(self) -> &'static str {
        match self {
            DigestKind::Md5 => "md5",
            DigestKind::Xxh3 => "xxh3",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            DigestKind::Md5 => 32,
            DigestKind::Xxh3 => 16,
        }
    }
}

/// A file's digest as its metadata records it: the kind and its hex digits (lowercase when
/// computed here; compared without regard to case, as producers may write either).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDigest {
    kind: DigestKind,
    hex: String,
}

impl FileDigest {
    /// A digest of `kind` with digits `hex`, refused unless it has that kind's length and
    /// only hex digits.
    pub fn new(kind: DigestKind, hex: impl Into<String>) -> Result<Self, WingError> {
        let hex = hex.into();
        if hex.len() != kind.hex_len() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(WingError::InvalidArgument(format!(
                "{} '{}' is not {} hex digits",
                kind.name(),
                hex.escape_default(),
                kind.hex_len()
            )));
        }
        Ok(Self { kind, hex })
    }

    /// The md5 of `data`.
    pub fn md5_of(data: &[u8]) -> Self {
        Self::of(DigestKind::Md5, data)
    }

    /// The `kind` digest of `data`.
    pub fn of(kind: DigestKind, data: &[u8]) -> Self {
        let mut h = ContentHasher::new(kind);
        h.update(data);
        h.finish()
    }

    /// Its kind.
    pub fn kind(&self) -> DigestKind {
        self.kind
    }

    /// Its hex digits, as recorded.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// Whether `other` is the same digest (same kind, same digits in any case).
    pub fn matches(&self, other: &FileDigest) -> bool {
        self.kind == other.kind && self.hex.eq_ignore_ascii_case(&other.hex)
    }

    /// A hasher of the same kind, to check content against this digest.
    pub fn hasher(&self) -> ContentHasher {
        ContentHasher::new(self.kind)
    }

    /// The raft-log form: the md5's digits, or `xxh3:` and the digits.
    fn to_wire(&self) -> String {
        match self.kind {
            DigestKind::Md5 => self.hex.clone(),
            DigestKind::Xxh3 => format!("{XXH3_WIRE_PREFIX}{}", self.hex),
        }
    }

    /// Reads the raft-log form. Not checked: log entries were checked before they were
    /// proposed, and refusing one now would stop the replica; a malformed digest simply never
    /// matches a file.
    fn from_wire(s: String) -> Self {
        match s.strip_prefix(XXH3_WIRE_PREFIX) {
            Some(hex) => Self { kind: DigestKind::Xxh3, hex: hex.to_string() },
            None => Self { kind: DigestKind::Md5, hex: s },
        }
    }
}

impl fmt::Display for FileDigest {
    /// `md5 5d41…` / `xxh3 9555…`, for messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind.name(), self.hex)
    }
}

/// Hashes content as it streams, by the function of one [`DigestKind`].
#[derive(Clone)]
pub enum ContentHasher {
    /// MD5.
    Md5(md5::Md5),
    /// XXH3-64 (boxed: its state is over half a kilobyte).
    Xxh3(Box<xxhash_rust::xxh3::Xxh3>),
}

impl ContentHasher {
    /// A hasher of `kind`.
    pub fn new(kind: DigestKind) -> Self {
        match kind {
            DigestKind::Md5 => ContentHasher::Md5(md5::Md5::new()),
            DigestKind::Xxh3 => ContentHasher::Xxh3(Box::default()),
        }
    }

    /// Adds `data`.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            ContentHasher::Md5(h) => h.update(data),
            ContentHasher::Xxh3(h) => h.update(data),
        }
    }

    /// The digest of everything added so far (the hasher can go on).
    pub fn digest(&self) -> FileDigest {
        match self {
            ContentHasher::Md5(h) => {
                FileDigest { kind: DigestKind::Md5, hex: crate::bulk_load::hex(&h.clone().finalize()) }
            }
            ContentHasher::Xxh3(h) => FileDigest { kind: DigestKind::Xxh3, hex: format!("{:016x}", h.digest()) },
        }
    }

    /// The digest of everything added.
    pub fn finish(self) -> FileDigest {
        self.digest()
    }
}

/// The size and `kind` digest of the file at `path`, read in 1 MiB chunks (blocking).
pub fn digest_file(path: &std::path::Path, kind: DigestKind) -> std::io::Result<(u64, FileDigest)> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = ContentHasher::new(kind);
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok((size, hasher.finish())),
            Ok(n) => {
                hasher.update(&buf[..n]);
                size += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// One file of a partition's `bulk_load_metadata`: its name, size and digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMeta {
    /// File name inside the partition directory (e.g. `0.sst`).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Digest of the content.
    pub digest: FileDigest,
}

/// The JSON form: the digest under its kind's key.
#[derive(Serialize, Deserialize)]
struct FileMetaJson {
    name: String,
    size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    md5: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    xxh3: Option<String>,
}

/// The raft-log form (bincode): the layout of the md5-only releases.
#[derive(Serialize, Deserialize)]
struct FileMetaWire {
    name: String,
    size: u64,
    digest: String,
}

impl Serialize for FileMeta {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (name, size) = (self.name.clone(), self.size);
        if s.is_human_readable() {
            let hex = Some(self.digest.hex.clone());
            let (md5, xxh3) = match self.digest.kind {
                DigestKind::Md5 => (hex, None),
                DigestKind::Xxh3 => (None, hex),
            };
            FileMetaJson { name, size, md5, xxh3 }.serialize(s)
        } else {
            FileMetaWire { name, size, digest: self.digest.to_wire() }.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for FileMeta {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        if !d.is_human_readable() {
            let w = FileMetaWire::deserialize(d)?;
            return Ok(FileMeta { name: w.name, size: w.size, digest: FileDigest::from_wire(w.digest) });
        }
        let j = FileMetaJson::deserialize(d)?;
        // Where a producer wrote both, the cheaper one is checked.
        let digest = match (j.xxh3, j.md5) {
            (Some(hex), _) => FileDigest::new(DigestKind::Xxh3, hex),
            (None, Some(hex)) => FileDigest::new(DigestKind::Md5, hex),
            (None, None) => {
                return Err(D::Error::custom(format!(
                    "file '{}' has neither an md5 nor an xxh3",
                    j.name.escape_default()
                )))
            }
        }
        .map_err(|e| D::Error::custom(format!("file '{}': {}", j.name.escape_default(), e.message())))?;
        Ok(FileMeta { name: j.name, size: j.size, digest })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests() {
        assert_eq!(FileDigest::md5_of(b"hello").to_string(), "md5 5d41402abc4b2a76b9719d911017c592");
        // XXH3-64 of the empty input and of "hello", seed 0 (the reference implementation's).
        assert_eq!(FileDigest::of(DigestKind::Xxh3, b"").hex(), "2d06800538d394c2");
        assert_eq!(FileDigest::of(DigestKind::Xxh3, b"hello").hex(), "9555e8555c62dcfd");
        let mut h = ContentHasher::new(DigestKind::Xxh3);
        h.update(b"hel");
        h.update(b"lo");
        assert!(h.finish().matches(&FileDigest::new(DigestKind::Xxh3, "9555E8555C62DCFD").unwrap()));
        assert!(!FileDigest::md5_of(b"hello").matches(&FileDigest::of(DigestKind::Xxh3, b"hello")));
    }

    #[test]
    fn json_names_the_digest_by_key() {
        let md5: FileMeta =
            serde_json::from_str(r#"{"name":"0.sst","size":5,"md5":"5d41402abc4b2a76b9719d911017c592"}"#).unwrap();
        assert_eq!(md5.digest.kind(), DigestKind::Md5);
        let xxh3 = FileMeta { name: "1.sst".into(), size: 5, digest: FileDigest::of(DigestKind::Xxh3, b"hello") };
        let json = serde_json::to_string(&xxh3).unwrap();
        assert_eq!(json, r#"{"name":"1.sst","size":5,"xxh3":"9555e8555c62dcfd"}"#);
        assert_eq!(serde_json::from_str::<FileMeta>(&json).unwrap(), xxh3);
        // Both: the xxh3 is the one checked.
        let both: FileMeta = serde_json::from_str(
            r#"{"name":"0.sst","size":5,"md5":"5d41402abc4b2a76b9719d911017c592","xxh3":"9555e8555c62dcfd"}"#,
        )
        .unwrap();
        assert_eq!(both.digest.kind(), DigestKind::Xxh3);
        let none = serde_json::from_str::<FileMeta>(r#"{"name":"0.sst","size":5}"#).unwrap_err().to_string();
        assert!(none.contains("neither an md5 nor an xxh3"), "{none}");
        let short = serde_json::from_str::<FileMeta>(r#"{"name":"0.sst","size":5,"xxh3":"abc"}"#).unwrap_err();
        assert!(short.to_string().contains("xxh3 'abc' is not 16 hex digits"), "{short}");
    }

    /// The raft log holds `IngestSst` entries written by md5-only releases: their bytes must
    /// read as the same files, and an md5 file must still write them byte for byte.
    #[test]
    fn the_raft_log_layout_is_the_md5_only_releases_one() {
        #[derive(Serialize, Deserialize)]
        struct OldFileMeta {
            name: String,
            size: u64,
            md5: String,
        }
        let old = OldFileMeta { name: "0.sst".into(), size: 5, md5: "5d41402abc4b2a76b9719d911017c592".into() };
        let old_bytes = bincode::serialize(&old).unwrap();
        let read: FileMeta = bincode::deserialize(&old_bytes).unwrap();
        assert_eq!(read.digest, FileDigest::md5_of(b"hello"));
        assert_eq!(bincode::serialize(&read).unwrap(), old_bytes);
        let xxh3 = FileMeta { name: "0.sst".into(), size: 5, digest: FileDigest::of(DigestKind::Xxh3, b"hello") };
        let bytes = bincode::serialize(&xxh3).unwrap();
        assert_eq!(bincode::deserialize::<FileMeta>(&bytes).unwrap(), xxh3);
        let as_old: OldFileMeta = bincode::deserialize(&bytes).unwrap();
        assert_eq!(as_old.md5, "xxh3:9555e8555c62dcfd", "an older build sees a digest no file matches");
    }
}
