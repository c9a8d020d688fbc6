//! Content in the bucket: one object per block, named by the account and the block's
//! SHA-256 (`blk/ACCOUNT_ID/HH/HASH`), the same blocks the wire moves. An object is
//! written only with bytes whose hash is its name and checked again when read, so a
//! damaged or foreign object is an error, never content. Keys are per account: one
//! account cannot learn whether another holds some content, and garbage collection
//! works account by account.

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use filesync_proto::Hash;
use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use sha2::{Digest, Sha256};

use crate::config::{ClusterSection, S3Secret};

/// The bucket, as this node reaches it.
pub struct Chunks {
    store: AmazonS3,
    /// `ENDPOINT/BUCKET`, for messages.
    place: String,
}

/// What went wrong reaching the bucket, with the config key a person should look at,
/// told by the kind of error object_store made of the store's answer.
fn s3_problem(e: &object_store::Error, place: &str) -> String {
    use object_store::Error::{NotFound, PermissionDenied, Unauthenticated};
    let key = match e {
        PermissionDenied { .. } | Unauthenticated { .. } => {
            "the key is refused: check server.cluster.s3_access_key_id and \
             s3_secret_access_key, and that the key may read and write the bucket"
        }
        // A write or a listing that finds nothing: the bucket itself is missing.
        NotFound { .. } => {
            "the bucket does not exist: check server.cluster.s3_bucket, or create it"
        }
        _ => "check server.cluster.s3_endpoint and that the store is running",
    };
    format!("the bucket {place} cannot be used ({key}): {e}")
}

impl Chunks {
    /// A client for the bucket `cluster` names; it does not connect yet ([`Chunks::probe`]).
    pub fn new(cluster: &ClusterSection) -> Result<Chunks> {
        let secret = match &cluster.s3_secret_access_key {
            S3Secret::Inline(secret) => secret.0.clone(),
            S3Secret::File(file) => std::fs::read_to_string(file)
                .with_context(|| {
                    format!(
                        "cannot read the bucket's secret key from {} (config key \
                         server.cluster.s3_secret_access_key_file)",
                        file.display()
                    )
                })?
                .trim()
                .to_owned(),
        };
        let store = AmazonS3Builder::new()
            .with_endpoint(&cluster.s3_endpoint)
            .with_allow_http(cluster.s3_endpoint.starts_with("http://"))
            .with_region(&cluster.s3_region)
            .with_bucket_name(&cluster.s3_bucket)
            .with_access_key_id(&cluster.s3_access_key_id)
            .with_secret_access_key(secret)
            .build()
            .with_context(|| {
                format!(
                    "cannot set up the bucket client (config keys server.cluster.s3_endpoint, \
                     s3_region, s3_bucket): {}",
                    cluster.s3_endpoint
                )
            })?;
        Ok(Chunks {
            store,
            place: format!("{}/{}", cluster.s3_endpoint, cluster.s3_bucket),
        })
    }

    fn key(account: i64, hash: &Hash) -> Key {
        let hex = hash.to_hex();
        Key::from(format!("blk/{account}/{}/{hex}", &hex[..2]))
    }

    /// Writes, reads back and deletes a small object named after this node: whether
    /// the bucket exists and the key may use it, before the node serves anyone.
    pub async fn probe(&self, node: &str) -> Result<()> {
        let key = Key::from(format!("probe/{node}"));
        let body = Bytes::from(format!("filesync node {node}"));
        self.store
            .put(&key, PutPayload::from(body.clone()))
            .await
            .map_err(|e| anyhow!(s3_problem(&e, &self.place)))?;
        let read = self
            .store
            .get(&key)
            .await
            .map_err(|e| anyhow!(s3_problem(&e, &self.place)))?
            .bytes()
            .await
            .map_err(|e| anyhow!(s3_problem(&e, &self.place)))?;
        if read != body {
            bail!(
                "the bucket {} gave back other bytes than were written to {key}; check \
                 server.cluster.s3_endpoint",
                self.place
            );
        }
        self.store
            .delete(&key)
            .await
            .map_err(|e| anyhow!(s3_problem(&e, &self.place)))
    }

    /// Stores one block of `account`; `data` must hash to `hash`.
    pub async fn put(&self, account: i64, hash: &Hash, data: Bytes) -> Result<()> {
        if Sha256::digest(&data).as_slice() != hash.0 {
            bail!("a block does not match its hash {hash}; it was not stored");
        }
        self.store
            .put(&Chunks::key(account, hash), PutPayload::from(data))
            .await
            .map_err(|e| anyhow!(s3_problem(&e, &self.place)))?;
        Ok(())
    }

    /// One block of `account`, checked against its hash.
    pub async fn get(&self, account: i64, hash: &Hash) -> Result<Bytes> {
        let key = Chunks::key(account, hash);
        let data = match self.store.get(&key).await {
            Ok(found) => found,
            Err(object_store::Error::NotFound { .. }) => bail!(
                "the object {key} is missing from {}: the bucket lost content the \
                 database refers to; restore the bucket from a backup",
                self.place
            ),
            Err(e) => bail!(s3_problem(&e, &self.place)),
        }
        .bytes()
        .await
        .map_err(|e| anyhow!(s3_problem(&e, &self.place)))?;
        if Sha256::digest(&data).as_slice() != hash.0 {
            bail!(
                "the object {key} in {} does not match its hash: the bucket's copy is \
                 damaged; restore it from a backup",
                self.place
            );
        }
        Ok(data)
    }

    /// Every block object in the bucket: its account, hash, size and when it was last
    /// written (Unix seconds). Objects under `blk/` whose names are not a block's are
    /// left out.
    pub async fn list(&self) -> Result<Vec<Listed>> {
        let listed: Vec<_> = self
            .store
            .list(Some(&Key::from("blk")))
            .try_collect()
            .await
            .map_err(|e| anyhow!(s3_problem(&e, &self.place)))?;
        Ok(listed
            .into_iter()
            .filter_map(|meta| {
                let mut parts = meta.location.parts();
                let (_, account, _, hash) =
                    (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
                Some(Listed {
                    account: account.as_ref().parse().ok()?,
                    hash: Hash::from_slice(&hex_bytes(hash.as_ref())?)?,
                    size: meta.size,
                    written: meta.last_modified.timestamp(),
                })
            })
            .collect())
    }

    /// When block `hash` of `account` was last written (Unix seconds); `None` when the
    /// bucket does not hold it.
    pub async fn written(&self, account: i64, hash: &Hash) -> Result<Option<i64>> {
        match self.store.head(&Chunks::key(account, hash)).await {
            Ok(meta) => Ok(Some(meta.last_modified.timestamp())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => bail!(s3_problem(&e, &self.place)),
        }
    }

    /// Deletes block `hash` of `account`; deleting what is not there is no error.
    pub async fn delete(&self, account: i64, hash: &Hash) -> Result<()> {
        match self.store.delete(&Chunks::key(account, hash)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => bail!(s3_problem(&e, &self.place)),
        }
    }
}

/// One block object, as the bucket lists it.
pub struct Listed {
    pub account: i64,
    pub hash: Hash,
    pub size: u64,
    pub written: i64,
}

/// The bytes of 64 lowercase hex digits.
fn hex_bytes(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..32)
        .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok())
        .collect()
}
