//! The activity log's table: multi-row appends that ignore ids already stored (so a retried
//! batch is harmless), filtered newest-first pages with a keyset cursor, and pruning by age.

use sqlx::Row;
use switchboard_proto::v1 as wire;

use super::{Store, StoreError, now_ms};

/// Rows per INSERT statement; keeps the bind count far below both backends' limits.
const ROWS_PER_INSERT: usize = 200;
const LEVELS: [&str; 5] = ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"];

/// The activity entry of a committed post. The database node writes it in the post's own
/// transaction, so the log holds one entry per stored message whatever dies after the commit;
/// its id is derived from the message's, so writing it again changes nothing.
pub(crate) fn posted_entry(origin: &str, message: &wire::ChatMessage) -> wire::LogEntry {
    let fields = serde_json::json!({
        "room_id": message.room_id,
        "user_id": message.author.as_ref().map_or(0, |author| author.id),
        "message_id": message.id,
        "seq": message.seq,
    });
    wire::LogEntry {
        id: format!("message_posted-{}", message.id),
        at_ms: message.created_at_ms,
        node: origin.to_owned(),
        level: "INFO".into(),
        kind: "message_posted".into(),
        message: "message posted".into(),
        fields_json: fields.to_string(),
    }
}

/// Inserts `entries` within `tx`, leaving alone ids already stored; returns the ids inserted.
pub(super) async fn insert_entries(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    entries: &[wire::LogEntry],
) -> Result<std::collections::HashSet<String>, StoreError> {
    let mut new_ids = std::collections::HashSet::new();
    for chunk in entries.chunks(ROWS_PER_INSERT) {
        let rows: Vec<String> = (0..chunk.len())
            .map(|i| {
                let p = i * 7;
                format!(
                    "(${}, ${}, ${}, ${}, ${}, ${}, ${})",
                    p + 1,
                    p + 2,
                    p + 3,
                    p + 4,
                    p + 5,
                    p + 6,
                    p + 7
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO log_entries (id, at, node, level, kind, message, fields) VALUES {} \
             ON CONFLICT (id) DO NOTHING RETURNING id",
            rows.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for entry in chunk {
            query = query
                .bind(&entry.id)
                .bind(entry.at_ms)
                .bind(&entry.node)
                .bind(&entry.level)
                .bind(&entry.kind)
                .bind(&entry.message)
                .bind(&entry.fields_json);
        }
        for row in query.fetch_all(&mut **tx).await? {
            new_ids.insert(row.try_get::<String, _>("id")?);
        }
    }
    Ok(new_ids)
}

impl Store {
    /// Appends entries in one transaction; returns the ones that were new.
    pub async fn append_logs(
        &self,
        entries: Vec<wire::LogEntry>,
    ) -> Result<Vec<wire::LogEntry>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let new_ids = insert_entries(&mut tx, &entries).await?;
        tx.commit().await?;
        Ok(entries
            .into_iter()
            .filter(|e| new_ids.contains(&e.id))
            .collect())
    }

    /// A page of the log, newest first.
    pub async fn query_logs(&self, query: &wire::LogQuery) -> Result<wire::LogPage, StoreError> {
        let mut conditions = Vec::new();
        // Parameters are numbered in the order they are added; each helper returns its `$n`.
        let mut next = 0usize;
        let mut param = || {
            next += 1;
            next
        };
        let mut order: Vec<Param> = Vec::new();
        if !query.node.is_empty() {
            conditions.push(format!("node = ${}", param()));
            order.push(Param::Text(query.node.clone()));
        }
        if !query.level.is_empty() {
            let wanted = query.level.to_ascii_uppercase();
            let rank = LEVELS
                .iter()
                .position(|l| *l == wanted)
                .unwrap_or(LEVELS.len() - 1);
            let placeholders: Vec<String> = LEVELS[..=rank]
                .iter()
                .map(|level| {
                    order.push(Param::Text((*level).to_owned()));
                    format!("${}", param())
                })
                .collect();
            conditions.push(format!("level IN ({})", placeholders.join(", ")));
        }
        if !query.kind.is_empty() {
            conditions.push(format!("kind = ${}", param()));
            order.push(Param::Text(query.kind.clone()));
        }
        if query.since_ms > 0 {
            conditions.push(format!("at >= ${}", param()));
            order.push(Param::Number(query.since_ms));
        }
        if query.until_ms > 0 {
            conditions.push(format!("at < ${}", param()));
            order.push(Param::Number(query.until_ms));
        }
        if !query.text.is_empty() {
            let pattern = format!("%{}%", escape_like(&query.text));
            let a = param();
            let b = param();
            conditions.push(format!(
                "(message LIKE ${a} ESCAPE '\\' OR fields LIKE ${b} ESCAPE '\\')"
            ));
            order.push(Param::Text(pattern.clone()));
            order.push(Param::Text(pattern));
        }
        if query.before_at_ms > 0 {
            let a = param();
            let b = param();
            let c = param();
            conditions.push(format!("(at < ${a} OR (at = ${b} AND id < ${c}))"));
            order.push(Param::Number(query.before_at_ms));
            order.push(Param::Number(query.before_at_ms));
            order.push(Param::Text(query.before_id.clone()));
        }
        let limit = i64::from(query.limit.clamp(1, 1000));
        let limit_param = param();
        let sql = format!(
            "SELECT id, at, node, level, kind, message, fields FROM log_entries {} \
             ORDER BY at DESC, id DESC LIMIT ${limit_param}",
            if conditions.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", conditions.join(" AND "))
            }
        );
        let mut statement = sqlx::query(&sql);
        for value in order {
            statement = match value {
                Param::Text(text) => statement.bind(text),
                Param::Number(number) => statement.bind(number),
            };
        }
        let rows = statement.bind(limit + 1).fetch_all(&self.pool).await?;
        let more = rows.len() as i64 > limit;
        let entries = rows
            .iter()
            .take(limit as usize)
            .map(|row| {
                Ok(wire::LogEntry {
                    id: row.try_get("id")?,
                    at_ms: row.try_get("at")?,
                    node: row.try_get("node")?,
                    level: row.try_get("level")?,
                    kind: row.try_get("kind")?,
                    message: row.try_get("message")?,
                    fields_json: row.try_get("fields")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(wire::LogPage { entries, more })
    }

    /// Deletes entries older than `retention_ms`; returns how many.
    pub async fn prune_logs(&self, retention_ms: i64) -> Result<u64, StoreError> {
        let result = sqlx::query("DELETE FROM log_entries WHERE at < $1")
            .bind(now_ms() - retention_ms)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected())
    }
}

/// A bound value of a dynamically built query.
enum Param {
    Text(String),
    Number(i64),
}

/// Escapes LIKE's wildcards so the text matches literally.
fn escape_like(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}
