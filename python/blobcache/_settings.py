"""The library's settings and secret variables, for `python -m blobcache`.

Generated from crates/core/src/config.rs (SETTINGS) and
crates/core/src/origin/azure/auth.rs (SECRET_VARS, IDENTITY_VARS, KEY_VARS,
SAS_VARS) by the
test config::tests::the_python_copy_of_the_settings_and_secret_variables_is_generated
(crates/core), which fails when this file differs from them; run it with
BLOBCACHE_BLESS=1 to write it again. Do not edit.
"""

# (variable, default): the default as the README shows it; None when it is
# computed (BLOBCACHE_DIR), "" when unset.
SETTINGS = [
    ("BLOBCACHE_DIR", None),
    ("BLOBCACHE_MAX_SIZE", "50%"),
    ("BLOBCACHE_BLOCK_SIZE", "16M"),
    ("BLOBCACHE_ORIGIN", "azure"),
    ("BLOBCACHE_LOG", "warn"),
    ("BLOBCACHE_FETCH_CONCURRENCY", "32"),
    ("BLOBCACHE_READAHEAD", "16"),
    ("BLOBCACHE_FETCH_TIMEOUT", "30s"),
    ("BLOBCACHE_OFFLINE", "0"),
    ("BLOBCACHE_AZURE_ENDPOINT", ""),
    ("BLOBCACHE_AZURE_AUTH", "auto"),
    ("BLOBCACHE_PROXY", "env"),
    ("BLOBCACHE_DRAGONFLY", ""),
    ("BLOBCACHE_DRAGONFLY_FALLBACK", "1"),
    ("BLOBCACHE_SHARED", "0"),
    ("BLOBCACHE_CLUSTER_DIR", ""),
    ("BLOBCACHE_CLUSTER_MAX_SIZE", "80%"),
    ("BLOBCACHE_FSYNC", "0"),
    ("BLOBCACHE_MAPPED_BLOCKS", "4096"),
    ("BLOBCACHE_MAPPED_BYTES", "1G"),
    ("BLOBCACHE_AUTOREGISTER", "1"),
]

# Variables whose values are secrets: shown only as present or absent.
SECRET_VARS = [
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_ACCESS_KEY",
    "AZURE_STORAGE_MASTER_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_STORAGE_SAS_KEY",
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_CLIENT_SECRET",
    "AZURE_STORAGE_CLIENT_SECRET",
    "AZURE_STORAGE_TOKEN",
    "AZURE_FABRIC_SESSION_TOKEN",
    "IDENTITY_HEADER",
]

# Variables that name an identity or where a credential is: not secrets,
# shown as present or absent too.
IDENTITY_VARS = [
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_FEDERATED_TOKEN_FILE",
]

# The credential order: the first shared-key variable set wins, then the first
# SAS variable (each also in SECRET_VARS).
KEY_VARS = [
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_ACCESS_KEY",
    "AZURE_STORAGE_MASTER_KEY",
]
SAS_VARS = [
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_STORAGE_SAS_KEY",
]
