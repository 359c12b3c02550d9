//! One request to Blob Storage and its attempts: sending it, telling an
//! answer from a failure, retrying within the time budget (see [`retry`]),
//! and the final error, which says what was asked, what happened (status,
//! error code, request id), what to do, and how hard it tried.

use std::sync::atomic::{AtomicBool, Ordering};

use reqwest::{Method, Response};

use super::auth::Credential;
use super::http::{self, Failure, Refusal};
use super::retry::{self, Budget};
use crate::error::{Error, ErrorKind, Result};
use crate::log;

/// One storage account as this origin instance uses it.
pub struct Account {
    pub name: String,
    pub endpoint: String,
    pub credential: Credential,
    /// Set when a call gave up because the endpoint could not be reached;
    /// cleared by any answer. While set, calls do not retry.
    unreachable: AtomicBool,
}

impl Account {
    pub fn new(name: String, endpoint: String, credential: Credential) -> Account {
        Account {
            name,
            endpoint,
            credential,
            unreachable: AtomicBool::new(false),
        }
    }

    pub(super) fn budget(&self, limit: std::time::Duration) -> Budget {
        Budget::new(limit, !self.unreachable.load(Ordering::Relaxed))
    }
}

/// What one operation needs besides the account.
pub struct Ctx<'a> {
    pub client: &'a reqwest::Client,
    pub fetch_timeout: std::time::Duration,
}

/// Which request, for messages: "HEAD" or "GET bytes=0-99".
pub(super) struct Op<'a> {
    pub(super) ctx: &'a Ctx<'a>,
    pub(super) account: &'a Account,
    pub(super) url: String,
    pub(super) what: String,
    pub(super) budget: Budget,
}

impl Op<'_> {
    /// A final error: what was asked, what happened, what to do, and how
    /// hard it tried.
    pub(super) fn fail(
        &self,
        kind: ErrorKind,
        detail: &str,
        hint: &str,
        stopped: Option<&str>,
    ) -> Error {
        let mut m = format!("Azure {} failed: {detail}", self.what);
        if !hint.is_empty() {
            m.push_str("; ");
            m.push_str(hint);
        }
        m.push_str(&format!(
            " [{}, {}",
            self.account.endpoint,
            self.budget.summary()
        ));
        if let Some(s) = stopped {
            m.push_str("; ");
            m.push_str(s);
        }
        m.push(']');
        Error::new(kind, crate::redact::redact(&m))
    }

    pub(super) fn refused(&self, r: &Refusal) -> Error {
        let account = &self.account.name;
        let (kind, hint) = match r.status.as_u16() {
            401 | 403 => (
                ErrorKind::Config,
                self.account.credential.source.refused_hint(account),
            ),
            404 => (
                ErrorKind::NotFound,
                match r.code.as_deref() {
                    Some("ContainerNotFound") => {
                        format!("the container does not exist in account {account}; check the container name")
                    }
                    _ => format!(
                        "no such blob in account {account}; check the container and blob name"
                    ),
                },
            ),
            _ => (ErrorKind::Origin, String::new()),
        };
        self.fail(kind, &r.to_string(), &hint, None)
    }

    /// Handles a failed attempt: waits and returns `Ok` to try again, or
    /// returns the final error.
    /// Sends the request (no extra headers) until the service answers with
    /// success, retrying failures and refusals within the budget.
    pub(super) async fn answered(&mut self, method: Method) -> Result<reqwest::Response> {
        loop {
            let response = match self.send(&[], method.clone()).await? {
                Ok(r) => r,
                Err(f) => {
                    self.after_failure(f).await?;
                    continue;
                }
            };
            if !response.status().is_success() {
                let r = http::refusal(response, &self.budget).await;
                self.after_failure(Failure::Refused(r)).await?;
                continue;
            }
            return Ok(response);
        }
    }

    pub(super) async fn after_failure(&mut self, failure: Failure) -> Result<()> {
        if let Failure::Refused(r) = &failure {
            if !failure.retryable() {
                return Err(self.refused(r));
            }
        }
        match self
            .budget
            .next_wait(failure.is_connect(), failure.retry_after())
        {
            Ok(wait) => {
                log::debug!(
                    "azure: {} {}: {}; retrying in {}",
                    self.what,
                    self.url,
                    failure.describe(&self.account.endpoint),
                    retry::fmt_duration(wait)
                );
                tokio::time::sleep(wait).await;
                Ok(())
            }
            Err(why) => {
                let hint = if failure.is_connect() {
                    self.account.unreachable.store(true, Ordering::Relaxed);
                    "check the network and the endpoint (BLOBCACHE_AZURE_ENDPOINT, AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_ENDPOINT_SUFFIX)"
                } else {
                    ""
                };
                let kind = if failure.is_connect() {
                    ErrorKind::Unreachable
                } else {
                    ErrorKind::Origin
                };
                Err(self.fail(
                    kind,
                    &failure.describe(&self.account.endpoint),
                    hint,
                    Some(&why),
                ))
            }
        }
    }

    pub(super) async fn send(
        &mut self,
        headers: &[(&'static str, String)],
        method: Method,
    ) -> Result<Result<Response, Failure>> {
        self.budget.attempts += 1;
        let r = http::send(
            self.ctx.client,
            &self.account.credential,
            &self.account.name,
            method,
            &self.url,
            headers,
            &self.budget,
        )
        .await?;
        if let Ok(resp) = &r {
            self.budget.answered();
            self.account.unreachable.store(false, Ordering::Relaxed);
            log::debug!(
                "azure: {} {} -> {} (request id {}, attempt {}, {})",
                self.what,
                self.url,
                resp.status().as_u16(),
                http::request_id(resp.headers())
                    .as_deref()
                    .unwrap_or("none"),
                self.budget.attempts,
                retry::fmt_duration(self.budget.elapsed())
            );
        }
        Ok(r)
    }
}
