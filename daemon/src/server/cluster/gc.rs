//! Garbage collection of the bucket (`filesyncd gc`): deletes the block objects that no
//! content refers to, once they are older than `gc_grace`.
//!
//! A block is garbage when its row says no content refers to it (`refs = 0`) or when it
//! has no row at all (an upload whose transaction never committed: a crashed node, a
//! stopped `migrate-to-cluster`), and both the row and the object are older than the
//! grace. Deleting one is three steps, so that no commit can come to refer to a deleted
//! object: the row is marked `DOOMED` in its own transaction (which refuses a row that
//! gained a reference or was touched meanwhile), the object is deleted only if it was
//! not written again since, and the row goes last. A collection that stops between
//! steps is finished by the next one. It holds the advisory lock [`GC_LOCK`] for its
//! whole run; `migrate-to-cluster` holds it too, so the two never run side by side.

use std::time::Duration;

use anyhow::{Result, bail};

use super::Store;
use super::schema::{DOOMED, GC_LOCK, try_gc_lock};
use crate::events::unix_secs;

/// What a collection did.
#[derive(Debug, Default)]
pub struct Collected {
    /// Objects deleted, and their bytes.
    pub deleted: usize,
    pub bytes: u64,
    /// Objects younger than the grace, in use or not: not looked at this time.
    pub young: usize,
    /// Objects older than the grace that are in use.
    pub kept: usize,
}

/// Deletes what no content refers to and is older than `grace`.
pub async fn collect(store: &mut Store, grace: Duration) -> Result<Collected> {
    if !try_gc_lock(&store.db).await? {
        bail!(
            "another garbage collection or a migrate-to-cluster is running on this \
             cluster; run this one after it"
        );
    }
    let done = sweep(store, grace).await;
    let _ = store
        .db
        .execute("SELECT pg_advisory_unlock($1)", &[&GC_LOCK])
        .await;
    done
}

async fn sweep(store: &mut Store, grace: Duration) -> Result<Collected> {
    let cutoff = unix_secs() - grace.as_secs() as i64;
    let mut done = Collected::default();
    for object in store.chunks.list().await? {
        let hash = object.hash.0.as_slice();
        if object.written >= cutoff {
            done.young += 1;
            continue;
        }
        let tx = store.db.transaction().await?;
        let doomed = tx
            .query_opt(
                "INSERT INTO blocks (account_id, hash, size, refs, state, touched_at) \
                 VALUES ($1, $2, $3, 0, $4, $5) \
                 ON CONFLICT (account_id, hash) DO UPDATE SET state = $4 \
                 WHERE blocks.refs = 0 AND blocks.touched_at < $5 RETURNING 1",
                &[
                    &object.account,
                    &hash,
                    &(object.size as i32),
                    &DOOMED,
                    &cutoff,
                ],
            )
            .await?
            .is_some();
        tx.commit().await?;
        if !doomed {
            done.kept += 1;
            continue;
        }
        // Written again since it was listed: someone uploads it now; the next
        // collection looks at it again.
        let fresh = store
            .chunks
            .written(object.account, &object.hash)
            .await?
            .is_some_and(|written| written >= cutoff);
        if !fresh {
            store.chunks.delete(object.account, &object.hash).await?;
            done.deleted += 1;
            done.bytes += object.size;
        }
        store
            .db
            .execute(
                "DELETE FROM blocks WHERE account_id = $1 AND hash = $2 AND state = $3",
                &[&object.account, &hash, &DOOMED],
            )
            .await?;
        tracing::info!(
            account = object.account,
            block = %object.hash,
            deleted = !fresh,
            "garbage collection: a block no content refers to"
        );
    }
    Ok(done)
}
