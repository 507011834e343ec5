//! The `huitong schedule list` view: next fire times and last outcome of each schedule.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::schedule::Schedule;
use crate::store::{FireRecord, FireStatus, FireStore, StoreError};

/// One schedule in the list view.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleView {
    /// Schedule name.
    pub name: String,
    /// Whether it fires.
    pub enabled: bool,
    /// Cron expression as written.
    pub cron: String,
    /// IANA time zone.
    pub timezone: String,
    /// The job line, e.g. `reconcile org`.
    pub job: String,
    /// `skip` or `queue`.
    pub overlap: String,
    /// `run-once` or `skip`.
    pub missed: String,
    /// The file it came from.
    pub source: String,
    /// Next fire times in the schedule's zone, RFC 3339 with UTC offset (empty if disabled).
    pub next_fires: Vec<String>,
    /// The most recent fire, if any.
    pub last: Option<LastFire>,
}

/// The most recent fire of a schedule.
#[derive(Debug, Clone, Serialize)]
pub struct LastFire {
    /// fired (running or queued) / succeeded / failed / skipped / missed.
    pub status: FireStatus,
    /// Scheduled time, in the schedule's zone (RFC 3339).
    pub fire_time: String,
    /// When the outcome was recorded, in the schedule's zone (RFC 3339).
    pub finished_at: Option<String>,
    /// The process that claimed it.
    pub holder: String,
    /// Error (failed) or reason (skipped).
    pub error: Option<String>,
    /// Job summary or other detail.
    pub detail: Option<String>,
    /// Number of missed fire times it stands for.
    pub missed_count: u32,
}

/// Builds the list view: for each schedule its settings, the next `next_n` fire times after
/// `now` and its last fire from `store`.
pub async fn list_schedules(
    schedules: &[Schedule],
    store: &dyn FireStore,
    now: DateTime<Utc>,
    next_n: usize,
) -> Result<Vec<ScheduleView>, StoreError> {
    let mut out = Vec::with_capacity(schedules.len());
    for s in schedules {
        let next_fires = if s.enabled {
            s.upcoming(now, next_n)
                .into_iter()
                .map(|t| t.to_rfc3339())
                .collect()
        } else {
            Vec::new()
        };
        let last = store
            .last_fire(&s.name)
            .await?
            .map(|r| last_fire(&r, s.timezone));
        out.push(ScheduleView {
            name: s.name.clone(),
            enabled: s.enabled,
            cron: s.cron.clone(),
            timezone: s.timezone.name().to_owned(),
            job: s.job.to_string(),
            overlap: s.overlap.to_string(),
            missed: s.missed.to_string(),
            source: s.source.display().to_string(),
            next_fires,
            last,
        });
    }
    Ok(out)
}

fn in_zone(ms: i64, tz: Tz) -> String {
    match DateTime::from_timestamp_millis(ms) {
        Some(t) => t.with_timezone(&tz).to_rfc3339(),
        None => format!("{ms} ms"),
    }
}

fn last_fire(r: &FireRecord, tz: Tz) -> LastFire {
    LastFire {
        status: r.status,
        fire_time: in_zone(r.fire_time_ms, tz),
        finished_at: r.finished_at_ms.map(|ms| in_zone(ms, tz)),
        holder: r.holder.clone(),
        error: r.error.clone(),
        detail: r.detail.clone(),
        missed_count: r.missed_count,
    }
}

/// The list view as pretty JSON (an array of [`ScheduleView`]).
pub fn render_json(views: &[ScheduleView]) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(views)
}

const MAX_CELL: usize = 100;

fn one_line(s: &str) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() > MAX_CELL {
        let mut cut: String = flat.chars().take(MAX_CELL - 1).collect();
        cut.push('…');
        cut
    } else {
        flat
    }
}

/// Human-readable time from RFC 3339: `2026-12-01 02:30:00 +08:00`.
fn human(rfc3339: &str) -> String {
    match DateTime::parse_from_rfc3339(rfc3339) {
        Ok(t) => t.format("%Y-%m-%d %H:%M:%S %:z").to_string(),
        Err(_) => rfc3339.to_owned(),
    }
}

fn last_cell(last: &Option<LastFire>) -> String {
    let Some(l) = last else {
        return "never fired".to_owned();
    };
    let status = match l.status {
        FireStatus::Fired => "fired (running)".to_owned(),
        other => other.to_string(),
    };
    let mut cell = format!("{status} {}", human(&l.fire_time));
    if l.missed_count > 0 {
        cell.push_str(&format!(" [{} missed]", l.missed_count));
    }
    if let Some(e) = &l.error {
        cell.push_str(": ");
        cell.push_str(e);
    } else if let Some(d) = &l.detail {
        cell.push_str(": ");
        cell.push_str(d);
    }
    one_line(&cell)
}

/// The list view as a text table; a schedule's further next fire times go on continuation
/// lines under its first one.
pub fn render_table(views: &[ScheduleView]) -> String {
    let header = [
        "NAME",
        "ENABLED",
        "JOB",
        "CRON",
        "ZONE",
        "OVERLAP",
        "MISSED",
        "NEXT FIRES",
        "LAST",
    ];
    let mut rows: Vec<Vec<String>> = Vec::new();
    for v in views {
        let nexts: Vec<String> = if v.enabled {
            v.next_fires.iter().map(|t| human(t)).collect()
        } else {
            vec!["(disabled)".to_owned()]
        };
        let first_next = nexts
            .first()
            .cloned()
            .unwrap_or_else(|| "(none)".to_owned());
        rows.push(vec![
            one_line(&v.name),
            if v.enabled { "yes" } else { "no" }.to_owned(),
            one_line(&v.job),
            one_line(&v.cron),
            v.timezone.clone(),
            v.overlap.clone(),
            v.missed.clone(),
            first_next,
            last_cell(&v.last),
        ]);
        for n in nexts.iter().skip(1) {
            let mut row = vec![String::new(); header.len()];
            row[7] = n.clone();
            rows.push(row);
        }
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header_row).chain(rows.iter()) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(w - cell.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
