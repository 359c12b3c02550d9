//! Dragonfly mode (`BLOBCACHE_DRAGONFLY`): blob GETs go through the node's
//! Dragonfly daemon (`dfdaemon`), whose proxy fetches each piece of a blob
//! once for the whole cluster, from a peer that has it or else from Azure.
//!
//! What a GET through dfdaemon looks like, and why:
//!
//! - plain HTTP in absolute form (`GET http://<account>.blob.core.windows.net/
//!   <container>/<blob>?<sas>`) to the daemon's proxy port: dfdaemon's proxy
//!   rule (`useTLS: true`) makes its own fetches from Azure HTTPS, and no
//!   certificate has to be intercepted. The daemon runs on the node, so the
//!   plain-HTTP leg stays on the node;
//! - `X-Dragonfly-Tag: <ETag>`: dfdaemon's task is the URL (minus filtered
//!   query parameters), the tag and the piece length; it does not look at
//!   `If-Match` when a peer serves a piece, so the version must be in the
//!   task's identity. Another version of a blob is another task;
//! - `X-Dragonfly-Piece-Length:` [`PIECE_LENGTH`] on every node, whatever its
//!   block size (another piece length is another task, shared with nobody);
//! - `X-Dragonfly-Filtered-Query-Params:` the SAS parameters ([`SAS_PARAMS`]),
//!   so a task does not change when the SAS does (dfdaemon's default filter
//!   does not know Azure's);
//! - `Range` as always: one block, aligned, larger than dfdaemon's 4 MiB
//!   floor below which it fetches from the origin without P2P (the last
//!   block of a blob may be smaller).
//!
//! Shared keys are refused in this mode (see [`check_credential`]); HEAD and
//! List Blobs go direct (or through `HTTPS_PROXY`): the version must come
//! from Azure, and dfdaemon only shares GETs.
//!
//! dfdaemon says where an error came from in `X-Dragonfly-Error-Type`:
//! `backend` is Azure's own answer (a 412 for a replaced blob, a 403), taken
//! as if Azure had sent it; `proxy` and `dfdaemon` are the daemon's. Its
//! P2P answers carry `X-Dragonfly-Task-ID`; an answer without either did not
//! go through P2P: no proxy rule matched, or the address is not a dfdaemon.
//!
//! When the daemon fails (cannot be reached, sends nothing for the idle
//! limit, at most half the fetch timeout, fails itself, or its answer
//! breaks off), the GET goes on
//! directly to Azure at once, and so do all GETs for the next
//! [`DOWN_FOR`]; the first time, a warning says so. With
//! `BLOBCACHE_DRAGONFLY_FALLBACK=0` the daemon's failures are retried like
//! Azure's, within the fetch timeout, and then fail the read.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::auth::Source;
use crate::error::{Error, Result};
use crate::log;
use crate::stats::Stats;
use crate::sync::MutexExt;

/// The piece length asked for on every node.
pub(crate) const PIECE_LENGTH: &str = "16mib";
/// The query parameters of a SAS (account, service and user delegation):
/// left out of dfdaemon's task identity.
pub(crate) const SAS_PARAMS: &str =
    "sv,ss,srt,sp,se,st,spr,sig,sr,sip,skoid,sktid,skt,ske,sks,skv,sdd";
/// dfdaemon fetches a range of at most this many bytes from the origin
/// itself, without P2P.
pub const MIN_P2P_RANGE: u64 = 4 << 20;
/// How long GETs go direct after the daemon failed.
pub(crate) const DOWN_FOR: Duration = Duration::from_secs(60);

/// The daemon of one origin instance, and how it has been doing.
pub(crate) struct Dragonfly {
    /// `http://host:port`.
    url: String,
    pub(crate) fallback: bool,
    /// Until when GETs go direct (after a failure).
    down_until: Mutex<Option<Instant>>,
    /// Set when an answer showed that no proxy rule sends these requests
    /// through P2P: GETs go direct for the rest of the lifecycle.
    no_rule: AtomicBool,
    warned: AtomicBool,
    stats: OnceLock<Arc<Stats>>,
}

/// Why a GET through the daemon did not get an answer to use.
#[derive(Debug)]
pub(crate) struct Trouble {
    pub(crate) why: String,
    /// The daemon will not do better later in this lifecycle (no rule).
    pub(crate) lasting: bool,
}

impl Dragonfly {
    /// The daemon at `url` (already checked by the configuration).
    pub(crate) fn new(url: &str, fallback: bool) -> Dragonfly {
        Dragonfly {
            url: url.to_string(),
            fallback,
            down_until: Mutex::new(None),
            no_rule: AtomicBool::new(false),
            warned: AtomicBool::new(false),
            stats: OnceLock::new(),
        }
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// `host:port`.
    pub(crate) fn host_port(&self) -> &str {
        self.url.trim_start_matches("http://")
    }

    pub(crate) fn attach_stats(&self, stats: &Arc<Stats>) {
        let _ = self.stats.set(stats.clone());
    }

    /// The HTTP client's proxy: every `http://` URL through the daemon.
    pub(crate) fn client_proxy(&self) -> Result<reqwest::Proxy> {
        reqwest::Proxy::http(&self.url).map_err(|e| {
            Error::config(format!(
                "BLOBCACHE_DRAGONFLY={} cannot be used as a proxy: {e}",
                self.url
            ))
        })
    }

    /// Whether the next GET should go through the daemon.
    pub(crate) fn usable(&self) -> bool {
        if self.no_rule.load(Ordering::Relaxed) {
            return false;
        }
        let mut down = self.down_until.locked();
        match *down {
            Some(until) if Instant::now() < until => false,
            Some(_) => {
                *down = None;
                log::info!(
                    "dragonfly: trying dfdaemon at {} again for blob GETs",
                    self.host_port()
                );
                true
            }
            None => true,
        }
    }

    /// A GET through the daemon failed and goes on directly: GETs go
    /// direct for [`DOWN_FOR`] (or for good, when `lasting`); warns the
    /// first time.
    pub(crate) fn fall_back(&self, trouble: &Trouble) {
        if let Some(s) = self.stats.get() {
            s.dragonfly_fallbacks.add(1);
        }
        let newly = if trouble.lasting {
            !self.no_rule.swap(true, Ordering::Relaxed)
        } else {
            let mut down = self.down_until.locked();
            let newly = down.is_none();
            *down = Some(Instant::now() + DOWN_FOR);
            newly
        };
        if !newly {
            return;
        }
        let how_long = if trouble.lasting {
            "from now on".to_string()
        } else {
            format!("for the next {} s", DOWN_FOR.as_secs())
        };
        let m = format!(
            "dragonfly: {}; blob GETs go directly to Azure {how_long} (BLOBCACHE_DRAGONFLY_FALLBACK=0 fails them instead)",
            trouble.why
        );
        if self.warned.swap(true, Ordering::Relaxed) {
            log::info!("{m}");
        } else {
            log::warning!("{m}");
        }
    }

    /// Counts bytes received through the daemon.
    pub(crate) fn received(&self, n: u64) {
        if let Some(s) = self.stats.get() {
            s.bytes_via_dragonfly.add(n);
        }
    }

    /// The extra headers of a GET of the version `etag`.
    pub(crate) fn headers(etag: &str) -> [(&'static str, String); 3] {
        [
            ("x-dragonfly-tag", etag.trim_matches('"').to_string()),
            ("x-dragonfly-piece-length", PIECE_LENGTH.to_string()),
            ("x-dragonfly-filtered-query-params", SAS_PARAMS.to_string()),
        ]
    }

    /// What the daemon's answer says about where it came from: `Ok(())`
    /// for an answer to use (P2P, or Azure's own refusal relayed), the
    /// trouble otherwise.
    pub(crate) fn judge(
        &self,
        status: reqwest::StatusCode,
        h: &reqwest::header::HeaderMap,
    ) -> std::result::Result<(), Trouble> {
        let error_type = super::http::header(h, "x-dragonfly-error-type");
        match error_type.as_deref() {
            Some("backend") => return Ok(()),
            Some(t) => {
                return Err(Trouble {
                    why: format!(
                        "dfdaemon at {} failed the GET itself (HTTP {}, X-Dragonfly-Error-Type: {t}; its log says why)",
                        self.host_port(),
                        status.as_u16()
                    ),
                    lasting: false,
                })
            }
            None => {}
        }
        if super::http::header(h, "x-dragonfly-task-id").is_some() {
            return Ok(());
        }
        Err(Trouble {
            why: format!(
                "the answer from {} (HTTP {}) did not come through Dragonfly's P2P (no X-Dragonfly-Task-ID): add a proxy rule for the blob endpoint to dfdaemon's configuration (regex: 'blob\\.core\\.windows\\.net', useTLS: true; see the README), or check that BLOBCACHE_DRAGONFLY is dfdaemon's proxy address",
                self.host_port(),
                status.as_u16()
            ),
            lasting: true,
        })
    }

    /// A failure to reach or hear from the daemon.
    pub(crate) fn unreachable(&self, why: &str) -> Trouble {
        Trouble {
            why: format!("dfdaemon at {} failed: {why}", self.host_port()),
            lasting: false,
        }
    }
}

/// `url` (an endpoint's blob URL, SAS included) as dfdaemon's proxy takes
/// it: `http://`; its proxy rule's `useTLS` makes its fetches HTTPS again.
/// The port stays as it was given (none for the default).
pub(crate) fn absolute(url: &str) -> String {
    match url.strip_prefix("https://") {
        Some(rest) => format!("http://{rest}"),
        None => url.to_string(),
    }
}

/// Refuses a shared key: dfdaemon fetches each piece with a `Range` of its
/// own, which a Shared Key signature covers, so Azure would refuse every
/// fetch the daemon makes.
pub(crate) fn check_credential(account: &str, source: &Source) -> Result<()> {
    let var = match source {
        Source::Key(var) => *var,
        Source::ConnectionStringKey => "the AccountKey of AZURE_STORAGE_CONNECTION_STRING",
        _ => return Ok(()),
    };
    Err(Error::config(format!(
        "BLOBCACHE_DRAGONFLY is set, but account {account} would use a shared key ({var}): dfdaemon fetches pieces with Range headers of its own, which a Shared Key signature covers, so Azure would refuse them. Use a SAS (AZURE_STORAGE_SAS_TOKEN, with the key unset) or Entra ID (workload or managed identity), or unset BLOBCACHE_DRAGONFLY"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};
    use reqwest::StatusCode;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn https_urls_become_plain_http_with_their_query_and_port() {
        assert_eq!(
            absolute("https://acct.blob.core.windows.net/c/b%20x?sv=1&sig=a%2Bb"),
            "http://acct.blob.core.windows.net/c/b%20x?sv=1&sig=a%2Bb"
        );
        assert_eq!(
            absolute("https://host:8443/acct/c/b"),
            "http://host:8443/acct/c/b"
        );
        assert_eq!(
            absolute("http://127.0.0.1:10000/devstoreaccount1/c/b"),
            "http://127.0.0.1:10000/devstoreaccount1/c/b"
        );
    }

    #[test]
    fn the_tag_is_the_etag_and_the_piece_length_fixed() {
        let h = Dragonfly::headers("\"0x8DC\"");
        assert_eq!(h[0], ("x-dragonfly-tag", "0x8DC".to_string()));
        assert_eq!(h[1], ("x-dragonfly-piece-length", "16mib".to_string()));
        for p in ["sv", "sig", "se", "skoid", "sdd"] {
            assert!(h[2].1.split(',').any(|x| x == p), "{p}");
        }
    }

    #[test]
    fn answers_are_judged_by_where_they_came_from() {
        let d = Dragonfly::new("http://127.0.0.1:4001", true);
        let ok = StatusCode::PARTIAL_CONTENT;
        assert!(d
            .judge(ok, &headers(&[("x-dragonfly-task-id", "abc")]))
            .is_ok());
        assert!(d
            .judge(
                StatusCode::PRECONDITION_FAILED,
                &headers(&[("x-dragonfly-error-type", "backend")])
            )
            .is_ok());
        let t = d
            .judge(
                StatusCode::INTERNAL_SERVER_ERROR,
                &headers(&[("x-dragonfly-error-type", "dfdaemon")]),
            )
            .unwrap_err();
        assert!(!t.lasting && t.why.contains("127.0.0.1:4001"), "{t:?}");
        let t = d.judge(ok, &HeaderMap::new()).unwrap_err();
        assert!(t.lasting && t.why.contains("useTLS"), "{t:?}");
    }

    #[test]
    fn a_failure_sends_gets_direct_for_a_while_and_no_rule_for_good() {
        let d = Dragonfly::new("http://127.0.0.1:4001", true);
        assert!(d.usable());
        d.fall_back(&d.unreachable("connection refused"));
        assert!(!d.usable());
        *d.down_until.locked() = Some(Instant::now());
        assert!(d.usable(), "tried again once the time is up");
        d.fall_back(&d.judge(StatusCode::OK, &HeaderMap::new()).unwrap_err());
        assert!(!d.usable());
        *d.down_until.locked() = None;
        assert!(!d.usable(), "no rule: direct for the rest of the lifecycle");
    }

    #[test]
    fn shared_keys_are_refused_saying_why_and_what_to_use() {
        for s in [
            Source::Key("AZURE_STORAGE_ACCOUNT_KEY"),
            Source::ConnectionStringKey,
        ] {
            let e = check_credential("acct", &s).unwrap_err();
            assert_eq!(e.kind(), crate::error::ErrorKind::Config);
            for w in ["Range", "SAS", "Entra ID", "BLOBCACHE_DRAGONFLY"] {
                assert!(e.message().contains(w), "{w}: {e}");
            }
        }
        for s in [
            Source::Sas("AZURE_STORAGE_SAS_TOKEN"),
            Source::ConnectionStringSas,
            Source::Anonymous,
            Source::EntraId("workload identity".into()),
        ] {
            assert!(check_credential("acct", &s).is_ok(), "{s:?}");
        }
    }
}
