//! Content reports with their audit trail, and the reads the reporting service needs: recent
//! messages to rebuild its detection windows, and the figures of a summary.

use sqlx::Row;
use switchboard_proto::v1 as wire;

use super::messages::{MESSAGE_COLUMNS, message};
use super::{Store, StoreError, now_ms};

const REPORT_COLUMNS: &str =
    "id, room_id, message_id, reporter_id, reason, status, created_at, resolved_at, action, note";

impl Store {
    /// Files a report of a message by a member of its room.
    pub async fn file_report(
        &self,
        request: &wire::FileReportRequest,
    ) -> Result<wire::ContentReport, StoreError> {
        self.require_member(request.user_id, request.room_id)
            .await?;
        let exists = sqlx::query("SELECT id FROM messages WHERE id = $1 AND room_id = $2")
            .bind(request.message_id)
            .bind(request.room_id)
            .fetch_optional(&self.pool)
            .await?;
        if exists.is_none() {
            return Err(StoreError::rejected("message_not_found", "no such message"));
        }
        let now = now_ms();
        let row = sqlx::query(
            "INSERT INTO content_reports (room_id, message_id, reporter_id, reason, status, created_at) \
             VALUES ($1, $2, $3, $4, 'open', $5) RETURNING id",
        )
        .bind(request.room_id)
        .bind(request.message_id)
        .bind(request.user_id)
        .bind(&request.reason)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(wire::ContentReport {
            id: row.try_get("id")?,
            room_id: request.room_id,
            message_id: request.message_id,
            reporter_id: request.user_id,
            reason: request.reason.clone(),
            status: "open".into(),
            created_at_ms: now,
            ..Default::default()
        })
    }

    /// Reports with `status` (all when empty), newest first.
    pub async fn list_reports(&self, status: &str) -> Result<Vec<wire::ContentReport>, StoreError> {
        let rows = if status.is_empty() {
            sqlx::query(&format!(
                "SELECT {REPORT_COLUMNS} FROM content_reports ORDER BY id DESC LIMIT 1000"
            ))
            .fetch_all(&self.pool)
            .await?
        } else {
            sqlx::query(&format!(
                "SELECT {REPORT_COLUMNS} FROM content_reports WHERE status = $1 ORDER BY id DESC LIMIT 1000"
            ))
            .bind(status)
            .fetch_all(&self.pool)
            .await?
        };
        rows.iter().map(report).collect()
    }

    /// Resolves a report, deleting the message when asked, and records the decision in the audit
    /// trail. Resolving a resolved report again changes nothing and returns it as it is.
    pub async fn resolve_report(
        &self,
        request: &wire::ResolveReportRequest,
    ) -> Result<wire::ResolveReportReply, StoreError> {
        let current = sqlx::query(&format!(
            "SELECT {REPORT_COLUMNS} FROM content_reports WHERE id = $1"
        ))
        .bind(request.report_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::rejected("report_not_found", "no such report"))?;
        let current = report(&current)?;
        if current.status == "resolved" {
            return Ok(wire::ResolveReportReply {
                report: Some(current),
                event: None,
            });
        }
        let event = if request.action == "delete_message" {
            // User 0 is the moderator acting through the reporting service.
            let (_, event) = self
                .delete_message(&wire::DeleteMessageRequest {
                    user_id: 0,
                    room_id: current.room_id,
                    message_id: current.message_id,
                })
                .await?;
            event
        } else {
            None
        };
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE content_reports SET status = 'resolved', resolved_at = $2, action = $3, note = $4 \
             WHERE id = $1 AND status = 'open'",
        )
        .bind(request.report_id)
        .bind(now)
        .bind(&request.action)
        .bind(&request.note)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO report_actions (report_id, action, note, at) VALUES ($1, $2, $3, $4)",
        )
        .bind(request.report_id)
        .bind(&request.action)
        .bind(&request.note)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(wire::ResolveReportReply {
            report: Some(wire::ContentReport {
                status: "resolved".into(),
                resolved_at_ms: now,
                action: request.action.clone(),
                note: request.note.clone(),
                ..current
            }),
            event,
        })
    }

    /// Messages committed since a time, as room events, oldest first.
    pub async fn recent_messages(
        &self,
        request: &wire::RecentMessagesRequest,
    ) -> Result<Vec<wire::RoomEvent>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m JOIN users u ON u.id = m.author_id \
             WHERE m.created_at >= $1 ORDER BY m.created_at, m.id LIMIT $2"
        ))
        .bind(request.since_ms)
        .bind(request.limit.clamp(1, 1_000_000))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let message = message(row)?;
                Ok(wire::RoomEvent {
                    room_id: message.room_id,
                    cursor: 0,
                    kind: "message".into(),
                    at_ms: message.created_at_ms,
                    message: Some(message),
                    user: None,
                })
            })
            .collect()
    }

    /// The figures of a summary for a time range.
    pub async fn report_stats(
        &self,
        request: &wire::ReportStatsRequest,
    ) -> Result<wire::ReportStats, StoreError> {
        let count = |status: &'static str| async move {
            sqlx::query("SELECT COUNT(*) AS n FROM content_reports WHERE status = $1")
                .bind(status)
                .fetch_one(&self.pool)
                .await?
                .try_get::<i64, _>("n")
        };
        let open_reports = count("open").await?;
        let resolved_reports = count("resolved").await?;
        let busiest_rooms = named_counts(
            sqlx::query(
                "SELECT r.name AS name, COUNT(*) AS n FROM messages m JOIN rooms r ON r.id = m.room_id \
                 WHERE m.created_at >= $1 AND m.created_at < $2 GROUP BY r.name ORDER BY n DESC, r.name LIMIT 10",
            )
            .bind(request.since_ms)
            .bind(request.until_ms)
            .fetch_all(&self.pool)
            .await?,
        )?;
        let messages: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM messages WHERE created_at >= $1 AND created_at < $2",
        )
        .bind(request.since_ms)
        .bind(request.until_ms)
        .fetch_one(&self.pool)
        .await?
        .try_get("n")?;
        // Log fields are JSON text; the subject is read back in Rust to stay portable.
        let failed_logins = self
            .count_log_field(request, "login_failed", "username")
            .await?;
        let node_incidents = self.count_log_field(request, "node_down", "peer").await?;
        Ok(wire::ReportStats {
            open_reports,
            resolved_reports,
            busiest_rooms,
            failed_logins,
            node_incidents,
            messages,
        })
    }

    async fn count_log_field(
        &self,
        request: &wire::ReportStatsRequest,
        kind: &str,
        field: &str,
    ) -> Result<Vec<wire::NamedCount>, StoreError> {
        let rows = sqlx::query(
            "SELECT fields FROM log_entries WHERE kind = $1 AND at >= $2 AND at < $3 LIMIT 100000",
        )
        .bind(kind)
        .bind(request.since_ms)
        .bind(request.until_ms)
        .fetch_all(&self.pool)
        .await?;
        let mut counts = std::collections::HashMap::<String, i64>::new();
        for row in rows {
            let fields: String = row.try_get("fields")?;
            let value: serde_json::Value = serde_json::from_str(&fields).unwrap_or_default();
            if kind == "node_down" && value["reason"] == "shutdown" {
                continue;
            }
            if let Some(name) = value[field].as_str() {
                *counts.entry(name.to_owned()).or_default() += 1;
            }
        }
        let mut counts: Vec<wire::NamedCount> = counts
            .into_iter()
            .map(|(name, count)| wire::NamedCount { name, count })
            .collect();
        counts.sort_by(|a, b| b.count.cmp(&a.count).then(a.name.cmp(&b.name)));
        counts.truncate(10);
        Ok(counts)
    }
}

fn named_counts(rows: Vec<sqlx::any::AnyRow>) -> Result<Vec<wire::NamedCount>, StoreError> {
    rows.iter()
        .map(|row| {
            Ok(wire::NamedCount {
                name: row.try_get("name")?,
                count: row.try_get("n")?,
            })
        })
        .collect()
}

fn report(row: &sqlx::any::AnyRow) -> Result<wire::ContentReport, StoreError> {
    Ok(wire::ContentReport {
        id: row.try_get("id")?,
        room_id: row.try_get("room_id")?,
        message_id: row.try_get("message_id")?,
        reporter_id: row.try_get("reporter_id")?,
        reason: row.try_get("reason")?,
        status: row.try_get("status")?,
        created_at_ms: row.try_get("created_at")?,
        resolved_at_ms: row.try_get("resolved_at")?,
        action: row.try_get("action")?,
        note: row.try_get("note")?,
    })
}
