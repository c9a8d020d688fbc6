//! Letting go of content: the reference counting down that a commit (a file replaced
//! with `keep_versions = 0`) and the expiry of versions share.

use std::collections::HashSet;

use anyhow::{Context, Result};
use deadpool_postgres::Transaction;
use filesync_proto::Hash;

use super::rows::{self, Cached};

/// Drops one reference to content `hash` of `account`; the last one removes the
/// content and one reference from each of its blocks, stamping when.
pub(super) async fn release(
    tx: &Transaction<'_>,
    account: i64,
    hash: &Hash,
    now: i64,
) -> Result<()> {
    let left = tx
        .query_opt_c(
            "UPDATE contents SET refs = refs - 1 WHERE account_id = $1 AND hash = $2 \
             RETURNING refs, blocks, data IS NOT NULL",
            &[&account, &hash.0.as_slice()],
        )
        .await
        .with_context(|| format!("cannot release content {hash}"))?;
    let Some(left) = left else {
        tracing::warn!(account, content = %hash, "a released content had no row");
        return Ok(());
    };
    // Small content kept in its row holds no blocks.
    let in_row: bool = left.get(2);
    if left.get::<_, i64>(0) > 0 {
        return Ok(());
    }
    let blocks = rows::decode_blocks(left.get(1))?;
    tx.execute_c(
        "DELETE FROM contents WHERE account_id = $1 AND hash = $2 AND refs <= 0",
        &[&account, &hash.0.as_slice()],
    )
    .await?;
    if in_row {
        return Ok(());
    }
    let distinct: HashSet<Hash> = blocks.iter().map(|b| b.hash).collect();
    let hashes: Vec<&[u8]> = distinct.iter().map(|h| h.0.as_slice()).collect();
    tx.execute_c(
        "UPDATE blocks SET refs = GREATEST(refs - 1, 0), touched_at = $3 \
         WHERE account_id = $1 AND hash = ANY($2)",
        &[&account, &hashes, &now],
    )
    .await?;
    Ok(())
}
