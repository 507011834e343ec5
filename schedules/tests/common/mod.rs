#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use huitong_schedules::{Job, JobOutcome, JobRunner, MissedPolicy, OverlapPolicy, Schedule};
use metrics_util::debugging::{DebugValue, Snapshotter};

/// One call the runner received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub schedule: String,
    pub fire_time: DateTime<Utc>,
    pub started: tokio::time::Instant,
    pub ended: tokio::time::Instant,
    pub runner: &'static str,
}

/// A runner that takes `duration` (virtual time) per run, fails when told, and records
/// every call and the highest number of concurrent runs.
pub struct FakeRunner {
    pub id: &'static str,
    pub duration: Duration,
    pub fail_with: Option<String>,
    pub panic: bool,
    pub calls: Arc<Mutex<Vec<Call>>>,
    running: Mutex<usize>,
    pub max_running: Mutex<usize>,
}

impl FakeRunner {
    pub fn new(id: &'static str, duration: Duration, calls: Arc<Mutex<Vec<Call>>>) -> Self {
        FakeRunner {
            id,
            duration,
            fail_with: None,
            panic: false,
            calls,
            running: Mutex::new(0),
            max_running: Mutex::new(0),
        }
    }
}

#[async_trait]
impl JobRunner for FakeRunner {
    async fn run(
        &self,
        schedule: &str,
        _job: &Job,
        fire_time: DateTime<Utc>,
    ) -> Result<JobOutcome, String> {
        let started = tokio::time::Instant::now();
        {
            let mut r = self.running.lock().unwrap();
            *r += 1;
            let mut m = self.max_running.lock().unwrap();
            *m = (*m).max(*r);
        }
        tokio::time::sleep(self.duration).await;
        *self.running.lock().unwrap() -= 1;
        self.calls.lock().unwrap().push(Call {
            schedule: schedule.to_owned(),
            fire_time,
            started,
            ended: tokio::time::Instant::now(),
            runner: self.id,
        });
        if self.panic {
            panic!("boom");
        }
        match &self.fail_with {
            Some(e) => Err(e.clone()),
            None => Ok(JobOutcome {
                summary: Some("ok".to_owned()),
            }),
        }
    }
}

pub fn schedule(
    name: &str,
    cron: &str,
    tz: Tz,
    overlap: OverlapPolicy,
    missed: MissedPolicy,
) -> Schedule {
    Schedule::new(
        name,
        cron,
        tz,
        Job::parse("reconcile org").unwrap(),
        overlap,
        missed,
        true,
    )
    .unwrap()
}

pub fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
}

pub fn local(tz: Tz, y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    tz.with_ymd_and_hms(y, mo, d, h, mi, s)
        .single()
        .unwrap()
        .with_timezone(&Utc)
}

/// Counter values by (metric name, schedule label).
pub fn counters(snapshotter: &Snapshotter) -> HashMap<(String, String), u64> {
    let mut out = HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        if let DebugValue::Counter(v) = value {
            let schedule = key
                .key()
                .labels()
                .find(|l| l.key() == "schedule")
                .map(|l| l.value().to_owned())
                .unwrap_or_default();
            out.insert((key.key().name().to_owned(), schedule), v);
        }
    }
    out
}
