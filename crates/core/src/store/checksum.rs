//! The checksum a block's trailer records over the block's bytes, and the
//! two kinds of it a store may hold.
//!
//! Blocks written since issue 14 record an XXH3-128 of their bytes; older
//! blocks record a SHA-256, and are still read and checked (a cache filled
//! by an older version stays usable). The trailer's magic says which.
//!
//! Why XXH3-128 on the fill path. What the checksum guards against is
//! damage: pages a power cut left unwritten or stale, a disk's or a
//! filesystem's corruption, an edit by hand. XXH3-128 passes every test of
//! the SMHasher suite, and a damaged block goes unnoticed with probability
//! 2^-128: for damage of any kind not crafted against the hash, as unlikely
//! as with SHA-256. What a cryptographic hash adds is resistance to a forger,
//! and a forger is not in the picture: whoever can rewrite a block's bytes
//! in the cache directory can rewrite its trailer just as well, whichever
//! hash the trailer records (the directory's permissions are the defence
//! against that). Its price is not small: measured on this project's
//! machines (AMD EPYC with SHA-NI, one core), SHA-256 runs at about
//! 1.5–2 GB/s, XXH3-128 (AVX2) at 8–20 GB/s; at the first figure SHA-256
//! alone costs more CPU per GiB than a plain download of the same bytes.

use sha2::{Digest, Sha256};
use twox_hash::XxHash3_128;

/// Which checksum a trailer records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// XXH3-128 (little-endian, in the first 16 of the trailer's 32
    /// checksum bytes; the other 16 are zero). What blocks are written with.
    Xxh3,
    /// SHA-256 (all 32 bytes): blocks written before issue 14.
    Sha256,
}

impl Kind {
    /// The checksum's name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Xxh3 => "XXH3-128",
            Kind::Sha256 => "SHA-256",
        }
    }
}

/// A running checksum of one kind.
pub(crate) enum Hasher {
    Xxh3(Box<XxHash3_128>),
    Sha256(Sha256),
}

impl Hasher {
    pub(crate) fn new(kind: Kind) -> Hasher {
        match kind {
            Kind::Xxh3 => Hasher::Xxh3(Box::new(XxHash3_128::new())),
            Kind::Sha256 => Hasher::Sha256(Sha256::new()),
        }
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Xxh3(h) => h.write(data),
            Hasher::Sha256(h) => h.update(data),
        }
    }

    /// The checksum as the trailer records it (32 bytes).
    pub(crate) fn finish(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        match self {
            Hasher::Xxh3(h) => out[..16].copy_from_slice(&h.finish_128().to_le_bytes()),
            Hasher::Sha256(h) => out.copy_from_slice(&h.finalize()),
        }
        out
    }
}

/// The checksum of `data` of `kind`, as the trailer records it.
/// Whether checksum `computed` of `kind` is the one `recorded` in a
/// trailer's 32-byte field. An XXH3-128 fills the first half of the
/// field; the second half holds the block's owner tag (see
/// `block::owner_tag`), or zeros in blocks written before it.
pub(crate) fn matches(kind: Kind, computed: &[u8; 32], recorded: &[u8; 32]) -> bool {
    match kind {
        Kind::Xxh3 => computed[..16] == recorded[..16],
        Kind::Sha256 => computed == recorded,
    }
}

pub(crate) fn of(kind: Kind, data: &[u8]) -> [u8; 32] {
    match kind {
        Kind::Xxh3 => {
            let mut out = [0u8; 32];
            out[..16].copy_from_slice(&XxHash3_128::oneshot(data).to_le_bytes());
            out
        }
        Kind::Sha256 => Sha256::digest(data).into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_and_one_shot_checksums_agree_and_differ_by_kind() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 977) as u8).collect();
        for kind in [Kind::Xxh3, Kind::Sha256] {
            let mut h = Hasher::new(kind);
            for piece in data.chunks(4099) {
                h.update(piece);
            }
            assert_eq!(h.finish(), of(kind, &data), "{kind:?}");
        }
        assert_ne!(of(Kind::Xxh3, &data), of(Kind::Sha256, &data));
        let x = of(Kind::Xxh3, &data);
        assert_eq!(x[16..], [0u8; 16], "XXH3-128 fills half the field");
        // Known values, so the recorded format can never drift silently.
        assert_eq!(
            of(Kind::Sha256, b"abc")[..4],
            [0xba, 0x78, 0x16, 0xbf],
            "SHA-256 of abc"
        );
        let empty = of(Kind::Xxh3, b"");
        assert_eq!(
            u128::from_le_bytes(empty[..16].try_into().unwrap()),
            0x99aa06d3014798d86001c324468d497f,
            "XXH3-128 of the empty input"
        );
        // One flipped bit changes the checksum.
        let mut flipped = data.clone();
        flipped[123_456] ^= 0x10;
        assert_ne!(of(Kind::Xxh3, &flipped), x);
    }
}
