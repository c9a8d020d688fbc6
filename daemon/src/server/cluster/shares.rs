//! The cluster's share grants: table `shares` in PostgreSQL, accounts by their id.
//! What a grant means, and the tokens that close a member's connections, are
//! `server::shares`'; this is only where the rows are.

use anyhow::Result;
use filesync_proto::wire::ShareGrant;
use filesync_proto::{AccountName, FolderName};

use super::admin::AdminEvent;
use super::pool::Db;
use crate::events::unix_secs;
use crate::server::shares::{Key, ShareTable, grant_of};

/// A grant's owner, folder and member, as the queries below take them.
const KEY: &str = "owner_id = (SELECT id FROM accounts WHERE name = $1) AND folder = $2
     AND member_id = (SELECT id FROM accounts WHERE name = $3)";

pub struct PgShares {
    db: Db,
}

impl PgShares {
    pub fn new(db: Db) -> PgShares {
        PgShares { db }
    }

    /// Whether the grant changed, `None` without a member account, or (inner) why the
    /// grant cannot be recorded.
    async fn granted(&self, key: &Key, read_only: bool) -> Result<Result<Option<bool>>> {
        let (owner, folder, member) = key;
        let mut db = self.db.client().await?;
        let tx = db.transaction().await?;
        let id = async |name: &AccountName| -> Result<Option<i64>> {
            Ok(tx
                .query_opt("SELECT id FROM accounts WHERE name = $1", &[&name.as_str()])
                .await?
                .map(|r| r.get(0)))
        };
        let Some(member_id) = id(member).await? else {
            return Ok(Ok(None));
        };
        let Some(owner_id) = id(owner).await? else {
            return Ok(Err(anyhow::anyhow!(
                "there is no account {owner} on this cluster"
            )));
        };
        let before: Option<bool> = tx
            .query_opt(
                "SELECT read_only FROM shares
                 WHERE owner_id = $1 AND folder = $2 AND member_id = $3 FOR UPDATE",
                &[&owner_id, &folder.as_str(), &member_id],
            )
            .await?
            .map(|r| r.get(0));
        if before != Some(read_only) {
            tx.execute(
                "INSERT INTO shares (owner_id, folder, member_id, read_only, granted)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (owner_id, folder, member_id)
                 DO UPDATE SET read_only = EXCLUDED.read_only, granted = EXCLUDED.granted",
                &[
                    &owner_id,
                    &folder.as_str(),
                    &member_id,
                    &read_only,
                    &unix_secs(),
                ],
            )
            .await?;
        }
        let changed = before.is_some_and(|b| b != read_only);
        if changed {
            share_event(key).send(&*tx).await?;
        }
        tx.commit().await?;
        Ok(Ok(Some(changed)))
    }
}

/// What the other nodes are told when the share `key` was taken back or changed.
fn share_event((owner, folder, member): &Key) -> AdminEvent {
    AdminEvent::Share {
        owner: owner.clone(),
        folder: folder.clone(),
        member: member.clone(),
    }
}

/// The key's names as query parameters for [`KEY`].
fn names(key: &Key) -> [&str; 3] {
    [key.0.as_str(), key.1.as_str(), key.2.as_str()]
}

impl ShareTable for PgShares {
    fn grant(&self, key: &Key, read_only: bool) -> Result<Option<bool>> {
        let (owner, folder, member) = key;
        self.db.wait(
            &format!("record the share of {owner}/{folder} with {member}"),
            self.granted(key, read_only),
        )?
    }

    fn revoke(&self, key: &Key) -> Result<bool> {
        let [owner, folder, member] = names(key);
        let work = async {
            let db = self.db.client().await?;
            let sql = format!("DELETE FROM shares WHERE {KEY}");
            let gone = db.execute(&sql, &[&owner, &folder, &member]).await? == 1;
            if gone {
                share_event(key).send(&**db).await?;
            }
            Ok(gone)
        };
        self.db.wait(
            &format!("take back the share of {owner}/{folder} with {member}"),
            work,
        )
    }

    fn access(&self, key: &Key) -> Result<Option<bool>> {
        let [owner, folder, member] = names(key);
        let work = async {
            let db = self.db.client().await?;
            let sql = format!("SELECT read_only FROM shares WHERE {KEY}");
            let row = db.query_opt(&sql, &[&owner, &folder, &member]).await?;
            Ok(row.map(|r| r.get(0)))
        };
        self.db.wait(
            &format!("read the share of {owner}/{folder} with {member}"),
            work,
        )
    }

    fn list(
        &self,
        owner: Option<&AccountName>,
        folder: Option<&FolderName>,
    ) -> Result<Vec<ShareGrant>> {
        let (owner, folder) = (owner.map(|o| o.as_str()), folder.map(|f| f.as_str()));
        let work = async {
            let db = self.db.client().await?;
            let rows = db
                .query(
                    "SELECT o.name, s.folder, m.name, s.read_only, s.granted FROM shares s
                     JOIN accounts o ON o.id = s.owner_id JOIN accounts m ON m.id = s.member_id
                     WHERE ($1::text IS NULL OR o.name = $1) AND ($2::text IS NULL OR s.folder = $2)
                     ORDER BY o.name COLLATE \"C\", s.folder COLLATE \"C\", m.name COLLATE \"C\"",
                    &[&owner, &folder],
                )
                .await?;
            rows.iter()
                .map(|r| grant_of(r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
                .collect()
        };
        self.db.wait("list the shares", work)
    }

    fn has_folder(&self, owner: &AccountName, folder: &FolderName) -> Result<bool> {
        let work = async {
            let db = self.db.client().await?;
            let row = db
                .query_opt(
                    "SELECT 1 FROM folders f JOIN accounts a ON a.id = f.account_id
                     WHERE a.name = $1 AND f.name = $2",
                    &[&owner.as_str(), &folder.as_str()],
                )
                .await?;
            Ok(row.is_some())
        };
        self.db
            .wait(&format!("look up folder {owner}/{folder}"), work)
    }
}
