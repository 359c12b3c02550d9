//! Azure Blob Storage origin.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::names::BlobKey;
use crate::origin::{ObjectInfo, Origin, Sink};

pub struct AzureOrigin {}

impl AzureOrigin {
    pub fn new(_config: &Config) -> Result<AzureOrigin> {
        Ok(AzureOrigin {})
    }
}

impl Origin for AzureOrigin {
    fn describe(&self) -> String {
        "azure".into()
    }

    fn stat(&self, _key: &BlobKey) -> Result<ObjectInfo> {
        Err(Error::config(
            "BLOBCACHE_ORIGIN=azure is not available in this build yet; set BLOBCACHE_ORIGIN=file:///path",
        ))
    }

    fn read(&self, _: &BlobKey, _: &ObjectInfo, _: u64, _: u64, _: &mut Sink<'_>) -> Result<()> {
        Err(Error::config(
            "BLOBCACHE_ORIGIN=azure is not available in this build yet",
        ))
    }
}
