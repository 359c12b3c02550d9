//! `az://` URIs as operators write them: `az://<account>/<container>/<path>`,
//! or `az://<container>/<path>` (as the streamer writes them) with the
//! account from `--account` or `AZURE_STORAGE_ACCOUNT_NAME`.
//!
//! The rule, in order: with `--account NAME`, the URI is the streamer's
//! form. Else with `AZURE_STORAGE_ACCOUNT_NAME` set, a first segment equal
//! to that account means the full form, any other the streamer's. Else the
//! first segment is *assumed* to be the account (the full form): nothing
//! else names one, and the commands say so ([`Location::assumed_account`]),
//! since `az://models/llama` written in the streamer's form would otherwise
//! read account `models` and fail with a puzzling 404 or 403.

use blobcache_core::BlobKey;

/// Where a command acts: an account, perhaps a container, and a path inside
/// it (a blob name, a prefix, or empty for the whole container).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub account: String,
    pub container: Option<String>,
    pub path: String,
    /// Where the account came from.
    pub from: AccountFrom,
}

/// Where a [`Location`]'s account came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccountFrom {
    /// `--account NAME`.
    Flag,
    /// `AZURE_STORAGE_ACCOUNT_NAME` (the URI's first segment, if it named
    /// the account, agreed with it).
    Env,
    /// The URI's first segment, assumed to be the account because neither
    /// `--account` nor `AZURE_STORAGE_ACCOUNT_NAME` named one.
    Uri,
}

/// Why an account was read from a URI's first segment.
const WHY_ASSUMED: &str = "neither --account nor AZURE_STORAGE_ACCOUNT_NAME names one, so the first segment is taken as the account (az://<account>/<container>/<path>)";

pub const FORMS: &str = "use az://<account>/<container>/<path>, or az://<container>/<path> with --account NAME (or AZURE_STORAGE_ACCOUNT_NAME set)";

/// Parses `uri`. With `--account` (`flag`), the URI is always the streamer's
/// form. Otherwise, with `AZURE_STORAGE_ACCOUNT_NAME` (`env`) set, a first
/// segment equal to that account means the full form, any other the
/// streamer's; without either, the full form.
pub fn parse(uri: &str, flag: Option<&str>, env: Option<&str>) -> Result<Location, String> {
    let rest = uri
        .strip_prefix("az://")
        .ok_or_else(|| format!("{uri:?} is not an az:// URI; {FORMS}"))?;
    let (first, after) = match rest.split_once('/') {
        Some((f, a)) => (f, Some(a)),
        None => (rest, None),
    };
    if first.is_empty() {
        return Err(format!("{uri:?} names no account or container; {FORMS}"));
    }
    let (streamer_form, from) = match (flag, env) {
        (Some(_), _) => (true, AccountFrom::Flag),
        (None, Some(a)) => (first != a, AccountFrom::Env),
        (None, None) => (false, AccountFrom::Uri),
    };
    let (account, container, path) = if streamer_form {
        let account = flag.or(env).unwrap_or_default();
        (account, Some(first), after.unwrap_or(""))
    } else {
        match after {
            None => (first, None, ""),
            Some(a) => match a.split_once('/') {
                Some((c, p)) => (first, Some(c), p),
                None => (first, Some(a), ""),
            },
        }
    };
    let container = container.filter(|c| !c.is_empty());
    if container.is_none() && !path.is_empty() {
        return Err(format!("{uri:?} names no container; {FORMS}"));
    }
    let account = account.to_string();
    // The library's own name rules, with a stand-in blob name for prefixes.
    let probe = path.trim_end_matches('/');
    BlobKey::new(
        &account,
        container.unwrap_or("c"),
        if probe.is_empty() { "x" } else { probe },
    )
    .map_err(|e| format!("{uri:?}: {e}"))?;
    Ok(Location {
        account,
        container: container.map(str::to_string),
        path: path.to_string(),
        from,
    })
}

impl Location {
    /// The blob this location names exactly (for commands that need one).
    pub fn blob(&self, uri: &str) -> Result<BlobKey, String> {
        match &self.container {
            Some(c) if !self.path.is_empty() && !self.path.ends_with('/') => {
                BlobKey::new(&self.account, c, &self.path).map_err(|e| format!("{uri:?}: {e}"))
            }
            _ => Err(format!("{uri:?} names no blob{}; {FORMS}", self.read_as())),
        }
    }

    /// The container, or a usage error saying the URI names none.
    pub fn container(&self, uri: &str) -> Result<&str, String> {
        self.container
            .as_deref()
            .ok_or_else(|| format!("{uri:?} names no container{}; {FORMS}", self.read_as()))
    }

    /// ` (read as account "x", ...)` when the account was assumed, for a
    /// message saying the URI lacks a part.
    fn read_as(&self) -> String {
        match self.from {
            AccountFrom::Uri => format!(
                " (read as account {:?}{}: {WHY_ASSUMED})",
                self.account,
                self.container
                    .as_ref()
                    .map_or(String::new(), |c| format!(", container {c:?}"))
            ),
            AccountFrom::Flag | AccountFrom::Env => String::new(),
        }
    }

    /// Which account `uri` was read with, and why, when it was assumed
    /// (neither `--account` nor `AZURE_STORAGE_ACCOUNT_NAME` named one).
    pub fn assumed_account(&self, uri: &str) -> Option<String> {
        (self.from == AccountFrom::Uri).then(|| {
            format!(
                "{uri} is read as account {:?}{}: {WHY_ASSUMED}",
                self.account,
                self.container
                    .as_ref()
                    .map_or(String::new(), |c| format!(", container {c:?}"))
            )
        })
    }

    /// What to do when the origin refuses or cannot find an assumed
    /// account: `; ...` to append to the error, or nothing.
    pub fn account_hint(&self) -> String {
        match self.from {
            AccountFrom::Uri => format!(
                "; the account {:?} was assumed from the URI ({WHY_ASSUMED}): if {:?} is a container, set AZURE_STORAGE_ACCOUNT_NAME or pass --account NAME, or write az://<account>/{}/...",
                self.account, self.account, self.account
            ),
            AccountFrom::Flag | AccountFrom::Env => String::new(),
        }
    }

    /// Whether `key` lies at or under this location: the same account and
    /// container, and a blob name equal to the path, under it as a folder
    /// (`path/...`), or starting with it when the path ends in `/`.
    pub fn covers(&self, key: &BlobKey) -> bool {
        key.account == self.account
            && self
                .container
                .as_ref()
                .map_or(true, |c| *c == key.container)
            && covers_name(&self.path, &key.blob)
    }
}

/// Whether blob `name` is at or under `path` (see [`Location::covers`]).
pub fn covers_name(path: &str, name: &str) -> bool {
    if path.is_empty() || path.ends_with('/') {
        return name.starts_with(path);
    }
    name == path || (name.starts_with(path) && name.as_bytes().get(path.len()) == Some(&b'/'))
}

/// `az://account/container/blob`
pub fn uri_of(key: &BlobKey) -> String {
    format!("az://{}/{}/{}", key.account, key.container, key.blob)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(a: &str, c: Option<&str>, p: &str, from: AccountFrom) -> Location {
        Location {
            account: a.into(),
            container: c.map(str::to_string),
            path: p.into(),
            from,
        }
    }

    #[test]
    fn both_forms_parse_and_say_where_the_account_came_from() {
        use AccountFrom::*;
        assert_eq!(
            parse("az://acct/models/llama/x.bin", None, None).unwrap(),
            loc("acct", Some("models"), "llama/x.bin", Uri)
        );
        assert_eq!(
            parse("az://models/llama/", Some("acct"), None).unwrap(),
            loc("acct", Some("models"), "llama/", Flag)
        );
        assert_eq!(
            parse("az://models/llama", Some("acct"), Some("other")).unwrap(),
            loc("acct", Some("models"), "llama", Flag)
        );
        assert_eq!(
            parse("az://models/llama", None, Some("acct")).unwrap(),
            loc("acct", Some("models"), "llama", Env)
        );
        assert_eq!(
            parse("az://acct/models/x", None, Some("acct")).unwrap(),
            loc("acct", Some("models"), "x", Env)
        );
        assert_eq!(
            parse("az://acct", None, None).unwrap(),
            loc("acct", None, "", Uri)
        );
        assert_eq!(
            parse("az://acct/models", None, None).unwrap(),
            loc("acct", Some("models"), "", Uri)
        );
    }

    #[test]
    fn an_assumed_account_is_named_with_the_reason_and_the_fix() {
        let uri = "az://models/llama-3-8b";
        let l = parse(uri, None, None).unwrap();
        let said = l.assumed_account(uri).unwrap();
        for part in [
            "az://models/llama-3-8b is read as account \"models\", container \"llama-3-8b\"",
            "neither --account nor AZURE_STORAGE_ACCOUNT_NAME names one",
            "--account",
        ] {
            assert!(said.contains(part), "{part:?} missing: {said}");
        }
        let hint = l.account_hint();
        for part in [
            "AZURE_STORAGE_ACCOUNT_NAME",
            "--account NAME",
            "az://<account>/models/...",
        ] {
            assert!(hint.contains(part), "{part:?} missing: {hint}");
        }
        // Named by --account or the variable: nothing to say.
        for l in [
            parse(uri, Some("acct"), None).unwrap(),
            parse(uri, None, Some("acct")).unwrap(),
        ] {
            assert_eq!(l.assumed_account(uri), None);
            assert_eq!(l.account_hint(), "");
        }
        // A URI lacking a part says how it was read.
        let e = parse("az://models", None, None)
            .unwrap()
            .container("az://models")
            .unwrap_err();
        assert!(
            e.contains("names no container (read as account \"models\"")
                && e.contains("AZURE_STORAGE_ACCOUNT_NAME"),
            "{e}"
        );
    }

    #[test]
    fn bad_uris_are_refused_with_the_accepted_forms() {
        for bad in [
            "s3://a/b/c",
            "az://",
            "az:///c/x",
            "az://a/c/../x",
            "az://a//x",
        ] {
            let e = parse(bad, None, None).unwrap_err();
            assert!(
                e.contains(bad.trim_start_matches("az://")) || e.contains("az://"),
                "{e}"
            );
        }
        assert!(parse("az://a/c/", None, None)
            .unwrap()
            .blob("az://a/c/")
            .is_err());
    }

    #[test]
    fn a_path_covers_itself_and_what_is_under_it_as_a_folder() {
        assert!(covers_name("m/llama", "m/llama"));
        assert!(covers_name("m/llama", "m/llama/a.bin"));
        assert!(!covers_name("m/llama", "m/llama-2/a.bin"));
        assert!(covers_name("m/ll", "m/ll/x"));
        assert!(covers_name("m/", "m/llama-2/a.bin"));
        assert!(covers_name("", "anything"));
    }
}
