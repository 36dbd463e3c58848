//! What must survive a restart: ban lists, blocked terms, moderator links, party settings
//! and the moderation audit log, in one embedded SQLite file (`<data-dir>/cowatch.sqlite3`).
//!
//! [`Store`] is a cheap-to-clone handle around one connection behind a std `Mutex`. Every
//! call is a single short statement on a local file (WAL mode, so a write does not wait for
//! an fsync of the main database), which is far shorter than a task switch would be worth:
//! callers use it straight from async code, and never hold the lock across an `.await`
//! (they cannot: the guard never leaves this module).
//!
//! The schema is versioned with SQLite's `user_version`: `MIGRATIONS` holds one step per
//! version, and opening a database applies the steps it has not seen yet, in a transaction.
//!
//! Moderator keys are never stored: only their SHA-256, compared in constant time.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::util::id::random_token;

use rusqlite::{Connection, OptionalExtension, Params, Row, params};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use crate::chat::Origin;
use crate::util::clock::unix_ms;
use crate::util::lock::Locked;

mod repair;

pub use repair::Repair;
use repair::damage;

/// Builds `$ty` from a row whose columns are the listed fields, in that order: the `SELECT`
/// names them in the same order, and no column index is written by hand.
macro_rules! from_row {
    ($row:expr => $ty:ident { $($field:ident),+ $(,)? }) => {{
        let row: &Row<'_> = $row;
        let mut column = 0..;
        Ok($ty {
            $($field: row.get(column.next().expect("endless"))?,)+
        })
    }};
}

/// The database file inside the data directory.
pub const FILE_NAME: &str = "cowatch.sqlite3";

/// How long a statement waits for another connection's lock (another process on the same
/// file, e.g. a second `cowatch` started by mistake) before failing.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Schema steps; step `i` brings `user_version` from `i` to `i + 1`. Append, never edit.
const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "CREATE TABLE bans (
         origin        TEXT    NOT NULL CHECK (origin IN ('party', 'twitch')),
         login         TEXT    NOT NULL,
         user_id       TEXT,
         reason        TEXT,
         expires_at_ms INTEGER,
         by            TEXT    NOT NULL,
         at_ms         INTEGER NOT NULL,
         PRIMARY KEY (origin, login)
     );
     CREATE TABLE blocked_terms (
         term     TEXT    NOT NULL,
         term_key TEXT    NOT NULL UNIQUE,
         by       TEXT    NOT NULL,
         at_ms    INTEGER NOT NULL
     );
     CREATE TABLE mod_links (
         id            TEXT    PRIMARY KEY,
         label         TEXT    NOT NULL,
         key_hash      BLOB    NOT NULL,
         created_at_ms INTEGER NOT NULL,
         revoked_at_ms INTEGER
     );
     CREATE TABLE settings (
         key   TEXT PRIMARY KEY,
         value TEXT NOT NULL
     );
     CREATE TABLE audit (
         id         INTEGER PRIMARY KEY AUTOINCREMENT,
         at_ms      INTEGER NOT NULL,
         actor_role TEXT    NOT NULL,
         actor_name TEXT    NOT NULL,
         action     TEXT    NOT NULL,
         target     TEXT,
         detail     TEXT,
         result     TEXT    NOT NULL
     );",
];

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory could not be created.
    #[error("cannot create the data directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// SQLite refused.
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    /// The file is damaged: SQLite's own check fails, or it is not a database at all.
    #[error(
        "the database {} is damaged ({detail}): move it aside to start with no bans, moderator links or blocked terms, or start cowatch once with --repair to keep what can still be read",
        .path.display()
    )]
    Damaged {
        /// The file.
        path: PathBuf,
        /// SQLite's first complaint.
        detail: String,
    },
    /// The file was written by a newer cowatch.
    #[error("the database has schema version {found}; this cowatch knows up to {known}")]
    TooNew {
        /// The file's `user_version`.
        found: i64,
        /// The newest this build knows.
        known: i64,
    },
}

/// A ban or timeout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ban {
    /// Whose chat: the party's or the Twitch channel's.
    pub origin: Origin,
    /// Lower-case login (the party nickname for party bans).
    pub login: String,
    /// Twitch user id, when known.
    pub user_id: Option<String>,
    /// Why, as the moderator wrote it.
    pub reason: Option<String>,
    /// End of a timeout in ms since the epoch; `None` for a permanent ban.
    pub expires_at_ms: Option<i64>,
    /// Who banned.
    pub by: String,
    /// When, in ms since the epoch.
    pub at_ms: i64,
}

/// A blocked term.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockedTerm {
    /// The term as the moderator typed it.
    pub term: String,
    /// Who added it.
    pub by: String,
    /// When, in ms since the epoch.
    pub at_ms: i64,
}

/// A moderator link: a secret key handed to one moderator. The key itself is not kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModLink {
    /// Public id, to list and revoke the link.
    pub id: String,
    /// Whom it was given to, for the host's list.
    pub label: String,
    /// When it was made, in ms since the epoch.
    pub created_at_ms: i64,
    /// When it was revoked; a revoked link no longer opens anything.
    pub revoked_at_ms: Option<i64>,
}

/// An audit record to write.
#[derive(Debug, Clone, Copy)]
pub struct NewAuditEntry<'a> {
    /// When, in ms since the epoch.
    pub at_ms: i64,
    /// `host`, `moderator`, `viewer` or `twitch`.
    pub actor_role: &'a str,
    /// The actor's name.
    pub actor_name: &'a str,
    /// What was done, e.g. `timeout`.
    pub action: &'a str,
    /// To whom or what, e.g. `twitch:onche`.
    pub target: Option<&'a str>,
    /// Parameters, e.g. `600 s`.
    pub detail: Option<&'a str>,
    /// `ok` or `error: …`.
    pub result: &'a str,
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    /// Increasing with time.
    pub id: i64,
    /// When, in ms since the epoch.
    pub at_ms: i64,
    /// `host`, `moderator`, `viewer` or `twitch`.
    pub actor_role: String,
    /// The actor's name.
    pub actor_name: String,
    /// What was done.
    pub action: String,
    /// To whom or what.
    pub target: Option<String>,
    /// Parameters.
    pub detail: Option<String>,
    /// `ok` or `error: …`.
    pub result: String,
}

/// The database. Cheap to clone; every clone is the same connection.
#[derive(Clone)]
pub struct Store {
    /// One connection: every call is a short statement, so one writer never waits long,
    /// and a std `Mutex` (not tokio's) is right for sections that never `.await`.
    conn: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

impl Store {
    /// Opens (creating if needed) `dir/cowatch.sqlite3` and brings its schema up to date.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(FILE_NAME);
        let mut conn = Connection::open(&path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // Before anything writes: a damaged file must be refused as it is, not half-used.
        if let Some(detail) = damage(&conn)? {
            return Err(StoreError::Damaged { path, detail });
        }
        let mode: String = patiently(|| {
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        })?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(
                mode,
                "SQLite did not switch to WAL; continuing in this mode"
            );
        }
        // With WAL, NORMAL loses at most the last commits on power loss, never consistency.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        migrate(&mut conn)?;
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic mid-statement leaves SQLite consistent (the statement is rolled back), so
        // a poisoned lock is used as is.
        self.conn.locked()
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    // ── bans ────────────────────────────────────────────────────────────────────────────

    /// Bans or times out (replacing any earlier ban of the same login in the same chat).
    pub fn ban(&self, ban: &Ban) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO bans (origin, login, user_id, reason, expires_at_ms, by, at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (origin, login) DO UPDATE SET
                 user_id = COALESCE(excluded.user_id, bans.user_id),
                 reason = excluded.reason, expires_at_ms = excluded.expires_at_ms,
                 by = excluded.by, at_ms = excluded.at_ms",
            params![
                origin_str(ban.origin),
                ban.login.to_lowercase(),
                ban.user_id,
                ban.reason,
                ban.expires_at_ms,
                ban.by,
                ban.at_ms
            ],
        )?;
        Ok(())
    }

    /// Lifts a ban or timeout. Returns whether there was one (expired ones count as none).
    pub fn unban(&self, origin: Origin, login: &str) -> Result<bool, StoreError> {
        let now = unix_ms();
        let conn = self.conn();
        let active: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM bans WHERE origin = ?1 AND login = ?2
                 AND (expires_at_ms IS NULL OR expires_at_ms > ?3))",
            params![origin_str(origin), login.to_lowercase(), now],
            |r| r.get(0),
        )?;
        conn.execute(
            "DELETE FROM bans WHERE origin = ?1 AND login = ?2",
            params![origin_str(origin), login.to_lowercase()],
        )?;
        Ok(active)
    }

    /// Bans and timeouts in force now, newest first. Expired timeouts are deleted.
    pub fn bans(&self) -> Result<Vec<Ban>, StoreError> {
        let now = unix_ms();
        let conn = self.conn();
        conn.execute(
            "DELETE FROM bans WHERE expires_at_ms IS NOT NULL AND expires_at_ms <= ?1",
            [now],
        )?;
        query_all(
            &conn,
            &format!("SELECT {BAN_COLUMNS} FROM bans ORDER BY at_ms DESC, login"),
            [],
            ban_row,
        )
    }

    /// The ban or timeout in force for `login` at `now_ms`, if any.
    pub fn is_banned(
        &self,
        origin: Origin,
        login: &str,
        now_ms: i64,
    ) -> Result<Option<Ban>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!(
                    "SELECT {BAN_COLUMNS} FROM bans WHERE origin = ?1 AND login = ?2
                       AND (expires_at_ms IS NULL OR expires_at_ms > ?3)"
                ),
                params![origin_str(origin), login.to_lowercase(), now_ms],
                ban_row,
            )
            .optional()?)
    }

    // ── blocked terms ───────────────────────────────────────────────────────────────────

    /// Adds a term; returns false when it was already there (in any letter case).
    pub fn add_blocked_term(&self, term: &str, by: &str) -> Result<bool, StoreError> {
        let added = self.conn().execute(
            "INSERT INTO blocked_terms (term, term_key, by, at_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (term_key) DO NOTHING",
            params![term, term_key(term), by, unix_ms()],
        )?;
        Ok(added > 0)
    }

    /// Removes a term (in any letter case); returns whether it was there.
    pub fn remove_blocked_term(&self, term: &str) -> Result<bool, StoreError> {
        let removed = self.conn().execute(
            "DELETE FROM blocked_terms WHERE term_key = ?1",
            [term_key(term)],
        )?;
        Ok(removed > 0)
    }

    /// Every blocked term, oldest first.
    pub fn blocked_terms(&self) -> Result<Vec<BlockedTerm>, StoreError> {
        query_all(
            &self.conn(),
            "SELECT term, by, at_ms FROM blocked_terms ORDER BY at_ms, rowid",
            [],
            |r| from_row!(r => BlockedTerm { term, by, at_ms }),
        )
    }

    // ── moderator links ─────────────────────────────────────────────────────────────────

    /// Records a link for `key` (which the caller hands to the moderator and forgets).
    pub fn add_mod_link(&self, label: &str, key: &str) -> Result<ModLink, StoreError> {
        let link = ModLink {
            id: random_token(8),
            label: label.to_owned(),
            created_at_ms: unix_ms(),
            revoked_at_ms: None,
        };
        self.conn().execute(
            "INSERT INTO mod_links (id, label, key_hash, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
            params![
                link.id,
                link.label,
                hash_key(key).as_slice(),
                link.created_at_ms
            ],
        )?;
        Ok(link)
    }

    /// Revokes a link; returns whether a live link had that id.
    pub fn revoke_mod_link(&self, id: &str) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "UPDATE mod_links SET revoked_at_ms = ?2 WHERE id = ?1 AND revoked_at_ms IS NULL",
            params![id, unix_ms()],
        )?;
        Ok(n > 0)
    }

    /// Every link, revoked ones included, oldest first.
    pub fn mod_links(&self) -> Result<Vec<ModLink>, StoreError> {
        query_all(
            &self.conn(),
            &format!("SELECT {MOD_LINK_COLUMNS} FROM mod_links ORDER BY created_at_ms, rowid"),
            [],
            mod_link_row,
        )
    }

    /// The live link whose key is `key`, if any. The presented key is hashed and compared
    /// with every live link's hash in constant time, without stopping at a match, so the
    /// time taken says nothing about which link (or how much of a hash) matched.
    pub fn find_mod_key(&self, key: &str) -> Result<Option<ModLink>, StoreError> {
        let presented = hash_key(key);
        let live = query_all(
            &self.conn(),
            &format!(
                "SELECT {MOD_LINK_COLUMNS}, key_hash FROM mod_links WHERE revoked_at_ms IS NULL"
            ),
            [],
            |r| Ok((mod_link_row(r)?, r.get::<_, Vec<u8>>(4)?)),
        )?;
        let mut found = None;
        for (link, hash) in live {
            // Slices of different lengths compare unequal (still in constant time).
            let hit: Choice = presented.as_slice().ct_eq(hash.as_slice());
            if bool::from(hit) {
                found = Some(link);
            }
        }
        Ok(found)
    }

    // ── settings ────────────────────────────────────────────────────────────────────────

    /// A party setting, as last stored.
    pub fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Stores a party setting.
    pub fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO settings (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [key, value],
        )?;
        Ok(())
    }

    // ── audit log ───────────────────────────────────────────────────────────────────────

    /// Appends to the audit log; returns the record's id.
    pub fn record(&self, entry: &NewAuditEntry<'_>) -> Result<i64, StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO audit (at_ms, actor_role, actor_name, action, target, detail, result)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                entry.at_ms,
                entry.actor_role,
                entry.actor_name,
                entry.action,
                entry.target,
                entry.detail,
                entry.result
            ],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// The latest `limit` audit records, newest first.
    pub fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        query_all(
            &self.conn(),
            "SELECT id, at_ms, actor_role, actor_name, action, target, detail, result
             FROM audit ORDER BY id DESC LIMIT ?1",
            [limit],
            |r| {
                from_row!(r => AuditEntry {
                    id, at_ms, actor_role, actor_name, action, target, detail, result
                })
            },
        )
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let known = MIGRATIONS.len() as i64;
    loop {
        match patiently(|| next_migration(conn))? {
            Migration::Applied(version) => {
                tracing::info!(version, "database schema updated");
            }
            Migration::UpToDate => return Ok(()),
            Migration::TooNew(found) => return Err(StoreError::TooNew { found, known }),
        }
    }
}

/// What one pass of [`next_migration`] did.
enum Migration {
    /// Brought the schema to this version.
    Applied(i64),
    /// Nothing left to do.
    UpToDate,
    /// The file is of a newer cowatch.
    TooNew(i64),
}

/// Applies the first step the database has not seen, in a transaction of its own.
/// Immediate, with the version read inside: two cowatch processes opening one data directory
/// at once (two test parties, a restart racing the old process) must not both apply the same
/// step ("table bans already exists").
fn next_migration(conn: &mut Connection) -> rusqlite::Result<Migration> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let found: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > MIGRATIONS.len() as i64 {
        return Ok(Migration::TooNew(found));
    }
    let Some(step) = MIGRATIONS.get(found as usize) else {
        return Ok(Migration::UpToDate);
    };
    tx.execute_batch(step)?;
    tx.pragma_update(None, "user_version", found + 1)?;
    tx.commit()?;
    Ok(Migration::Applied(found + 1))
}

/// Runs `step` again while SQLite answers "busy" without having waited: changing the journal
/// mode, and a write beginning while another connection of a new database sets WAL up, fail
/// at once rather than through the busy handler. Gives up after [`BUSY_TIMEOUT`], like it.
fn patiently<T>(mut step: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match step() {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

/// Every row of `sql` with `params`, each read by `row`.
fn query_all<T>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    row: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map(params, row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The columns [`ban_row`] reads, in its order.
const BAN_COLUMNS: &str = "origin, login, user_id, reason, expires_at_ms, by, at_ms";

fn ban_row(r: &Row<'_>) -> rusqlite::Result<Ban> {
    from_row!(r => Ban { origin, login, user_id, reason, expires_at_ms, by, at_ms })
}

impl rusqlite::types::FromSql for Origin {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        // Written by `origin_str`: anything but "twitch" is a party nickname.
        Ok(match value.as_str()? {
            "twitch" => Origin::Twitch,
            _ => Origin::Party,
        })
    }
}

/// The columns [`mod_link_row`] reads, in its order.
const MOD_LINK_COLUMNS: &str = "id, label, created_at_ms, revoked_at_ms";

fn mod_link_row(r: &Row<'_>) -> rusqlite::Result<ModLink> {
    from_row!(r => ModLink { id, label, created_at_ms, revoked_at_ms })
}

/// How an origin is spelled in the database.
pub fn origin_str(origin: Origin) -> &'static str {
    match origin {
        Origin::Twitch => "twitch",
        Origin::Party => "party",
    }
}

/// The case-folded form terms are unique by (Unicode-aware, unlike SQLite's `NOCASE`).
fn term_key(term: &str) -> String {
    term.trim().to_lowercase()
}

fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "cowatch-store-{}-{name}-{}",
            std::process::id(),
            random_token(4)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn ban(origin: Origin, login: &str, expires_at_ms: Option<i64>) -> Ban {
        Ban {
            origin,
            login: login.into(),
            user_id: None,
            reason: Some("spam".into()),
            expires_at_ms,
            by: "host".into(),
            at_ms: unix_ms(),
        }
    }

    #[test]
    fn parties_opening_one_new_dir_at_once_all_get_the_schema() {
        for round in 0..5 {
            let dir = scratch(&format!("race-{round}"));
            let opened: Vec<_> = (0..4)
                .map(|_| {
                    let dir = dir.clone();
                    std::thread::spawn(move || Store::open(&dir).map(|s| s.schema_version()))
                })
                .collect();
            for handle in opened {
                let version = handle.join().unwrap().unwrap().unwrap();
                assert_eq!(version, MIGRATIONS.len() as i64);
            }
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    #[test]
    fn reopening_the_same_dir_keeps_everything() {
        let dir = scratch("reopen");
        {
            let store = Store::open(&dir).unwrap();
            store.ban(&ban(Origin::Party, "Troll", None)).unwrap();
            assert!(store.add_blocked_term("Badword", "host").unwrap());
            store.add_mod_link("alice", "key-a").unwrap();
            store.set_setting("party_chat", "\"closed\"").unwrap();
            store
                .record(&NewAuditEntry {
                    at_ms: 1,
                    actor_role: "host",
                    actor_name: "host",
                    action: "ban",
                    target: Some("party:troll"),
                    detail: None,
                    result: "ok",
                })
                .unwrap();
        }
        let store = Store::open(&dir).unwrap();
        assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len() as i64);
        let bans = store.bans().unwrap();
        assert_eq!(bans.len(), 1);
        assert_eq!(bans[0].login, "troll");
        assert_eq!(store.blocked_terms().unwrap()[0].term, "Badword");
        assert!(!store.add_blocked_term("BADWORD", "host").unwrap());
        assert_eq!(store.mod_links().unwrap()[0].label, "alice");
        assert_eq!(
            store.setting("party_chat").unwrap().as_deref(),
            Some("\"closed\"")
        );
        assert_eq!(
            store.audit(10).unwrap()[0].target.as_deref(),
            Some("party:troll")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn expired_bans_disappear() {
        let dir = scratch("expiry");
        let store = Store::open(&dir).unwrap();
        let now = unix_ms();
        store
            .ban(&ban(Origin::Party, "past", Some(now - 1)))
            .unwrap();
        store
            .ban(&ban(Origin::Party, "future", Some(now + 60_000)))
            .unwrap();
        store.ban(&ban(Origin::Twitch, "future", None)).unwrap();
        let logins: Vec<_> = store
            .bans()
            .unwrap()
            .into_iter()
            .map(|b| (b.origin, b.login))
            .collect();
        assert_eq!(logins.len(), 2);
        assert!(!logins.contains(&(Origin::Party, "past".into())));
        assert!(
            store
                .is_banned(Origin::Party, "past", now)
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .is_banned(Origin::Party, "FUTURE", now)
                .unwrap()
                .is_some()
        );
        assert!(
            store
                .is_banned(Origin::Party, "future", now + 60_000)
                .unwrap()
                .is_none()
        );
        assert!(store.unban(Origin::Party, "future").unwrap());
        assert!(!store.unban(Origin::Party, "future").unwrap());
        assert!(
            store
                .is_banned(Origin::Twitch, "future", now)
                .unwrap()
                .is_some()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn key_lookup_finds_the_right_live_link_only() {
        let dir = scratch("keys");
        let store = Store::open(&dir).unwrap();
        let a = store.add_mod_link("alice", "key-alice").unwrap();
        let b = store.add_mod_link("bob", "key-bob").unwrap();
        assert_eq!(store.find_mod_key("key-alice").unwrap(), Some(a.clone()));
        assert_eq!(store.find_mod_key("key-bob").unwrap(), Some(b.clone()));
        assert_eq!(store.find_mod_key("key-carol").unwrap(), None);
        assert_eq!(store.find_mod_key("").unwrap(), None);
        assert!(store.revoke_mod_link(&b.id).unwrap());
        assert!(!store.revoke_mod_link(&b.id).unwrap());
        assert_eq!(store.find_mod_key("key-bob").unwrap(), None);
        assert_eq!(store.find_mod_key("key-alice").unwrap(), Some(a));
        let links = store.mod_links().unwrap();
        assert!(links[1].revoked_at_ms.is_some());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn audit_is_newest_first_and_limited() {
        let dir = scratch("audit");
        let store = Store::open(&dir).unwrap();
        for action in ["one", "two", "three"] {
            store
                .record(&NewAuditEntry {
                    at_ms: unix_ms(),
                    actor_role: "moderator",
                    actor_name: "m",
                    action,
                    target: None,
                    detail: None,
                    result: "ok",
                })
                .unwrap();
        }
        let actions: Vec<_> = store
            .audit(2)
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect();
        assert_eq!(actions, ["three", "two"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
