//! `az://` URIs as operators write them: `az://<account>/<container>/<path>`,
//! or `az://<container>/<path>` (as the streamer writes them) with the
//! account from `--account` or `AZURE_STORAGE_ACCOUNT_NAME`.

use blobcache_core::BlobKey;

/// Where a command acts: an account, perhaps a container, and a path inside
/// it (a blob name, a prefix, or empty for the whole container).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub account: String,
    pub container: Option<String>,
    pub path: String,
}

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
    let streamer_form = match (flag, env) {
        (Some(_), _) => true,
        (None, Some(a)) => first != a,
        (None, None) => false,
    };
    let (account, container, path) = if streamer_form {
        let account = flag.or(env).unwrap_or_default();
        (account.to_string(), Some(first), after.unwrap_or(""))
    } else {
        match after {
            None => (first.to_string(), None, ""),
            Some(a) => match a.split_once('/') {
                Some((c, p)) => (first.to_string(), Some(c), p),
                None => (first.to_string(), Some(a), ""),
            },
        }
    };
    let container = container.filter(|c| !c.is_empty());
    if container.is_none() && !path.is_empty() {
        return Err(format!("{uri:?} names no container; {FORMS}"));
    }
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
    })
}

impl Location {
    /// The blob this location names exactly (for commands that need one).
    pub fn blob(&self, uri: &str) -> Result<BlobKey, String> {
        match &self.container {
            Some(c) if !self.path.is_empty() && !self.path.ends_with('/') => {
                BlobKey::new(&self.account, c, &self.path).map_err(|e| format!("{uri:?}: {e}"))
            }
            _ => Err(format!("{uri:?} names no blob; {FORMS}")),
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

    fn loc(a: &str, c: Option<&str>, p: &str) -> Location {
        Location {
            account: a.into(),
            container: c.map(str::to_string),
            path: p.into(),
        }
    }

    #[test]
    fn both_forms_parse() {
        assert_eq!(
            parse("az://acct/models/llama/x.bin", None, None).unwrap(),
            loc("acct", Some("models"), "llama/x.bin")
        );
        assert_eq!(
            parse("az://models/llama/", Some("acct"), None).unwrap(),
            loc("acct", Some("models"), "llama/")
        );
        assert_eq!(
            parse("az://models/llama", None, Some("acct")).unwrap(),
            loc("acct", Some("models"), "llama")
        );
        assert_eq!(
            parse("az://acct/models/x", None, Some("acct")).unwrap(),
            loc("acct", Some("models"), "x")
        );
        assert_eq!(
            parse("az://acct", None, None).unwrap(),
            loc("acct", None, "")
        );
        assert_eq!(
            parse("az://acct/models", None, None).unwrap(),
            loc("acct", Some("models"), "")
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
