//! The `meta` file of a blob version directory: which blob, which version,
//! its size and block size. A small text file ending in a SHA-256 over the
//! lines before it, so a torn or edited file is detected and discarded.

use crate::names::BlobKey;

const HEADER: &str = "blobcache-meta 1";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    pub key: BlobKey,
    pub size: u64,
    pub version: String,
    pub block_size: u64,
}

impl Meta {
    pub fn encode(&self) -> String {
        let body = format!(
            "{HEADER}\naccount={}\ncontainer={}\nblob={}\nsize={}\nversion={}\nblock_size={}\n",
            self.key.account,
            self.key.container,
            self.key.blob,
            self.size,
            self.version,
            self.block_size
        );
        super::checksummed::seal(&body)
    }

    /// Parses a meta file; `Err` explains why it is not a valid one.
    pub fn decode(text: &[u8]) -> Result<Meta, String> {
        let mut lines = super::checksummed::open(text, HEADER)?;
        let mut field = |name: &str| -> Result<String, String> {
            let line = lines.next().ok_or_else(|| format!("missing {name}"))?;
            line.strip_prefix(name)
                .and_then(|r| r.strip_prefix('='))
                .map(str::to_string)
                .ok_or_else(|| format!("expected {name}="))
        };
        let account = field("account")?;
        let container = field("container")?;
        let blob = field("blob")?;
        let size = field("size")?.parse().map_err(|_| "bad size")?;
        let version = field("version")?;
        let block_size: u64 = field("block_size")?.parse().map_err(|_| "bad block_size")?;
        if block_size == 0 {
            return Err("block_size is 0".into());
        }
        let key = BlobKey::new(&account, &container, &blob).map_err(|e| e.to_string())?;
        Ok(Meta {
            key,
            size,
            version,
            block_size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Meta {
        Meta {
            key: BlobKey::new("acct", "c", "dir/my model ü.safetensors").unwrap(),
            size: 12345,
            version: "\"0x8DC0FFEE\"".into(),
            block_size: 16 << 20,
        }
    }

    #[test]
    fn round_trips() {
        let m = sample();
        assert_eq!(Meta::decode(m.encode().as_bytes()).unwrap(), m);
    }

    #[test]
    fn every_truncation_and_every_single_byte_flip_is_rejected() {
        let enc = sample().encode().into_bytes();
        for cut in 0..enc.len() {
            assert!(Meta::decode(&enc[..cut]).is_err(), "truncated at {cut}");
        }
        for i in 0..enc.len() {
            let mut b = enc.clone();
            b[i] ^= 0x20;
            assert!(Meta::decode(&b).is_err(), "flipped byte {i}");
        }
    }
}
