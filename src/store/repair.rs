//! A damaged database: found at start (`PRAGMA quick_check`, before anything writes), and
//! `--repair`, which moves the file aside and keeps every row that can still be read.

use std::path::{Path, PathBuf};

use rusqlite::Connection;

use super::{FILE_NAME, Store, StoreError};
use crate::util::clock::unix_ms;

/// What `PRAGMA quick_check` finds wrong with the open file, if anything. A file that is not a
/// database, or whose pages cannot be read, is damage too; a busy or locked file is not.
pub(super) fn damage(conn: &Connection) -> Result<Option<String>, StoreError> {
    let checked = conn
        .prepare("PRAGMA quick_check(5)")
        .and_then(|mut statement| {
            statement
                .query_map([], |row| row.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<String>>>()
        });
    match checked {
        Ok(lines) if lines.len() == 1 && lines[0] == "ok" => Ok(None),
        Ok(lines) => Ok(Some(lines.join("; "))),
        Err(rusqlite::Error::SqliteFailure(e, message))
            if matches!(
                e.code,
                rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt
            ) =>
        {
            Ok(Some(message.unwrap_or_else(|| e.to_string())))
        }
        Err(e) => Err(e.into()),
    }
}

/// What [`Store::repair`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repair {
    /// The file passed SQLite's check (or there was none): nothing was moved.
    Healthy,
    /// The damaged file was moved to `aside` and a new one made with what could be read.
    Rebuilt {
        /// Where the damaged file now is.
        aside: PathBuf,
        /// Rows kept, per table.
        kept: Vec<(&'static str, usize)>,
        /// Tables nothing could be read from.
        lost: Vec<&'static str>,
    },
}

/// The tables a repair copies, in an order that keeps references meaningful.
const TABLES: &[&str] = &["settings", "mod_links", "bans", "blocked_terms", "audit"];

impl Store {
    /// `--repair`: when the database in `dir` is damaged, moves it aside and starts a new one
    /// with every row that can still be read from it. A healthy file is left alone.
    pub fn repair(dir: &Path) -> Result<Repair, StoreError> {
        let path = dir.join(FILE_NAME);
        if !path.exists() {
            return Ok(Repair::Healthy);
        }
        {
            let conn = Connection::open(&path)?;
            if damage(&conn)?.is_none() {
                return Ok(Repair::Healthy);
            }
        }
        let aside = dir.join(format!("{FILE_NAME}.damaged-{}", unix_ms()));
        std::fs::rename(&path, &aside).map_err(|source| StoreError::Dir {
            path: aside.clone(),
            source,
        })?;
        // The write-ahead log belongs to the damaged file; a new database must not replay it.
        for suffix in ["-wal", "-shm"] {
            let side = dir.join(format!("{FILE_NAME}{suffix}"));
            if side.exists() {
                let _ = std::fs::rename(&side, format!("{}{suffix}", aside.display()));
            }
        }
        let store = Store::open(dir)?;
        let conn = store.conn();
        let attached = conn.execute(
            "ATTACH DATABASE ?1 AS damaged",
            [aside.to_string_lossy().as_ref()],
        );
        let (mut kept, mut lost) = (Vec::new(), Vec::new());
        for &table in TABLES {
            let copied = attached
                .as_ref()
                .map_err(|e| e.to_string())
                .and_then(|_| copy_table(&conn, table).map_err(|e| e.to_string()));
            match copied {
                Ok(rows) => kept.push((table, rows)),
                Err(e) => {
                    tracing::warn!(table, error = %e, "repair: nothing read from this table");
                    lost.push(table);
                }
            }
        }
        if attached.is_ok() {
            let _ = conn.execute("DETACH DATABASE damaged", []);
        }
        drop(conn);
        Ok(Repair::Rebuilt { aside, kept, lost })
    }
}

/// Copies `table` from the attached damaged file: all at once, else row by row, skipping the
/// rows on unreadable pages. Returns the rows copied.
fn copy_table(conn: &Connection, table: &str) -> rusqlite::Result<usize> {
    let columns: Vec<String> = conn
        .prepare(&format!("PRAGMA main.table_info({table})"))?
        .query_map([], |row| row.get::<_, String>(1))?
        .collect::<rusqlite::Result<_>>()?;
    let columns = columns.join(", ");
    let all = format!(
        "INSERT OR IGNORE INTO main.{table} ({columns}) SELECT {columns} FROM damaged.{table}"
    );
    if let Ok(rows) = conn.execute(&all, []) {
        return Ok(rows);
    }
    let rowids: Vec<i64> = conn
        .prepare(&format!("SELECT rowid FROM damaged.{table}"))?
        .query_map([], |row| row.get(0))?
        .filter_map(Result::ok)
        .collect();
    let one = format!(
        "INSERT OR IGNORE INTO main.{table} ({columns}) SELECT {columns} FROM damaged.{table} WHERE rowid = ?1"
    );
    Ok(rowids
        .into_iter()
        .filter_map(|rowid| conn.execute(&one, [rowid]).ok())
        .sum())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Origin;
    use crate::store::Ban;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "cowatch-repair-{}-{name}-{}",
            std::process::id(),
            crate::util::id::random_token(4)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// A store with a mod link, a blocked term and `bans` bans (enough to span many pages).
    fn filled(dir: &Path, bans: usize) {
        let store = Store::open(dir).unwrap();
        store
            .add_mod_link("alice", "k".repeat(43).as_str())
            .unwrap();
        store.add_blocked_term("badword", "host").unwrap();
        for i in 0..bans {
            store
                .ban(&Ban {
                    origin: Origin::Party,
                    login: format!("spammer_{i:04}_{}", "x".repeat(60)),
                    user_id: None,
                    reason: Some("spam".repeat(20)),
                    expires_at_ms: None,
                    by: "host".into(),
                    at_ms: unix_ms(),
                })
                .unwrap();
        }
    }

    /// Overwrites the file's last page with garbage (where the newest bans are).
    fn damage_last_page(dir: &Path) {
        let path = dir.join(FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        let len = bytes.len();
        assert!(len >= 8 * 4096, "only {len} bytes");
        bytes[len - 4096..].fill(0xA5);
        std::fs::write(&path, bytes).unwrap();
    }

    #[test]
    fn a_healthy_file_is_left_alone() {
        let dir = scratch("healthy");
        filled(&dir, 3);
        assert_eq!(Store::repair(&dir).unwrap(), Repair::Healthy);
        assert_eq!(Store::open(&dir).unwrap().bans().unwrap().len(), 3);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_damaged_file_is_refused_then_repaired_keeping_what_reads() {
        let dir = scratch("damaged");
        filled(&dir, 400);
        damage_last_page(&dir);
        let error = Store::open(&dir).unwrap_err().to_string();
        assert!(error.contains(FILE_NAME), "{error}");
        assert!(error.contains("--repair"), "{error}");
        assert!(error.contains("move it aside"), "{error}");

        let Repair::Rebuilt { aside, kept, .. } = Store::repair(&dir).unwrap() else {
            panic!("a damaged file was called healthy");
        };
        assert!(aside.exists(), "the damaged file is kept aside");
        let store = Store::open(&dir).unwrap();
        assert_eq!(store.mod_links().unwrap().len(), 1);
        assert_eq!(store.blocked_terms().unwrap().len(), 1);
        let bans = store.bans().unwrap().len();
        assert!(
            (1..400).contains(&bans),
            "{bans} bans kept of 400: {kept:?}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_file_that_is_not_a_database_is_refused() {
        let dir = scratch("garbage");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(FILE_NAME), vec![b'z'; 10_000]).unwrap();
        let error = Store::open(&dir).unwrap_err();
        assert!(matches!(error, StoreError::Damaged { .. }), "{error}");
        // Repaired: a new, empty database, the garbage kept aside.
        assert!(matches!(
            Store::repair(&dir).unwrap(),
            Repair::Rebuilt { .. }
        ));
        assert!(Store::open(&dir).unwrap().bans().unwrap().is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }
}
