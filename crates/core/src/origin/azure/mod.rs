//! The Azure Blob Storage origin. [`AzureOrigin`] holds the accounts and the
//! runtime, and runs each call (`AzureOrigin::call`); the rest, a file per
//! concern:
//!
//! - `endpoint.rs`: which URL an account's blobs are at, and how container
//!   and blob names are percent-encoded into it;
//! - [`auth`]: which credential an account uses (the order is documented
//!   there) and signing requests with it, through `object_store`;
//! - `http.rs`: the HTTP client, and reading headers and errors from it;
//! - `proxy.rs`: which forward proxy, if any, requests go through
//!   (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`, `BLOBCACHE_PROXY`);
//! - `dragonfly.rs`: Dragonfly mode (`BLOBCACHE_DRAGONFLY`): blob GETs through
//!   the node's dfdaemon, and going direct when it fails;
//! - `retry.rs`: what is retried, the backoff, and the time budget;
//! - `request.rs`: one request and its attempts: signing and sending each,
//!   retrying as `retry.rs` says, and the final error message;
//! - `read.rs`: `stat` (HEAD: size and ETag) and `read` (ranged GET
//!   conditional on the ETag, streamed, resumed after a break);
//! - `list.rs`: List Blobs, page by page.
//!
//! The requests run on a Tokio runtime (two worker threads) that this origin
//! owns, created on first use; callers (the cache's fill threads, or a
//! reader for pass-through reads) block on their own request with
//! `Handle::block_on`, so the bytes are handled on the calling thread.
//! [`Origin::shutdown`] cancels every request in flight, waits briefly for
//! the callers to return, and stops the runtime, joining its threads; it
//! never waits on the network. Each lifecycle of the library builds a new
//! origin (and a forked child builds its own), so nothing here outlives one
//! except Entra ID tokens, which are plain data (`token.rs`).

pub mod auth;
mod dragonfly;
mod endpoint;
mod http;
mod list;
pub mod proxy;
mod read;
mod request;
mod retry;
mod token;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::runtime::{Handle, Runtime};
use tokio::sync::watch;

use crate::config::{AzureAuth, Config};
use crate::error::{Error, ErrorKind, Result};
use crate::log;
use crate::names::BlobKey;
use crate::origin::{Listed, ObjectInfo, Origin, Sink};
use crate::stats::Stats;
use crate::sync::MutexExt;

pub use auth::AzureEnv;
pub use dragonfly::MIN_P2P_RANGE as DRAGONFLY_MIN_P2P_RANGE;
use request::{Account, Call, Clients};

/// How long `shutdown` waits for cancelled calls to return, and then for the
/// runtime's threads to stop.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);
const RUNTIME_STOP: Duration = Duration::from_millis(500);

pub struct AzureOrigin {
    endpoint_template: Option<String>,
    anonymous: bool,
    fetch_timeout: Duration,
    concurrency: usize,
    env: AzureEnv,
    proxies: proxy::Proxies,
    /// Dragonfly mode's daemon, if set.
    dragonfly: Option<Arc<dragonfly::Dragonfly>>,
    accounts: Mutex<HashMap<String, Arc<Account>>>,
    runtime: Mutex<Slot>,
    stopped: AtomicBool,
    in_flight: AtomicUsize,
    cancel: watch::Sender<bool>,
    list_page_size: u32,
}

/// Names asked for per List Blobs request (the service's maximum).
const LIST_PAGE_SIZE: u32 = 5000;

enum Slot {
    NotStarted,
    Running {
        runtime: Runtime,
        client: reqwest::Client,
        /// Through dfdaemon (Dragonfly mode).
        dragonfly_client: Option<reqwest::Client>,
    },
    Stopped,
}

/// Counts a call in flight for as long as it lives.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn shut_down() -> Error {
    Error::new(
        ErrorKind::Shutdown,
        "the library was shut down while this Azure request was in flight",
    )
}

impl AzureOrigin {
    /// An origin reading credentials from the process environment. Cheap: no
    /// network, no threads until the first request.
    pub fn new(config: &Config) -> Result<AzureOrigin> {
        AzureOrigin::with_env(config, AzureEnv::from_process())
    }

    /// An origin reading credentials from `env` instead of the process
    /// environment (for tests and embedders).
    pub fn with_env(config: &Config, env: AzureEnv) -> Result<AzureOrigin> {
        env.register_secrets();
        let proxies = proxy::Proxies::from_env(&env, config.proxy)?;
        let dragonfly = config
            .dragonfly
            .as_deref()
            .map(|url| Arc::new(dragonfly::Dragonfly::new(url, config.dragonfly_fallback)));
        if dragonfly.is_some() && config.block_size <= dragonfly::MIN_P2P_RANGE {
            log::warning!(
                "dragonfly: blocks of {} bytes are not larger than 4 MiB, and dfdaemon fetches ranges that small from Azure itself, without P2P; set BLOBCACHE_BLOCK_SIZE=8M or more",
                config.block_size
            );
        }
        Ok(AzureOrigin {
            proxies,
            dragonfly,
            endpoint_template: config.azure_endpoint.clone(),
            anonymous: config.azure_auth == AzureAuth::Anonymous,
            fetch_timeout: config.fetch_timeout,
            concurrency: config.fetch_concurrency,
            env,
            accounts: Mutex::new(HashMap::new()),
            runtime: Mutex::new(Slot::NotStarted),
            stopped: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            cancel: watch::channel(false).0,
            list_page_size: LIST_PAGE_SIZE,
        })
    }

    /// Sets how many names one List Blobs request asks for (tests use a
    /// small number to exercise paging).
    pub fn set_list_page_size(&mut self, n: u32) {
        self.list_page_size = n.clamp(1, LIST_PAGE_SIZE);
    }

    /// The account's endpoint and credential, set up on first use.
    fn account(&self, name: &str) -> Result<Arc<Account>> {
        let mut accounts = self.accounts.locked();
        if let Some(a) = accounts.get(name) {
            return Ok(a.clone());
        }
        let connection = self.env.connection_string();
        let endpoint = endpoint::resolve(
            name,
            self.endpoint_template.as_deref(),
            connection.as_ref(),
            self.env.get("AZURE_STORAGE_ENDPOINT_SUFFIX"),
        )?;
        let credential =
            auth::Credential::choose(name, &self.env, self.anonymous, self.fetch_timeout)?
                .with_proxies(&self.proxies);
        if self.dragonfly.is_some() {
            dragonfly::check_credential(name, &credential.source)?;
        }
        log::debug!(
            "azure: account {name} at {endpoint}, credential: {}",
            credential.source.describe()
        );
        let proxy = self.proxies.for_endpoint(&endpoint).cloned();
        let route = self.proxies.route(&endpoint);
        if let Some(d) = &self.dragonfly {
            log::info!(
                "azure: blob GETs to {endpoint} go through dfdaemon at {} (Dragonfly); HEAD and listing go {route}",
                d.host_port()
            );
        } else if proxy.is_some() {
            log::info!("azure: requests to {endpoint} go {route}");
        } else {
            log::debug!("azure: requests to {endpoint} go {route}");
        }
        let account = Arc::new(Account::new(name.to_string(), endpoint, credential, proxy));
        accounts.insert(name.to_string(), account.clone());
        Ok(account)
    }

    /// The runtime's handle and the HTTP clients, starting them on first
    /// use.
    fn runtime(&self) -> Result<(Handle, Clients)> {
        let mut slot = self.runtime.locked();
        if let Slot::NotStarted = *slot {
            // Built with forks held off: it starts its worker threads here
            // (see fork.rs on starting threads).
            let runtime = crate::fork::section(|| {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .max_blocking_threads(8)
                    .thread_name("blobcache-azure")
                    .enable_all()
                    .build()
            })
            .map_err(|e| Error::internal(format!("cannot start the Azure I/O runtime: {e}")))?;
            let (client, dragonfly_client) = {
                let _in_runtime = runtime.enter();
                let client = http::client(self.concurrency, self.fetch_timeout, &self.proxies)?;
                let dragonfly_client = match &self.dragonfly {
                    Some(d) => Some(http::client_via(
                        self.concurrency,
                        self.fetch_timeout,
                        Some(d.client_proxy()?),
                    )?),
                    None => None,
                };
                (client, dragonfly_client)
            };
            *slot = Slot::Running {
                runtime,
                client,
                dragonfly_client,
            };
        }
        match &*slot {
            Slot::Running {
                runtime,
                client,
                dragonfly_client,
            } => {
                let dragonfly = self.dragonfly.clone().zip(dragonfly_client.clone());
                Ok((
                    runtime.handle().clone(),
                    Clients {
                        direct: client.clone(),
                        dragonfly,
                    },
                ))
            }
            _ => Err(shut_down()),
        }
    }

    /// Runs one call to `account` to completion on the calling thread, or
    /// until `shutdown` cancels it: sets the account up (on first use),
    /// hops onto the runtime, and keeps every credential out of the error.
    /// `op` says what the call does with the account and the HTTP client.
    fn call<T, F>(&self, account: &str, op: impl FnOnce(Call) -> F) -> Result<T>
    where
        F: Future<Output = Result<T>>,
    {
        let account = self.account(account)?;
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let _counted = InFlight(&self.in_flight);
        if self.stopped.load(Ordering::SeqCst) {
            return Err(shut_down());
        }
        if tokio::task::try_id().is_some() {
            return Err(Error::internal(
                "blobcache's blocking read was called from inside a Tokio task; call it from a plain thread (for example with tokio::task::spawn_blocking)",
            ));
        }
        let (handle, clients) = self.runtime()?;
        let mut cancel = self.cancel.subscribe();
        let work = op(Call::new(account, clients, self.fetch_timeout));
        let result = handle.block_on(async move {
            tokio::select! {
                biased;
                _ = cancel.wait_for(|stop| *stop) => Err(shut_down()),
                r = work => r,
            }
        });
        // Whatever went wrong, no credential leaves this module.
        result.map_err(|e| Error::new(e.kind(), crate::redact::redact(e.message())))
    }

    /// The endpoint an account's requests go to (for `doctor`).
    pub fn endpoint_of(&self, account: &str) -> Result<String> {
        Ok(self.account(account)?.endpoint.clone())
    }

    /// How an account's requests go: through which proxy (without its
    /// password), or direct and why (for `doctor`).
    pub fn route_of(&self, account: &str) -> Result<String> {
        let route = self.proxies.route(&self.account(account)?.endpoint);
        Ok(match &self.dragonfly {
            Some(d) => format!(
                "blob GETs through dfdaemon at {} (Dragonfly; {}), HEAD and listing {route}",
                d.url(),
                if d.fallback {
                    "direct to Azure when it fails"
                } else {
                    "no fallback"
                }
            ),
            None => route,
        })
    }

    /// The credential an account uses, described without its value.
    pub fn credential_of(&self, account: &str) -> Result<String> {
        Ok(self.account(account)?.credential.source.describe())
    }
}

impl Origin for AzureOrigin {
    fn attach_stats(&self, stats: &Arc<Stats>) {
        if let Some(d) = &self.dragonfly {
            d.attach_stats(stats);
        }
    }

    fn describe(&self) -> String {
        match &self.endpoint_template {
            Some(t) => format!("azure ({t})"),
            None => "azure".into(),
        }
    }

    fn stat(&self, key: &BlobKey) -> Result<ObjectInfo> {
        self.call(&key.account, |call| read::stat(call, key, false))
    }

    fn stat_quick(&self, key: &BlobKey) -> Result<ObjectInfo> {
        self.call(&key.account, |call| read::stat(call, key, true))
    }

    fn list(&self, account: &str, container: &str, prefix: &str) -> Result<Vec<Listed>> {
        BlobKey::new(account, container, "x")?;
        let page = self.list_page_size;
        self.call(account, |call| list::list(call, container, prefix, page))
    }

    fn read(
        &self,
        key: &BlobKey,
        info: &ObjectInfo,
        offset: u64,
        len: u64,
        sink: &mut Sink<'_>,
    ) -> Result<()> {
        self.call(&key.account, |call| {
            read::read(call, key, info, offset, len, sink)
        })
    }

    /// Every GET is `If-Match` the ETag, and its answer's ETag and
    /// Content-Range are checked before a byte of it is delivered.
    fn streams_final_bytes(&self) -> bool {
        true
    }

    fn shutdown(&self) {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        self.cancel.send_replace(true);
        // Cancelled calls return at their next poll; wait for them so none
        // is still inside the runtime when it stops.
        let start = Instant::now();
        while self.in_flight.load(Ordering::SeqCst) > 0 && start.elapsed() < SHUTDOWN_WAIT {
            std::thread::sleep(Duration::from_millis(1));
        }
        let busy = self.in_flight.load(Ordering::SeqCst);
        let slot = std::mem::replace(&mut *self.runtime.locked(), Slot::Stopped);
        if let Slot::Running {
            runtime,
            client,
            dragonfly_client,
        } = slot
        {
            drop((client, dragonfly_client));
            if busy == 0 && Handle::try_current().is_err() {
                runtime.shutdown_timeout(RUNTIME_STOP);
            } else if busy == 0 {
                // Inside some runtime (an embedder's), blocking is not allowed.
                runtime.shutdown_background();
            } else {
                // A caller is stuck outside our control (in its sink, say):
                // stopping the runtime under it could make it panic. Leave
                // the runtime's threads idle instead.
                log::debug!("azure: {busy} calls still running at shutdown; leaving the runtime");
                std::mem::forget(runtime);
            }
        }
        self.accounts.locked().clear();
    }
}

impl Drop for AzureOrigin {
    fn drop(&mut self) {
        self.shutdown();
    }
}
