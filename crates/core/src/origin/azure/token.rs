//! Entra ID access tokens: which identity the environment names, getting a
//! token from its identity endpoint, and one process-wide cache of tokens
//! that outlives the library's lifecycles.
//!
//! The identities, first match wins (the order of `object_store`'s
//! `MicrosoftAzureBuilder`, whose variable names and aliases are kept):
//! - bearer token `AZURE_STORAGE_TOKEN`: used as is, never refreshed;
//! - workload identity: `AZURE_CLIENT_ID` + `AZURE_TENANT_ID` +
//!   `AZURE_FEDERATED_TOKEN_FILE` (what AKS injects, with
//!   `AZURE_AUTHORITY_HOST`): the file's token is exchanged at
//!   `<authority>/<tenant>/oauth2/v2.0/token` (read again at every exchange:
//!   the kubelet rotates it);
//! - service principal: `AZURE_CLIENT_ID` + `AZURE_CLIENT_SECRET` +
//!   `AZURE_TENANT_ID`, at the same token endpoint;
//! - Azure CLI when `AZURE_USE_AZURE_CLI=true`: `az account
//!   get-access-token`, the `az` found on `PATH`;
//! - otherwise managed identity: `IDENTITY_ENDPOINT` (App Service and
//!   similar, with `IDENTITY_HEADER`) or `AZURE_MSI_ENDPOINT`, else the
//!   instance metadata service, `http://169.254.169.254/metadata/identity/oauth2/token`;
//!   `AZURE_CLIENT_ID`, `AZURE_OBJECT_ID` or `AZURE_MSI_RESOURCE_ID` pick a
//!   user-assigned identity.
//!
//! **Tokens outlive a lifecycle.** The streamer calls `shutdown()` after
//! every session and reads again in the same process; asking the identity
//! endpoint again each time is what makes IMDS throttle a busy node. So a
//! token is kept in a process-wide table keyed by everything that picks it
//! (kind, tenant, client id, endpoint, token file, a hash of the secret),
//! as plain data (the token and its expiry), never on disk and never tied
//! to a lifecycle's runtime. A token is used until half of its lifetime
//! is left (at most its last 5 minutes, as the Azure SDKs do: a
//! short-lived token must not expire between signing and the service's
//! check, whose clock counts whole seconds) and then refreshed by the
//! first request that needs it, while the others go on with the current
//! one (or, once it is about to expire, wait for that one fetch); if the
//! refresh fails while the old token is still valid, the old one is used.
//! A token Azure refuses (401, 403) is dropped, at most once a minute per
//! identity ([`refused`]). The table is changed only inside fork sections
//! (see `fork.rs`); a forked child keeps the parent's tokens but not its
//! in-flight fetches.
//!
//! **Asking the identity endpoint.** Throttling (429), 408, 410 and 5xx
//! answers and connection failures are retried as Blob Storage requests are
//! (`retry.rs`: backoff with jitter, or exactly the `Retry-After` asked
//! for), within the time the request being signed has left of
//! `BLOBCACHE_FETCH_TIMEOUT`. Messages name the identity and the endpoint,
//! the status and Entra ID's error code, never a token, a secret or a
//! response body that could hold one; every token received is registered
//! with [`crate::redact`] as well.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::auth::AzureEnv;
use super::proxy::Proxies;
use super::retry::{self, Budget};
use crate::log;
use crate::sync::MutexExt;

/// The scope asked of OAuth token endpoints, and the resource asked of
/// managed identity endpoints: Azure Storage.
const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";
const STORAGE_RESOURCE: &str = "https://storage.azure.com";
const PUBLIC_AUTHORITY: &str = "https://login.microsoftonline.com";
const IMDS: &str = "http://169.254.169.254/metadata/identity/oauth2/token";
const MSI_API_VERSION: &str = "2019-08-01";
/// How long before its expiry a token is refreshed, at most (a
/// shorter-lived token is refreshed half-way through its life).
const MAX_REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// While one request fetches a new token, the others keep using the
/// current one if it has at least this long to live.
const STILL_USABLE: Duration = Duration::from_secs(2);

/// An Entra ID identity as the environment names it.
#[derive(Clone)]
pub(crate) enum Identity {
    Bearer {
        token: String,
    },
    Workload {
        client_id: String,
        tenant: String,
        token_file: String,
        authority: String,
    },
    ServicePrincipal {
        client_id: String,
        tenant: String,
        secret: String,
        authority: String,
    },
    Cli,
    Managed {
        endpoint: String,
        /// `IDENTITY_HEADER`, sent as `X-IDENTITY-HEADER` (App Service).
        header: Option<String>,
        /// A user-assigned identity: (query parameter, value).
        pick: Option<(&'static str, String)>,
    },
}

/// The first of `names` set in `env`.
fn first(env: &AzureEnv, names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| env.get(n)).map(str::to_string)
}

impl Identity {
    /// The identity `env` names (see the module docs for the order).
    pub(crate) fn from_env(env: &AzureEnv) -> Identity {
        let client_id = first(env, &["AZURE_STORAGE_CLIENT_ID", "AZURE_CLIENT_ID"]);
        let tenant = first(
            env,
            &[
                "AZURE_STORAGE_TENANT_ID",
                "AZURE_STORAGE_AUTHORITY_ID",
                "AZURE_TENANT_ID",
                "AZURE_AUTHORITY_ID",
            ],
        );
        let authority = first(
            env,
            &["AZURE_STORAGE_AUTHORITY_HOST", "AZURE_AUTHORITY_HOST"],
        )
        .unwrap_or_else(|| PUBLIC_AUTHORITY.to_string())
        .trim_end_matches('/')
        .to_string();
        let secret = first(env, &["AZURE_STORAGE_CLIENT_SECRET", "AZURE_CLIENT_SECRET"]);
        let token_file = first(env, &["AZURE_FEDERATED_TOKEN_FILE"]);
        if let Some(token) = first(env, &["AZURE_STORAGE_TOKEN"]) {
            return Identity::Bearer { token };
        }
        if let (Some(client_id), Some(tenant), Some(token_file)) =
            (client_id.clone(), tenant.clone(), token_file)
        {
            return Identity::Workload {
                client_id,
                tenant,
                token_file,
                authority,
            };
        }
        if let (Some(client_id), Some(secret), Some(tenant)) = (client_id.clone(), secret, tenant) {
            return Identity::ServicePrincipal {
                client_id,
                tenant,
                secret,
                authority,
            };
        }
        if env.flag("AZURE_USE_AZURE_CLI") {
            return Identity::Cli;
        }
        let endpoint = first(
            env,
            &[
                "IDENTITY_ENDPOINT",
                "AZURE_MSI_ENDPOINT",
                "AZURE_IDENTITY_ENDPOINT",
            ],
        )
        .unwrap_or_else(|| IMDS.to_string());
        let pick = if let Some(r) = first(env, &["AZURE_MSI_RESOURCE_ID"]) {
            Some(("msi_res_id", r))
        } else if let Some(o) = first(env, &["AZURE_OBJECT_ID"]) {
            Some(("object_id", o))
        } else {
            client_id.map(|c| ("client_id", c))
        };
        Identity::Managed {
            endpoint,
            header: first(env, &["IDENTITY_HEADER"]),
            pick,
        }
    }

    /// What this identity is, for messages: the kind and the variables
    /// that chose it, never a secret.
    pub(crate) fn describe(&self) -> String {
        match self {
            Identity::Bearer { .. } => "bearer token from AZURE_STORAGE_TOKEN".into(),
            Identity::Workload {
                client_id,
                token_file,
                ..
            } => format!(
                "workload identity (AZURE_FEDERATED_TOKEN_FILE {token_file}, client id {client_id})"
            ),
            Identity::ServicePrincipal { client_id, .. } => {
                format!("service principal (AZURE_CLIENT_SECRET, client id {client_id})")
            }
            Identity::Cli => "Azure CLI (az account get-access-token)".into(),
            Identity::Managed { endpoint, pick, .. } => {
                let which = match pick {
                    Some((k, v)) => format!(", {k} {v}"),
                    None => String::new(),
                };
                format!("managed identity ({endpoint}{which})")
            }
        }
    }

    /// The key of this identity's tokens in the process-wide table: every
    /// field, the secret only as a hash.
    fn key(&self) -> String {
        match self {
            Identity::Bearer { .. } => String::new(),
            Identity::Workload {
                client_id,
                tenant,
                token_file,
                authority,
            } => format!("workload\0{authority}\0{tenant}\0{client_id}\0{token_file}"),
            Identity::ServicePrincipal {
                client_id,
                tenant,
                secret,
                authority,
            } => {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                secret.hash(&mut h);
                format!("sp\0{authority}\0{tenant}\0{client_id}\0{:x}", h.finish())
            }
            Identity::Cli => "cli".into(),
            Identity::Managed {
                endpoint,
                header,
                pick,
            } => format!("msi\0{endpoint}\0{}\0{pick:?}", header.is_some()),
        }
    }

    /// The secrets this identity holds, for [`crate::redact`].
    pub(crate) fn register_secrets(&self) {
        match self {
            Identity::Bearer { token } => crate::redact::register_secret(token),
            Identity::ServicePrincipal { secret, .. } => crate::redact::register_secret(secret),
            Identity::Managed {
                header: Some(h), ..
            } => crate::redact::register_secret(h),
            _ => {}
        }
    }
}

/// A token in the process-wide table.
#[derive(Clone)]
struct Entry {
    token: Arc<str>,
    /// When the endpoint said it expires.
    expires: Instant,
    /// When to fetch a new one.
    refresh: Instant,
}

/// The tokens of this process, by identity key, and one lock per identity
/// that the fetch of a new token holds (its fork generation: a child does
/// not wait for its parent's fetches).
struct Table {
    tokens: HashMap<String, Entry>,
    /// When a refused token of each identity was last dropped.
    dropped: HashMap<String, Instant>,
    gates: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
    generation: u64,
}

static TABLE: Mutex<Option<Table>> = Mutex::new(None);

/// Reads or changes the table, inside a fork section (short, in memory).
fn with_table<R>(f: impl FnOnce(&mut Table) -> R) -> R {
    crate::fork::section(|| {
        let mut t = TABLE.locked();
        let generation = crate::fork::generation();
        let table = t.get_or_insert_with(|| Table {
            tokens: HashMap::new(),
            dropped: HashMap::new(),
            gates: HashMap::new(),
            generation,
        });
        if table.generation != generation {
            // Forked: the parent's fetches in flight do not exist here. Their
            // locks may be held for ever, so they are left behind, unused.
            std::mem::forget(std::mem::take(&mut table.gates));
            table.generation = generation;
        }
        f(table)
    })
}

/// Azure refused a request signed with `identity`'s token: the token is
/// dropped, so the next request asks for a new one (a token that was
/// revoked, or issued before the identity's set-up was fixed, is not kept
/// for the rest of its life). At most once a minute per identity, so a
/// refusal a new token cannot cure (a missing role) does not make every
/// read ask the identity endpoint.
pub(crate) fn refused(identity: &Identity) {
    if let Identity::Bearer { .. } = identity {
        return;
    }
    let key = identity.key();
    let dropped = with_table(|t| {
        let recent = t
            .dropped
            .get(&key)
            .is_some_and(|at| at.elapsed() < DROP_AT_MOST_EVERY);
        if recent || t.tokens.remove(&key).is_none() {
            return false;
        }
        t.dropped.insert(key.clone(), Instant::now());
        true
    });
    if dropped {
        log::debug!(
            "azure: a token from {} was refused; the next request asks for a new one",
            identity.describe()
        );
    }
}

/// How often a refused token of one identity is dropped, at most.
const DROP_AT_MOST_EVERY: Duration = Duration::from_secs(60);

/// A token of `identity` valid now, from the table or from its endpoint;
/// waits at most `limit`. The error says why, without naming the identity
/// (the caller does).
pub(crate) async fn token(
    identity: &Identity,
    proxies: &Proxies,
    limit: Duration,
) -> Result<Arc<str>, String> {
    if let Identity::Bearer { token } = identity {
        return Ok(Arc::from(token.as_str()));
    }
    let key = identity.key();
    let cached = || with_table(|t| t.tokens.get(&key).cloned());
    if let Some(e) = cached().filter(|e| Instant::now() < e.refresh) {
        return Ok(e.token);
    }
    let deadline = tokio::time::Instant::now() + limit;
    let gate = with_table(|t| t.gates.entry(key.clone()).or_default().clone());
    let _fetching = match gate.try_lock() {
        Ok(g) => g,
        Err(_) => {
            // Another request is fetching a new token: while the current
            // one is still good for a while, use it rather than wait.
            let usable = |e: &Entry| Instant::now() + STILL_USABLE < e.expires;
            if let Some(e) = cached().filter(usable) {
                return Ok(e.token);
            }
            tokio::time::timeout_at(deadline, gate.lock())
                .await
                .map_err(|_| {
                    format!(
                        "no token within {} (another request is fetching one)",
                        retry::fmt_duration(limit)
                    )
                })?
        }
    };
    // Another request may have fetched one while this one waited.
    let old = cached();
    if let Some(e) = old.clone().filter(|e| Instant::now() < e.refresh) {
        return Ok(e.token);
    }
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    match fetch(identity, proxies, left).await {
        Ok((token, lifetime)) => {
            crate::redact::register_secret(&token);
            let now = Instant::now();
            let margin = MAX_REFRESH_MARGIN.min(lifetime / 2);
            let entry = Entry {
                token: Arc::from(token),
                expires: now + lifetime,
                refresh: now + lifetime.saturating_sub(margin),
            };
            log::debug!(
                "azure: new Entra ID token from {}, valid for {}",
                identity.describe(),
                retry::fmt_duration(lifetime)
            );
            with_table(|t| t.tokens.insert(key, entry.clone()));
            Ok(entry.token)
        }
        Err(why) => match old.filter(|e| Instant::now() < e.expires) {
            Some(e) => {
                log::info!(
                    "azure: could not refresh the token from {} ({why}); using the current one until it expires",
                    identity.describe()
                );
                Ok(e.token)
            }
            None => Err(why),
        },
    }
}

/// Asks the identity's endpoint for a token: the token and its lifetime.
async fn fetch(
    identity: &Identity,
    proxies: &Proxies,
    limit: Duration,
) -> Result<(String, Duration), String> {
    match identity {
        Identity::Bearer { token } => Ok((token.clone(), Duration::MAX)),
        Identity::Workload {
            client_id,
            tenant,
            token_file,
            authority,
        } => {
            let assertion = std::fs::read_to_string(token_file)
                .map_err(|e| format!("cannot read AZURE_FEDERATED_TOKEN_FILE {token_file}: {e}"))?;
            crate::redact::register_secret(assertion.trim());
            let proof = [
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", assertion.trim()),
            ];
            client_credentials(authority, tenant, client_id, &proof, proxies, limit).await
        }
        Identity::ServicePrincipal {
            client_id,
            tenant,
            secret,
            authority,
        } => {
            let proof = [("client_secret", secret.as_str())];
            client_credentials(authority, tenant, client_id, &proof, proxies, limit).await
        }
        Identity::Managed {
            endpoint,
            header,
            pick,
        } => {
            let mut query = vec![
                ("api-version", MSI_API_VERSION),
                ("resource", STORAGE_RESOURCE),
            ];
            if let Some((k, v)) = pick {
                query.push((k, v.as_str()));
            }
            let body = ask(
                endpoint,
                Ask::Query(&query, header.as_deref()),
                proxies,
                limit,
            )
            .await?;
            oauth_answer(&body)
        }
        Identity::Cli => cli(limit).await,
    }
}

/// An OAuth client-credentials exchange at `tenant`'s token endpoint:
/// `client_id`, the client's `proof` (a secret or a federated assertion),
/// the storage scope.
async fn client_credentials(
    authority: &str,
    tenant: &str,
    client_id: &str,
    proof: &[(&str, &str)],
    proxies: &Proxies,
    limit: Duration,
) -> Result<(String, Duration), String> {
    let mut form = vec![("client_id", client_id)];
    form.extend_from_slice(proof);
    form.extend([
        ("scope", STORAGE_SCOPE),
        ("grant_type", "client_credentials"),
    ]);
    let url = token_url(authority, tenant)?;
    let body = ask(&url, Ask::Form(&form), proxies, limit).await?;
    oauth_answer(&body)
}

/// The OAuth token endpoint of `tenant` at `authority`. A secret (client
/// secret, federated token) goes only over HTTPS, or plain HTTP to a
/// loopback address (a local stand-in).
fn token_url(authority: &str, tenant: &str) -> Result<String, String> {
    let plain = authority
        .strip_prefix("http://")
        .map(|rest| rest.split(['/', '?']).next().unwrap_or(""));
    if let Some(host) = plain {
        let host = host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                host
            }
        });
        let loopback = host == "localhost"
            || host
                .trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            return Err(format!(
                "AZURE_AUTHORITY_HOST {authority} is plain HTTP: the credential would cross the network unencrypted; use https://"
            ));
        }
    }
    Ok(format!("{authority}/{tenant}/oauth2/v2.0/token"))
}

/// What to send to a token endpoint.
enum Ask<'a> {
    /// POST with a form body (OAuth client credentials).
    Form(&'a [(&'a str, &'a str)]),
    /// GET with a query, `Metadata: true`, and `X-IDENTITY-HEADER` if given
    /// (managed identity).
    Query(&'a [(&'a str, &'a str)], Option<&'a str>),
}

/// Sends `what` to `url` until it answers with success or with a refusal
/// no retry can change, within `limit`; returns the body of the success.
/// The authority host is reached through the proxies Blob Storage is
/// (`proxy.rs`: `https_proxy`, `no_proxy`, ...); a managed identity
/// endpoint, which is on the machine or link-local, always directly.
async fn ask(
    url: &str,
    what: Ask<'_>,
    proxies: &Proxies,
    limit: Duration,
) -> Result<String, String> {
    let direct = Proxies::default();
    let proxies = match what {
        Ask::Form(_) => proxies,
        Ask::Query(..) => &direct,
    };
    // A client per fetch: fetches are rare (once per token lifetime per
    // identity and process), and a client kept between lifecycles would
    // hold connections of a stopped runtime.
    let client = super::http::client(1, limit, proxies)
        .map_err(|e| format!("cannot set up the token request: {e}"))?;
    let mut budget = Budget::new(limit, true);
    let shown = url.split('?').next().unwrap_or(url).to_string();
    loop {
        budget.attempts += 1;
        let request = match what {
            Ask::Form(form) => client
                .post(url)
                .header("accept", "application/json")
                .form(form),
            Ask::Query(query, header) => {
                let mut r = client.get(url).header("metadata", "true").query(query);
                if let Some(h) = header {
                    r = r.header("x-identity-header", h);
                }
                r
            }
        };
        let idle = budget.idle_limit();
        let (connect, retry_after, why) = match tokio::time::timeout(idle, request.send()).await {
            Err(_) => (
                false,
                None,
                format!("no answer within {}", retry::fmt_duration(idle)),
            ),
            Ok(Err(e)) => (
                e.is_connect(),
                None,
                format!("cannot reach it: {}", super::http::cause(&e)),
            ),
            Ok(Ok(response)) => {
                budget.answered();
                let status = response.status();
                let retry_after = retry::retry_after(response.headers());
                let body = tokio::time::timeout(budget.idle_limit(), response.text()).await;
                let body = match body {
                    Ok(Ok(b)) => b,
                    Ok(Err(e)) => format!("(body unreadable: {})", super::http::cause(&e)),
                    Err(_) => "(body not received in time)".into(),
                };
                if status.is_success() {
                    return Ok(body);
                }
                let why = format!("HTTP {}{}", status.as_u16(), error_of(&body));
                let transient =
                    matches!(status.as_u16(), 408 | 410 | 429) || status.is_server_error();
                if !transient {
                    return Err(format!("{shown} answered {why}"));
                }
                (false, retry_after, why)
            }
        };
        match budget.next_wait(connect, retry_after) {
            Ok(wait) => {
                log::debug!(
                    "azure: token endpoint {shown}: {why}; retrying in {}",
                    retry::fmt_duration(wait)
                );
                tokio::time::sleep(wait).await;
            }
            Err(stop) => return Err(format!("{shown}: {why} [{}; {stop}]", budget.summary())),
        }
    }
}

/// `: <error>: <first line of error_description>` from an OAuth error
/// body, if it is one (nothing else of a body is shown).
fn error_of(body: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(body) else {
        return String::new();
    };
    let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    let code = field("error").or_else(|| {
        v.get("error")
            .and_then(|e| e.get("code"))
            .and_then(|c| c.as_str())
            .map(str::to_string)
    });
    let text = field("error_description").or_else(|| {
        v.get("error")
            .and_then(|e| e.get("message"))
            .and_then(|c| c.as_str())
            .map(str::to_string)
    });
    let mut s = String::new();
    if let Some(c) = code {
        s.push_str(&format!(" {}", c.chars().take(80).collect::<String>()));
    }
    if let Some(t) = text {
        let line: String = t.lines().next().unwrap_or("").chars().take(160).collect();
        s.push_str(&format!(": {line}"));
    }
    s
}

/// A number or a string holding one.
fn number(v: Option<&serde_json::Value>) -> Option<u64> {
    match v? {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The token and lifetime of an OAuth or managed identity answer:
/// `access_token` and `expires_in` (seconds), else `expires_on` (Unix
/// time).
fn oauth_answer(body: &str) -> Result<(String, Duration), String> {
    let v: serde_json::Value = serde_json::from_str(body)
        .map_err(|_| "the answer is not JSON (not shown: it could hold a token)".to_string())?;
    let token = v
        .get("access_token")
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty())
        .ok_or("the answer has no access_token")?;
    let lifetime = number(v.get("expires_in"))
        .or_else(|| number(v.get("expires_on")).map(|on| on.saturating_sub(unix_now())))
        .ok_or("the answer has neither expires_in nor expires_on")?;
    Ok((token.to_string(), Duration::from_secs(lifetime)))
}

/// Runs `az account get-access-token` (on a thread of ours, started with
/// forks held off) and reads its token and expiry: `expires_on` (Unix
/// time, az 2.54 and later), else `expiresOn` (local time).
async fn cli(limit: Duration) -> Result<(String, Duration), String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let builder = std::thread::Builder::new().name("blobcache-az".into());
    crate::fork::spawn(builder, move || {
        let out = std::process::Command::new("az")
            .args(["account", "get-access-token", "--output", "json"])
            .args(["--resource", STORAGE_RESOURCE])
            .stdin(std::process::Stdio::null())
            .output();
        let _ = tx.send(out);
    })
    .map_err(|e| format!("cannot start a thread to run az: {e}"))?;
    let out = match tokio::time::timeout(limit, rx).await {
        Err(_) => {
            return Err(format!(
                "az gave no answer within {}",
                retry::fmt_duration(limit)
            ))
        }
        Ok(Err(_)) => return Err("the thread running az ended without an answer".into()),
        Ok(Ok(Err(e))) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(
                "az is not on PATH (install the Azure CLI, or unset AZURE_USE_AZURE_CLI)".into(),
            )
        }
        Ok(Ok(Err(e))) => return Err(format!("cannot run az: {e}")),
        Ok(Ok(Ok(o))) => o,
    };
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let line: String = err.lines().next().unwrap_or("").chars().take(200).collect();
        return Err(format!(
            "az account get-access-token failed ({}): {line}",
            out.status
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|_| "az printed something that is not JSON (not shown)".to_string())?;
    let token = v
        .get("accessToken")
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty())
        .ok_or("az printed no accessToken")?;
    if let Some(kind) = v.get("tokenType").and_then(|t| t.as_str()) {
        if !kind.eq_ignore_ascii_case("bearer") {
            return Err(format!("az printed a {kind} token, not a Bearer token"));
        }
    }
    let expires = number(v.get("expires_on"))
        .or_else(|| {
            v.get("expiresOn")
                .and_then(|t| t.as_str())
                .and_then(local_time)
        })
        .ok_or("az printed neither expires_on nor a readable expiresOn")?;
    Ok((
        token.to_string(),
        Duration::from_secs(expires.saturating_sub(unix_now())),
    ))
}

/// `2026-11-30 19:20:00.000000` in the local time zone, as Unix time.
fn local_time(s: &str) -> Option<u64> {
    let (date, time) = s.trim().split_once(' ')?;
    let d: Vec<i32> = date
        .split('-')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let time = time.split('.').next()?;
    let t: Vec<i32> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    if d.len() != 3 || t.len() != 3 {
        return None;
    }
    crate::sys::local_time_to_unix([d[0], d[1], d[2], t[0], t[1], t[2]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> AzureEnv {
        AzureEnv::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn the_identity_order_is_bearer_workload_service_principal_cli_managed() {
        let wi = [
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_FEDERATED_TOKEN_FILE", "/f"),
        ];
        let secret = ("AZURE_CLIENT_SECRET", "s3cret-value");
        let cli = ("AZURE_USE_AZURE_CLI", "true");
        let bearer = ("AZURE_STORAGE_TOKEN", "bearer-token");
        let all: Vec<_> = wi.iter().copied().chain([secret, cli, bearer]).collect();
        assert!(matches!(
            Identity::from_env(&env(&all)),
            Identity::Bearer { .. }
        ));
        let no_bearer: Vec<_> = wi.iter().copied().chain([secret, cli]).collect();
        assert!(matches!(
            Identity::from_env(&env(&no_bearer)),
            Identity::Workload { .. }
        ));
        let sp = [wi[0], wi[1], secret, cli];
        assert!(matches!(
            Identity::from_env(&env(&sp)),
            Identity::ServicePrincipal { .. }
        ));
        assert!(matches!(
            Identity::from_env(&env(&[wi[0], cli])),
            Identity::Cli
        ));
        match Identity::from_env(&env(&no_bearer)) {
            Identity::Workload { authority, .. } => assert_eq!(authority, PUBLIC_AUTHORITY),
            _ => unreachable!(),
        }
        match Identity::from_env(&env(&[wi[0]])) {
            Identity::Managed { endpoint, pick, .. } => {
                assert_eq!(endpoint, IMDS);
                assert_eq!(pick, Some(("client_id", "c".to_string())));
            }
            _ => panic!("managed identity expected"),
        }
    }

    #[test]
    fn descriptions_name_the_source_and_never_a_secret() {
        let sp = Identity::from_env(&env(&[
            ("AZURE_CLIENT_ID", "cid"),
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_SECRET", "s3cret-value"),
        ]));
        assert_eq!(
            sp.describe(),
            "service principal (AZURE_CLIENT_SECRET, client id cid)"
        );
        assert!(!sp.key().contains("s3cret-value"));
        let b = Identity::from_env(&env(&[("AZURE_STORAGE_TOKEN", "bearer-token")]));
        assert!(!b.describe().contains("bearer-token"));
    }

    #[test]
    fn a_secret_goes_to_the_authority_only_over_https_or_to_loopback() {
        for ok in [
            "https://login.microsoftonline.com",
            "http://127.0.0.1:8080",
            "http://localhost:1",
            "http://[::1]:9",
        ] {
            assert!(token_url(ok, "t").is_ok(), "{ok}");
        }
        for bad in [
            "http://login.example.com",
            "http://10.0.0.1:80",
            "http://127.0.0.1.example.com",
        ] {
            let e = token_url(bad, "t").unwrap_err();
            assert!(e.contains("plain HTTP"), "{e}");
        }
    }

    #[test]
    fn answers_are_read_with_expires_in_or_expires_on() {
        let (t, l) = oauth_answer(r#"{"access_token":"abc","expires_in":3599}"#).unwrap();
        assert_eq!((t.as_str(), l), ("abc", Duration::from_secs(3599)));
        let (_, l) = oauth_answer(r#"{"access_token":"abc","expires_in":"60"}"#).unwrap();
        assert_eq!(l, Duration::from_secs(60));
        let on = unix_now() + 100;
        let (_, l) =
            oauth_answer(&format!(r#"{{"access_token":"abc","expires_on":"{on}"}}"#)).unwrap();
        assert!(l <= Duration::from_secs(100) && l >= Duration::from_secs(98));
        let e = oauth_answer(r#"{"access_token":"secret-tok"}"#).unwrap_err();
        assert!(!e.contains("secret-tok"), "{e}");
        let e = oauth_answer("not json secret-tok").unwrap_err();
        assert!(!e.contains("secret-tok"), "{e}");
    }

    #[test]
    fn an_oauth_error_shows_its_code_and_first_line_only() {
        let body = r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.\r\nTrace ID: x"}"#;
        assert_eq!(
            error_of(body),
            " invalid_client: AADSTS7000215: Invalid client secret provided."
        );
        assert_eq!(error_of("<html>"), "");
    }

    #[test]
    fn local_times_from_az_are_read() {
        // Times an hour apart read an hour apart, whatever the zone (away
        // from a daylight saving change).
        let a = local_time("2026-06-15 10:00:00.000000").unwrap();
        let b = local_time("2026-06-15 11:00:00.123456").unwrap();
        assert_eq!(b - a, 3600);
        assert_eq!(local_time("soon"), None);
    }
}
