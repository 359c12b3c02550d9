//! Credentials: which one an account uses, and signing requests with it.
//!
//! Signing comes from the `object_store` crate (shared key signatures, SAS
//! query parameters, bearer tokens); Entra ID tokens from `token.rs`
//! (Microsoft Fabric's from `object_store`'s provider). This module picks
//! the credential and applies it to a request through the public
//! [`AzureAuthorizer`].
//!
//! Which credential an account uses, first match wins (all read from the
//! environment once per lifecycle, when the account is first used):
//! 1. anonymous (unsigned requests, for public containers) when
//!    `BLOBCACHE_AZURE_AUTH=anonymous` or `AZURE_SKIP_SIGNATURE=true`;
//! 2. shared key: `AZURE_STORAGE_ACCOUNT_KEY` (or its aliases
//!    `AZURE_STORAGE_KEY`, `AZURE_STORAGE_ACCESS_KEY`,
//!    `AZURE_STORAGE_MASTER_KEY`);
//! 3. SAS: `AZURE_STORAGE_SAS_TOKEN` (or `AZURE_STORAGE_SAS_KEY`), with or
//!    without a leading `?`;
//! 4. `AZURE_STORAGE_CONNECTION_STRING`, when its `AccountName` is this
//!    account or absent: its `AccountKey`, else its `SharedAccessSignature`;
//! 5. Entra ID, in the order of `object_store`'s `MicrosoftAzureBuilder`
//!    (Microsoft Fabric's session tokens, `AZURE_FABRIC_*`, through
//!    `object_store`; the others through `token.rs`, which documents
//!    them): bearer token `AZURE_STORAGE_TOKEN`; workload identity
//!    (`AZURE_CLIENT_ID` + `AZURE_TENANT_ID` + `AZURE_FEDERATED_TOKEN_FILE`,
//!    what AKS injects); service principal (`AZURE_CLIENT_ID` +
//!    `AZURE_CLIENT_SECRET` + `AZURE_TENANT_ID`; `AZURE_AUTHORITY_HOST` for
//!    other clouds); Azure CLI when `AZURE_USE_AZURE_CLI=true`; otherwise
//!    managed identity (`IDENTITY_ENDPOINT`, else the instance metadata
//!    service).
//!
//! One credential per account per lifecycle of the library, shared by all
//! threads; Entra ID tokens are kept process-wide, across lifecycles (see
//! `token.rs`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use object_store::azure::{
    AzureAuthorizer, AzureConfigKey, AzureCredential, AzureCredentialProvider,
    MicrosoftAzureBuilder,
};
use object_store::client::HttpRequest;
use object_store::{BackoffConfig, ClientOptions, RetryConfig};

use super::endpoint::ConnectionString;
use super::proxy::Proxies;
use super::token::Identity;
use crate::error::{Error, Result};
use crate::sync::MutexExt;

/// The `x-ms-version` of unsigned (anonymous) requests; signed ones get
/// `object_store`'s.
const ANONYMOUS_VERSION: &str = "2023-11-03";

/// The shared-key variables, in the order the first one set is used (each
/// also in [`SECRET_VARS`]).
pub const KEY_VARS: &[&str] = &[
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_ACCESS_KEY",
    "AZURE_STORAGE_MASTER_KEY",
];
/// The SAS variables, in the order the first one set is used, after
/// [`KEY_VARS`] (each also in [`SECRET_VARS`]).
pub const SAS_VARS: &[&str] = &["AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_SAS_KEY"];
/// Variables whose values are secrets, kept out of every message (and shown
/// only as present or absent by `blobcache doctor`).
pub const SECRET_VARS: &[&str] = &[
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
];
/// Variables that name an identity or where a credential is (not secrets,
/// but `blobcache doctor` shows them as present or absent too).
pub const IDENTITY_VARS: &[&str] = &[
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_FEDERATED_TOKEN_FILE",
];

/// The Azure-related environment, captured once per lifecycle (or given
/// explicitly, as tests do).
#[derive(Clone, Debug, Default)]
pub struct AzureEnv {
    vars: BTreeMap<String, String>,
}

impl AzureEnv {
    /// `AZURE_*`, `IDENTITY_ENDPOINT`, `IDENTITY_HEADER` and the proxy
    /// variables ([`super::proxy::PROXY_VARS`]) from the process environment.
    pub fn from_process() -> AzureEnv {
        AzureEnv::from_pairs(std::env::vars_os().filter_map(|(k, v)| {
            let k = k.into_string().ok()?;
            let wanted = k.starts_with("AZURE_")
                || k == "IDENTITY_ENDPOINT"
                || k == "IDENTITY_HEADER"
                || super::proxy::PROXY_VARS.contains(&k.as_str());
            wanted.then(|| (k, v.to_string_lossy().into_owned()))
        }))
    }

    /// The given variables (empty values count as unset).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> AzureEnv {
        AzureEnv {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .filter(|(_, v)| !v.trim().is_empty())
                .collect(),
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(|v| v.trim())
    }

    fn first(&self, names: &'static [&'static str]) -> Option<(&'static str, &str)> {
        names.iter().find_map(|n| self.get(n).map(|v| (*n, v)))
    }

    pub(crate) fn connection_string(&self) -> Option<ConnectionString> {
        self.get("AZURE_STORAGE_CONNECTION_STRING")
            .map(ConnectionString::parse)
    }

    pub(crate) fn flag(&self, name: &str) -> bool {
        self.get(name)
            .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
    }

    /// Registers every secret this environment holds with
    /// [`crate::redact`], so none can reach a message even by accident.
    pub fn register_secrets(&self) {
        for name in SECRET_VARS {
            if let Some(v) = self.get(name) {
                crate::redact::register_secret(v);
                crate::redact::register_connection_string_secrets(v);
            }
        }
    }
}

/// Where an account's credential came from (for log lines and hints).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    Anonymous,
    Key(&'static str),
    Sas(&'static str),
    ConnectionStringKey,
    ConnectionStringSas,
    /// Entra ID: the identity's description ([`Identity::describe`]).
    EntraId(String),
}

impl Source {
    pub(crate) fn describe(&self) -> String {
        match self {
            Source::Anonymous => "anonymous (unsigned requests)".into(),
            Source::Key(var) => format!("shared key from {var}"),
            Source::Sas(var) => format!("SAS token from {var}"),
            Source::ConnectionStringKey => "shared key from AZURE_STORAGE_CONNECTION_STRING".into(),
            Source::ConnectionStringSas => "SAS from AZURE_STORAGE_CONNECTION_STRING".into(),
            Source::EntraId(identity) => format!("Entra ID, {identity}"),
        }
    }

    /// What to check when Azure refuses the credential (401/403).
    pub(crate) fn refused_hint(&self, account: &str) -> String {
        match self {
            Source::Anonymous => "the container does not allow anonymous access; set AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_TOKEN, or unset BLOBCACHE_AZURE_AUTH=anonymous".into(),
            Source::Key(var) => format!("check that {var} is a current key of account {account}"),
            Source::Sas(var) => format!("check {var}: expired, no read (r) permission, or for another account or container"),
            Source::ConnectionStringKey => format!("check the AccountKey in AZURE_STORAGE_CONNECTION_STRING is a current key of account {account}"),
            Source::ConnectionStringSas => "check the SharedAccessSignature in AZURE_STORAGE_CONNECTION_STRING: expired or without read (r) permission".into(),
            Source::EntraId(identity) => format!("the token from {identity} was refused: check that the identity has the Storage Blob Data Reader role on account {account} (or set AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_TOKEN)"),
        }
    }
}

/// The credential of one account.
pub(crate) struct Credential {
    pub(crate) source: Source,
    provider: Option<AzureCredentialProvider>,
    /// An Entra ID identity whose tokens come from `token.rs`.
    identity: Option<Identity>,
    /// The proxies its authority host is reached through.
    proxies: Proxies,
    /// The last failure to get a token, and when: repeated for
    /// [`FAILURE_MEMORY`] instead of asking the identity service again, so a
    /// node without a usable identity fails each read quickly.
    last_failure: Mutex<Option<(Instant, String)>>,
}

/// How long a failure to get a token is remembered.
const FAILURE_MEMORY: Duration = Duration::from_secs(30);

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.source.describe())
    }
}

impl Credential {
    /// Chooses the credential of `account` (see the module docs for the
    /// order). No network: token providers fetch on first use.
    pub(crate) fn choose(
        account: &str,
        env: &AzureEnv,
        anonymous: bool,
        fetch_timeout: Duration,
    ) -> Result<Credential> {
        if anonymous || env.flag("AZURE_SKIP_SIGNATURE") {
            return Ok(Credential {
                source: Source::Anonymous,
                provider: None,
                identity: None,
                proxies: Proxies::default(),
                last_failure: Mutex::new(None),
            });
        }
        let builder = || base_builder(account, fetch_timeout);
        let conn = env.connection_string().filter(|c| c.applies_to(account));
        let (source, builder) = if let Some((var, key)) = env.first(KEY_VARS) {
            (Source::Key(var), builder().with_access_key(key))
        } else if let Some((var, sas)) = env.first(SAS_VARS) {
            (
                Source::Sas(var),
                builder().with_config(AzureConfigKey::SasKey, sas),
            )
        } else if let Some(key) = conn.as_ref().and_then(|c| c.account_key.as_deref()) {
            (Source::ConnectionStringKey, builder().with_access_key(key))
        } else if let Some(sas) = conn.as_ref().and_then(|c| c.sas.as_deref()) {
            (
                Source::ConnectionStringSas,
                builder().with_config(AzureConfigKey::SasKey, sas),
            )
        } else if env.get("AZURE_FABRIC_SESSION_TOKEN").is_some() {
            let source = Source::EntraId("Microsoft Fabric (AZURE_FABRIC_*)".into());
            (source, entra_builder(account, env, fetch_timeout))
        } else {
            let identity = Identity::from_env(env);
            identity.register_secrets();
            return Ok(Credential {
                source: Source::EntraId(identity.describe()),
                provider: None,
                identity: Some(identity),
                proxies: Proxies::default(),
                last_failure: Mutex::new(None),
            });
        };
        let store = builder.build().map_err(|e| {
            Error::config(format!(
                "cannot set up the Azure credential ({}) for account {account}: {}",
                source.describe(),
                flatten(&e.to_string())
            ))
        })?;
        Ok(Credential {
            source,
            provider: Some(store.credentials().clone()),
            identity: None,
            proxies: Proxies::default(),
            last_failure: Mutex::new(None),
        })
    }

    /// Azure refused a request signed with this credential (401 or 403):
    /// an Entra ID token is dropped from the process's table, so the next
    /// request or session asks for a new one rather than reuse it for the
    /// rest of its life (see `token.rs`).
    pub(crate) fn refused(&self) {
        if let Some(identity) = &self.identity {
            super::token::refused(identity);
        }
    }

    /// The same credential, its identity endpoint reached through
    /// `proxies` (see `token.rs`).
    pub(crate) fn with_proxies(mut self, proxies: &Proxies) -> Credential {
        self.proxies = proxies.clone();
        self
    }

    /// Adds the date, version and authorization to `request` (for a SAS:
    /// query parameters, so never log the request's URI after this).
    /// Waits at most `limit` for a token.
    pub(crate) async fn authorize(
        &self,
        account: &str,
        request: &mut HttpRequest,
        limit: Duration,
    ) -> Result<()> {
        if self.provider.is_none() && self.identity.is_none() {
            request.headers_mut().insert(
                "x-ms-version",
                http::HeaderValue::from_static(ANONYMOUS_VERSION),
            );
            return Ok(());
        }
        if let Some((when, why)) = &*self.last_failure.locked() {
            if when.elapsed() < FAILURE_MEMORY {
                return Err(Error::origin(format!(
                    "{why} (failed {} ago; not asked again for {} s)",
                    super::retry::fmt_duration(when.elapsed()),
                    FAILURE_MEMORY.as_secs()
                )));
            }
        }
        let got = match (&self.identity, &self.provider) {
            (Some(identity), _) => super::token::token(identity, &self.proxies, limit)
                .await
                .map(|t| Arc::new(AzureCredential::BearerToken(t.to_string()))),
            (None, Some(provider)) => {
                match tokio::time::timeout(limit, provider.get_credential()).await {
                    Ok(Ok(credential)) => Ok(credential),
                    Ok(Err(e)) => Err(flatten(&e.to_string())),
                    Err(_) => Err(format!(
                        "no answer within {}",
                        super::retry::fmt_duration(limit)
                    )),
                }
            }
            (None, None) => unreachable!("anonymous requests return above"),
        };
        let why = match got {
            Ok(credential) => {
                AzureAuthorizer::new(&credential, account).authorize(request);
                return Ok(());
            }
            Err(why) => why,
        };
        let why = format!(
            "cannot get an Azure credential ({}) for account {account}: {why}; set AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_TOKEN, or check this machine's identity (workload identity, service principal or managed identity variables)",
            self.source.describe(),
        );
        *self.last_failure.locked() = Some((Instant::now(), why.clone()));
        Err(Error::origin(why))
    }
}

/// A builder whose only job is to make a credential provider: the
/// container and endpoint are placeholders (requests are ours).
fn base_builder(account: &str, fetch_timeout: Duration) -> MicrosoftAzureBuilder {
    let connect = super::retry::MAX_CONNECT.min(fetch_timeout);
    MicrosoftAzureBuilder::new()
        .with_client_options(
            ClientOptions::new()
                .with_timeout(fetch_timeout)
                .with_connect_timeout(connect),
        )
        .with_retry(RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(2),
                base: 2.0,
            },
            max_retries: 3,
            retry_timeout: fetch_timeout,
        })
        .with_account(account)
        .with_container_name("unused")
}

/// `MicrosoftAzureBuilder::from_env` over `env`, minus what is decided
/// elsewhere (endpoint, emulator mode, account, container; keys and SAS are
/// absent when this is used).
fn entra_builder(account: &str, env: &AzureEnv, fetch_timeout: Duration) -> MicrosoftAzureBuilder {
    let mut b = base_builder(account, fetch_timeout);
    for (name, value) in &env.vars {
        if !name.starts_with("AZURE_") {
            continue;
        }
        let Ok(key) = name.to_ascii_lowercase().parse::<AzureConfigKey>() else {
            continue;
        };
        if matches!(
            key,
            AzureConfigKey::UseEmulator
                | AzureConfigKey::Endpoint
                | AzureConfigKey::AccountName
                | AzureConfigKey::ContainerName
                | AzureConfigKey::SkipSignature
                | AzureConfigKey::AccessKey
                | AzureConfigKey::SasKey
        ) {
            continue;
        }
        b = b.with_config(key, value.trim());
    }
    if let Some(e) = env.get("IDENTITY_ENDPOINT") {
        b = b.with_msi_endpoint(e);
    }
    b.with_account(account).with_container_name("unused")
}

/// One line, for messages that may hold a multi-line server answer.
fn flatten(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = super::super::endpoint::DEVELOPMENT_KEY;
    const T: Duration = Duration::from_secs(5);

    fn env(pairs: &[(&str, &str)]) -> AzureEnv {
        AzureEnv::from_pairs(pairs.iter().copied())
    }

    fn source(pairs: &[(&str, &str)]) -> Source {
        Credential::choose("acct", &env(pairs), false, T)
            .unwrap()
            .source
    }

    #[test]
    fn the_documented_order_is_the_implemented_order() {
        let sp = [
            ("AZURE_CLIENT_ID", "id"),
            ("AZURE_TENANT_ID", "tenant"),
            ("AZURE_CLIENT_SECRET", "secret-value"),
        ];
        let sas = ("AZURE_STORAGE_SAS_TOKEN", "?sv=2022-11-02&sig=abc%3D");
        let key = ("AZURE_STORAGE_ACCOUNT_KEY", KEY);
        let conn = (
            "AZURE_STORAGE_CONNECTION_STRING",
            "AccountName=acct;SharedAccessSignature=sv=2022&sig=x",
        );
        let all: Vec<_> = sp.iter().copied().chain([sas, key, conn]).collect();
        assert_eq!(source(&all), Source::Key("AZURE_STORAGE_ACCOUNT_KEY"));
        let no_key: Vec<_> = sp.iter().copied().chain([sas, conn]).collect();
        assert_eq!(source(&no_key), Source::Sas("AZURE_STORAGE_SAS_TOKEN"));
        let conn_sp: Vec<_> = sp.iter().copied().chain([conn]).collect();
        assert_eq!(source(&conn_sp), Source::ConnectionStringSas);
        assert_eq!(
            source(&sp),
            Source::EntraId("service principal (AZURE_CLIENT_SECRET, client id id)".into())
        );
        assert_eq!(
            source(&[("AZURE_STORAGE_KEY", KEY)]),
            Source::Key("AZURE_STORAGE_KEY")
        );
        assert_eq!(
            source(&[key, ("AZURE_SKIP_SIGNATURE", "true")]),
            Source::Anonymous
        );
        let anon = Credential::choose("acct", &env(&[key]), true, T).unwrap();
        assert_eq!(anon.source, Source::Anonymous);
    }

    #[test]
    fn a_connection_string_for_another_account_is_not_used() {
        let pairs = [(
            "AZURE_STORAGE_CONNECTION_STRING",
            "AccountName=other;AccountKey=a2V5a2V5a2V5",
        )];
        assert!(matches!(source(&pairs), Source::EntraId(_)));
    }

    #[test]
    fn an_invalid_key_is_a_configuration_error_without_the_key() {
        let bad = "not base64 at all!!";
        let e = Credential::choose(
            "acct",
            &env(&[("AZURE_STORAGE_ACCOUNT_KEY", bad)]),
            false,
            T,
        )
        .unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::Config);
        assert!(!e.message().contains(bad), "{e}");
        assert!(e.message().contains("AZURE_STORAGE_ACCOUNT_KEY"), "{e}");
    }

    #[test]
    fn only_azure_variables_are_captured_from_the_process() {
        let e = AzureEnv::from_process();
        assert!(e.vars.keys().all(|k| k.starts_with("AZURE_")
            || k == "IDENTITY_ENDPOINT"
            || k == "IDENTITY_HEADER"
            || super::super::proxy::PROXY_VARS.contains(&k.as_str())));
    }
}
