//! `server.backend` and the `[server.cluster]` table: where a cluster of server nodes
//! keeps its metadata (PostgreSQL) and its content (an S3-compatible bucket).
//!
//! Only the form of each value is checked here; whether the database and the bucket
//! answer is checked when the server starts (`server::cluster`), with errors that name
//! the same keys.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::spanned::{Cx, Section};
use super::{ConfigError, DEFAULT_GC_GRACE};

pub(super) const CLUSTER_KEYS: &[&str] = &[
    "node_name",
    "postgres",
    "postgres_ca_file",
    "s3_endpoint",
    "s3_region",
    "s3_bucket",
    "s3_access_key_id",
    "s3_secret_access_key",
    "s3_secret_access_key_file",
    "gc_grace",
];

/// Where the server role keeps accounts, folders and content (`server.backend`).
#[derive(Debug, Clone, PartialEq)]
pub enum Backend {
    /// SQLite files and the folders as directory trees under `data_dir` (the default).
    Embedded,
    /// PostgreSQL and an S3-compatible bucket, shared by several nodes.
    Cluster(Box<ClusterSection>),
}

/// `[server.cluster]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSection {
    /// This node's name among the nodes, in logs and status (`node_name`).
    pub node_name: String,
    /// A libpq connection string or `postgresql://` URL (`postgres`).
    pub postgres: Hidden,
    /// PEM certificates of the CAs the database's TLS certificate may be signed by,
    /// besides the system's (`postgres_ca_file`).
    pub postgres_ca_file: Option<PathBuf>,
    /// `http(s)://HOST[:PORT]` of the S3 API (`s3_endpoint`).
    pub s3_endpoint: String,
    pub s3_region: String,
    pub s3_bucket: String,
    pub s3_access_key_id: String,
    pub s3_secret_access_key: S3Secret,
    /// How long content that nothing refers to is kept before it is deleted (`gc_grace`):
    /// longer than any push and than the window a backup may be restored from.
    pub gc_grace: Duration,
}

/// The bucket's secret key, written in the config or in a file of its own.
#[derive(Debug, Clone, PartialEq)]
pub enum S3Secret {
    Inline(Hidden),
    File(PathBuf),
}

/// A value that may hold a password: compared and cloned, never printed.
#[derive(Clone, PartialEq)]
pub struct Hidden(pub String);

impl fmt::Debug for Hidden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"(hidden)\"")
    }
}

/// `server.backend`, and `[server.cluster]` when it says "cluster".
pub(super) fn backend(cx: &Cx, server: &Section) -> Result<Backend, ConfigError> {
    let table = server.table.get("cluster");
    let cluster_line = cx.key_line(server.table, "cluster");
    match server.string(cx, "backend", "\"embedded\"")? {
        None | Some(("embedded", _)) => match table {
            None => Ok(Backend::Embedded),
            Some(_) => Err(cx.err(
                cluster_line,
                server.key("cluster"),
                "[server.cluster] is read only with backend = \"cluster\" in [server]; \
                 add that line, or remove the table",
            )),
        },
        Some(("cluster", line)) => {
            if cfg!(not(unix)) {
                return Err(cx.err(
                    line,
                    server.key("backend"),
                    "the cluster backend runs on Linux nodes only; use \"embedded\" here",
                ));
            }
            let Some(item) = table else {
                return Err(cx.err(
                    line,
                    server.key("backend"),
                    "backend = \"cluster\" needs a [server.cluster] table with `postgres` and \
                     the `s3_…` keys; see docs/cluster.md",
                ));
            };
            let section = cx.section("server.cluster", "[server.cluster]", item, cluster_line)?;
            cluster(cx, &section).map(|c| Backend::Cluster(Box::new(c)))
        }
        Some((other, line)) => Err(cx.err(
            line,
            server.key("backend"),
            format!("unknown backend {other:?}; use \"embedded\" or \"cluster\""),
        )),
    }
}

fn cluster(cx: &Cx, s: &Section) -> Result<ClusterSection, ConfigError> {
    s.check_keys(cx, CLUSTER_KEYS)?;
    let text = |key: &str, example: &str| -> Result<String, ConfigError> {
        let value = s.string(cx, key, example)?;
        let (value, line) = s.required(cx, key, value, &format!("`{key} = {example}`"))?;
        if value.trim().is_empty() {
            let message = format!("`{key}` is empty; write e.g. {example}");
            return Err(cx.err(line, s.key(key), message));
        }
        Ok(value.to_owned())
    };
    let node_name = text("node_name", "\"node-1\"")?;
    let postgres = text(
        "postgres",
        "\"postgresql://filesync@db.example.com/filesync\"",
    )?;
    let postgres_ca_file = s.path(cx, "postgres_ca_file")?.map(|(path, _)| path);
    let s3_endpoint = text("s3_endpoint", "\"https://s3.example.com\"")?;
    if !(s3_endpoint.starts_with("http://") || s3_endpoint.starts_with("https://")) {
        let line = cx.key_line(s.table, "s3_endpoint");
        let message = format!(
            "{s3_endpoint:?} is not a URL of an S3 API; write http:// or https:// and the \
             host, e.g. \"https://s3.example.com\""
        );
        return Err(cx.err(line, s.key("s3_endpoint"), message));
    }
    let s3_region = text("s3_region", "\"garage\"")?;
    let s3_bucket = text("s3_bucket", "\"filesync\"")?;
    let s3_access_key_id = text("s3_access_key_id", "\"GK…\"")?;
    let inline = s.string(cx, "s3_secret_access_key", "\"…\"")?;
    let file = s.path(cx, "s3_secret_access_key_file")?;
    let s3_secret_access_key = match (inline, file) {
        (Some((secret, _)), None) => S3Secret::Inline(Hidden(secret.to_owned())),
        (None, Some((path, _))) => S3Secret::File(path),
        (Some(_), Some((_, line))) => {
            return Err(cx.err(
                line,
                s.key("s3_secret_access_key_file"),
                "give the secret key once: either `s3_secret_access_key` or \
                 `s3_secret_access_key_file`",
            ));
        }
        (None, None) => {
            return Err(cx.err(
                s.line,
                s.key("s3_secret_access_key"),
                "this [server.cluster] has no secret key for the bucket; add \
                 `s3_secret_access_key_file = \"/etc/filesync/s3-secret\"` (a file holding \
                 only the key) or `s3_secret_access_key = \"…\"`",
            ));
        }
    };
    let gc_grace = match s.string(cx, "gc_grace", "\"7days\"")? {
        None => DEFAULT_GC_GRACE,
        Some((text, line)) => match humantime::parse_duration(text) {
            Ok(grace) if grace >= Duration::from_secs(3600) => grace,
            Ok(_) => {
                let message = format!(
                    "{text:?} is too short: content a push is still uploading must outlive it; \
                     the minimum is \"1h\", the default \"7days\""
                );
                return Err(cx.err(line, s.key("gc_grace"), message));
            }
            Err(e) => {
                let message =
                    format!("{text:?} is not a duration ({e}); write e.g. \"7days\" or \"36h\"");
                return Err(cx.err(line, s.key("gc_grace"), message));
            }
        },
    };
    Ok(ClusterSection {
        node_name,
        postgres: Hidden(postgres),
        postgres_ca_file,
        s3_endpoint,
        s3_region,
        s3_bucket,
        s3_access_key_id,
        s3_secret_access_key,
        gc_grace,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::env::Env;
    use crate::config::parse::parse;

    const FULL: &str = "[server]\nbackend = \"cluster\"\n[server.cluster]\n\
                        node_name = \"node-1\"\n\
                        postgres = \"postgresql://filesync:pw@db/filesync\"\n\
                        s3_endpoint = \"http://127.0.0.1:3900\"\n\
                        s3_region = \"garage\"\n\
                        s3_bucket = \"filesync\"\n\
                        s3_access_key_id = \"GK01\"\n";

    fn parsed(text: &str) -> Result<Backend, String> {
        match parse(Path::new("/etc/f.toml"), text, &Env::for_tests()) {
            Ok(config) => Ok(config.server.expect("a server table").backend),
            Err(e) => Err(e.render()),
        }
    }

    #[test]
    fn a_full_cluster_table_parses_and_never_prints_its_secrets() {
        let text = format!("{FULL}s3_secret_access_key = \"SECRET-KEY\"\ngc_grace = \"2days\"\n");
        let Ok(Backend::Cluster(cluster)) = parsed(&text) else {
            panic!("not a cluster: {:?}", parsed(&text));
        };
        assert_eq!(cluster.node_name, "node-1");
        assert_eq!(cluster.postgres.0, "postgresql://filesync:pw@db/filesync");
        assert_eq!(cluster.s3_endpoint, "http://127.0.0.1:3900");
        assert_eq!(
            cluster.s3_secret_access_key,
            S3Secret::Inline(Hidden("SECRET-KEY".into()))
        );
        assert_eq!(cluster.gc_grace, Duration::from_secs(2 * 86_400));
        let shown = format!("{cluster:?}");
        assert!(
            !shown.contains("SECRET-KEY") && !shown.contains(":pw@"),
            "{shown}"
        );

        let text = format!("{FULL}s3_secret_access_key_file = \"/etc/filesync/s3\"\n");
        let Ok(Backend::Cluster(cluster)) = parsed(&text) else {
            panic!("not a cluster: {:?}", parsed(&text));
        };
        assert_eq!(
            cluster.s3_secret_access_key,
            S3Secret::File("/etc/filesync/s3".into())
        );
        assert_eq!(cluster.gc_grace, DEFAULT_GC_GRACE);
        assert_eq!(parsed("[server]\n"), Ok(Backend::Embedded));
    }

    #[test]
    fn bad_cluster_values_name_their_key_and_line() {
        let cases = [
            (
                "",
                "/etc/f.toml:3: key `server.cluster.s3_secret_access_key`: ",
                "no secret key",
            ),
            (
                "s3_secret_access_key = \"k\"\ns3_secret_access_key_file = \"/k\"\n",
                "/etc/f.toml:11: key `server.cluster.s3_secret_access_key_file`: ",
                "give the secret key once",
            ),
            (
                "s3_secret_access_key = \"k\"\ngc_grace = \"5m\"\n",
                "/etc/f.toml:11: key `server.cluster.gc_grace`: ",
                "the minimum is \"1h\"",
            ),
            (
                "s3_secret_access_key = \"k\"\ngc_grace = \"soon\"\n",
                "/etc/f.toml:11: key `server.cluster.gc_grace`: ",
                "is not a duration",
            ),
        ];
        for (extra, start, words) in cases {
            let err = parsed(&format!("{FULL}{extra}")).expect_err(extra);
            assert!(err.starts_with(start) && err.contains(words), "{err}");
        }
        let err = parsed(&FULL.replace("http://127.0.0.1:3900", "127.0.0.1:3900"))
            .expect_err("no scheme");
        assert!(
            err.starts_with("/etc/f.toml:6: key `server.cluster.s3_endpoint`: "),
            "{err}"
        );
        let err = parsed(&FULL.replace("\"garage\"", "\" \"")).expect_err("empty");
        assert!(err.contains("`s3_region` is empty"), "{err}");
    }
}
