//! Engine tests on tokio's paused clock: virtual time jumps from timer to timer, so hours of
//! schedule run in milliseconds and the results do not depend on machine speed.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Asia::Shanghai;
use common::{Call, FakeRunner, counters, local, schedule, utc};
use huitong_schedules::{
    FireRecord, FireStatus, FireStore, MemoryFireStore, MissedPolicy, OverlapPolicy, Schedule,
    Scheduler, SchedulerConfig, TokioClock, list_schedules, metrics as names, render_json,
    render_table,
};
use metrics_util::debugging::DebuggingRecorder;

fn start(
    schedules: Vec<Schedule>,
    runner: Arc<FakeRunner>,
    store: Arc<MemoryFireStore>,
    now: DateTime<Utc>,
    holder: &str,
) -> huitong_schedules::SchedulerHandle {
    Scheduler::new(
        schedules,
        runner,
        store,
        Arc::new(TokioClock::starting_at(now)),
        SchedulerConfig::new(holder),
    )
    .start()
}

fn fire_times(calls: &[Call]) -> Vec<DateTime<Utc>> {
    let mut v: Vec<_> = calls.iter().map(|c| c.fire_time).collect();
    v.sort();
    v
}

fn by_status(store: &MemoryFireStore, status: FireStatus) -> Vec<DateTime<Utc>> {
    store
        .all()
        .into_iter()
        .filter(|r| r.status == status)
        .filter_map(|r| r.fire_time())
        .collect()
}

const T0: (i32, u32, u32) = (2026, 11, 30);

fn t0() -> DateTime<Utc> {
    utc(T0.0, T0.1, T0.2, 0, 0, 0)
}

fn secs(n: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::seconds(n)
}

#[tokio::test(start_paused = true)]
async fn overlap_skip_records_skipped_fires() {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let calls = Arc::new(Mutex::new(Vec::new()));
    let runner = Arc::new(FakeRunner::new("a", Duration::from_secs(25), calls.clone()));
    let store = Arc::new(MemoryFireStore::new());
    let s = schedule(
        "s",
        "*/10 * * * * *",
        Shanghai,
        OverlapPolicy::Skip,
        MissedPolicy::RunOnce,
    );
    let handle = start(vec![s], runner.clone(), store.clone(), t0(), "p1");
    tokio::time::sleep(Duration::from_secs(62)).await;
    handle.shutdown().await;

    // Runs: fire 10 (10..35) and fire 40 (40..65); 20, 30, 50, 60 come while one runs.
    assert_eq!(fire_times(&calls.lock().unwrap()), [secs(10), secs(40)]);
    assert_eq!(
        by_status(&store, FireStatus::Skipped),
        [secs(20), secs(30), secs(50), secs(60)]
    );
    assert_eq!(
        by_status(&store, FireStatus::Succeeded),
        [secs(10), secs(40)]
    );
    assert_eq!(*runner.max_running.lock().unwrap(), 1);
    let c = counters(&snap);
    assert_eq!(c.get(&(names::FIRES.to_owned(), "s".to_owned())), Some(&2));
    assert_eq!(c.get(&(names::SKIPS.to_owned(), "s".to_owned())), Some(&4));
    assert_eq!(
        c.get(&(names::SUCCESSES.to_owned(), "s".to_owned())),
        Some(&2)
    );
}

#[tokio::test(start_paused = true)]
async fn overlap_queue_runs_every_fire_one_after_another() {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let runner = Arc::new(FakeRunner::new("a", Duration::from_secs(25), calls.clone()));
    let store = Arc::new(MemoryFireStore::new());
    let s = schedule(
        "s",
        "*/10 * * * * *",
        Shanghai,
        OverlapPolicy::Queue,
        MissedPolicy::RunOnce,
    );
    let handle = start(vec![s], runner.clone(), store.clone(), t0(), "p1");
    tokio::time::sleep(Duration::from_secs(62)).await;
    // Shutdown lets the queued fires (40, 50, 60) run.
    handle.shutdown().await;

    let calls = calls.lock().unwrap().clone();
    let expected: Vec<_> = (1..=6).map(|i| secs(i * 10)).collect();
    assert_eq!(fire_times(&calls), expected);
    assert!(by_status(&store, FireStatus::Skipped).is_empty());
    assert_eq!(*runner.max_running.lock().unwrap(), 1);
    // In fire order, each starting when the previous ended.
    let mut in_start_order = calls.clone();
    in_start_order.sort_by_key(|c| c.started);
    assert_eq!(fire_times(&in_start_order), expected);
    for w in in_start_order.windows(2) {
        assert!(w[0].fire_time < w[1].fire_time);
        assert_eq!(w[1].started, w[0].ended);
    }
}

fn last_run_record(schedule: &str, at: DateTime<Utc>) -> FireRecord {
    FireRecord {
        schedule: schedule.to_owned(),
        fire_time_ms: at.timestamp_millis(),
        holder: "old".to_owned(),
        claimed_at_ms: at.timestamp_millis(),
        status: FireStatus::Succeeded,
        finished_at_ms: Some(at.timestamp_millis() + 60_000),
        error: None,
        detail: None,
        missed_count: 0,
    }
}

/// The nightly schedule last fired Wed 2026-11-25 02:30; huitong was down until Mon
/// 2026-11-30 03:00 (Shanghai). Missed: Thu, Fri, Sat, Mon (not Sun) = 4.
async fn downtime(
    missed: MissedPolicy,
) -> (
    Vec<Call>,
    Arc<MemoryFireStore>,
    std::collections::HashMap<(String, String), u64>,
) {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let calls = Arc::new(Mutex::new(Vec::new()));
    let runner = Arc::new(FakeRunner::new("a", Duration::from_secs(60), calls.clone()));
    let store = Arc::new(MemoryFireStore::new());
    store.insert(last_run_record(
        "nightly",
        local(Shanghai, 2026, 11, 25, 2, 30, 0),
    ));
    let s = schedule(
        "nightly",
        "0 30 2 * * Mon-Sat",
        Shanghai,
        OverlapPolicy::Skip,
        missed,
    );
    let now = local(Shanghai, 2026, 11, 30, 3, 0, 0);
    let handle = start(vec![s], runner, store.clone(), now, "p1");
    // Run on to Tue 02:35: the regular Tuesday fire must happen normally.
    tokio::time::sleep(Duration::from_secs(23 * 3600 + 35 * 60)).await;
    handle.shutdown().await;
    let c = counters(&snap);
    let calls = calls.lock().unwrap().clone();
    (calls, store, c)
}

#[tokio::test(start_paused = true)]
async fn missed_run_once_fires_once_for_all_missed_times() {
    let (calls, store, c) = downtime(MissedPolicy::RunOnce).await;
    let mon = local(Shanghai, 2026, 11, 30, 2, 30, 0);
    let tue = local(Shanghai, 2026, 12, 1, 2, 30, 0);
    assert_eq!(fire_times(&calls), [mon, tue]);
    let catch_up = store
        .all()
        .into_iter()
        .find(|r| r.fire_time() == Some(mon))
        .unwrap();
    assert_eq!(catch_up.status, FireStatus::Succeeded);
    assert_eq!(catch_up.missed_count, 4);
    assert_eq!(
        c.get(&(names::MISSED.to_owned(), "nightly".to_owned())),
        Some(&4)
    );
    assert_eq!(
        c.get(&(names::FIRES.to_owned(), "nightly".to_owned())),
        Some(&2)
    );
}

#[tokio::test(start_paused = true)]
async fn missed_skip_records_missed_and_does_not_run() {
    let (calls, store, c) = downtime(MissedPolicy::Skip).await;
    let mon = local(Shanghai, 2026, 11, 30, 2, 30, 0);
    let tue = local(Shanghai, 2026, 12, 1, 2, 30, 0);
    assert_eq!(fire_times(&calls), [tue]);
    let missed = store
        .all()
        .into_iter()
        .find(|r| r.fire_time() == Some(mon))
        .unwrap();
    assert_eq!(missed.status, FireStatus::Missed);
    assert_eq!(missed.missed_count, 4);
    assert!(missed.detail.unwrap().contains("4 fire(s) missed"));
    assert_eq!(
        c.get(&(names::MISSED.to_owned(), "nightly".to_owned())),
        Some(&4)
    );
    assert_eq!(
        c.get(&(names::FIRES.to_owned(), "nightly".to_owned())),
        Some(&1)
    );
}

#[tokio::test(start_paused = true)]
async fn a_new_schedule_does_not_backfill() {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let runner = Arc::new(FakeRunner::new("a", Duration::from_secs(1), calls.clone()));
    let store = Arc::new(MemoryFireStore::new());
    let s = schedule(
        "nightly",
        "0 30 2 * * *",
        Shanghai,
        OverlapPolicy::Skip,
        MissedPolicy::RunOnce,
    );
    let handle = start(
        vec![s],
        runner,
        store.clone(),
        local(Shanghai, 2026, 11, 30, 3, 0, 0),
        "p1",
    );
    tokio::time::sleep(Duration::from_secs(3600)).await;
    handle.shutdown().await;
    assert!(calls.lock().unwrap().is_empty());
    assert!(store.all().is_empty());
}

#[tokio::test(start_paused = true)]
async fn two_schedulers_sharing_a_store_fire_each_time_once() {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let store = Arc::new(MemoryFireStore::new());
    let mk = || {
        vec![
            schedule(
                "fast",
                "*/10 * * * * *",
                Shanghai,
                OverlapPolicy::Queue,
                MissedPolicy::RunOnce,
            ),
            schedule(
                "slow",
                "0 * * * * *",
                Shanghai,
                OverlapPolicy::Skip,
                MissedPolicy::RunOnce,
            ),
        ]
    };
    let a = start(
        mk(),
        Arc::new(FakeRunner::new("a", Duration::from_secs(3), calls.clone())),
        store.clone(),
        t0(),
        "a",
    );
    let b = start(
        mk(),
        Arc::new(FakeRunner::new("b", Duration::from_secs(3), calls.clone())),
        store.clone(),
        t0(),
        "b",
    );
    // A third process joins later and picks up from the store.
    tokio::time::sleep(Duration::from_secs(95)).await;
    let c = start(
        mk(),
        Arc::new(FakeRunner::new("c", Duration::from_secs(3), calls.clone())),
        store.clone(),
        secs(95),
        "c",
    );
    tokio::time::sleep(Duration::from_secs(300 - 95)).await;
    a.shutdown().await;
    b.shutdown().await;
    c.shutdown().await;

    let calls = calls.lock().unwrap().clone();
    for (name, every, count) in [("fast", 10, 30), ("slow", 60, 5)] {
        let got: Vec<_> = {
            let mut v: Vec<_> = calls
                .iter()
                .filter(|c| c.schedule == name)
                .map(|c| c.fire_time)
                .collect();
            v.sort();
            v
        };
        let expected: Vec<_> = (1..=count).map(|i| secs(i * every)).collect();
        assert_eq!(got, expected, "{name}");
        let rows: Vec<_> = store
            .all()
            .into_iter()
            .filter(|r| r.schedule == name)
            .collect();
        assert_eq!(rows.len(), count as usize);
        assert!(rows.iter().all(|r| r.status == FireStatus::Succeeded));
    }
}

/// Process `a` claims and runs fire 10 (25 s); process `b` starts at 12 s and takes the
/// fires from 20 on (`a`'s cron only fires at second 10 of each minute, as during a rolling
/// update), so `b` can learn of `a`'s run only through the store.
async fn across_processes(overlap: OverlapPolicy) -> (Vec<Call>, Arc<MemoryFireStore>) {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let store = Arc::new(MemoryFireStore::new());
    let a_sched = schedule(
        "s",
        "10 * * * * *",
        Shanghai,
        overlap,
        MissedPolicy::RunOnce,
    );
    let b_sched = schedule(
        "s",
        "*/10 * * * * *",
        Shanghai,
        overlap,
        MissedPolicy::RunOnce,
    );
    let a = start(
        vec![a_sched],
        Arc::new(FakeRunner::new("a", Duration::from_secs(25), calls.clone())),
        store.clone(),
        t0(),
        "a",
    );
    tokio::time::sleep(Duration::from_secs(12)).await;
    let b = start(
        vec![b_sched],
        Arc::new(FakeRunner::new("b", Duration::from_secs(25), calls.clone())),
        store.clone(),
        secs(12),
        "b",
    );
    tokio::time::sleep(Duration::from_secs(50)).await;
    a.shutdown().await;
    b.shutdown().await;
    let mut calls = calls.lock().unwrap().clone();
    calls.sort_by_key(|c| c.started);
    (calls, store)
}

#[tokio::test(start_paused = true)]
async fn overlap_skip_sees_a_run_in_another_process() {
    let (calls, store) = across_processes(OverlapPolicy::Skip).await;
    let who: Vec<_> = calls.iter().map(|c| (c.fire_time, c.runner)).collect();
    assert_eq!(who, [(secs(10), "a"), (secs(40), "b")]);
    assert_eq!(
        by_status(&store, FireStatus::Skipped),
        [secs(20), secs(30), secs(50), secs(60)]
    );
    let skipped_20 = store
        .all()
        .into_iter()
        .find(|r| r.fire_time() == Some(secs(20)))
        .unwrap();
    assert_eq!(skipped_20.holder, "b");
    assert!(skipped_20.error.unwrap().contains("on a) still running"));
}

#[tokio::test(start_paused = true)]
async fn overlap_queue_waits_for_a_run_in_another_process() {
    let (calls, store) = across_processes(OverlapPolicy::Queue).await;
    let who: Vec<_> = calls.iter().map(|c| (c.fire_time, c.runner)).collect();
    let expected: Vec<_> = std::iter::once((secs(10), "a"))
        .chain((2..=6).map(|i| (secs(i * 10), "b")))
        .collect();
    assert_eq!(who, expected);
    for w in calls.windows(2) {
        assert!(w[1].started >= w[0].ended, "{w:?}");
    }
    assert!(by_status(&store, FireStatus::Skipped).is_empty());
}

#[tokio::test(start_paused = true)]
async fn failures_are_recorded_counted_and_listed() {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let calls = Arc::new(Mutex::new(Vec::new()));
    let mut runner = FakeRunner::new("a", Duration::from_secs(5), calls.clone());
    runner.fail_with = Some("dingtalk: HTTP 503 from /topapi/v2/user/list".to_owned());
    let store = Arc::new(MemoryFireStore::new());
    let failing = schedule(
        "org-nightly",
        "0 30 2 * * Mon-Sat",
        Shanghai,
        OverlapPolicy::Skip,
        MissedPolicy::RunOnce,
    );
    let mut off = schedule(
        "off",
        "0 0 3 * * Sun",
        Shanghai,
        OverlapPolicy::Skip,
        MissedPolicy::RunOnce,
    );
    off.enabled = false;
    let now = local(Shanghai, 2026, 11, 30, 2, 0, 0);
    let handle = start(
        vec![failing.clone(), off.clone()],
        Arc::new(runner),
        store.clone(),
        now,
        "p1",
    );
    tokio::time::sleep(Duration::from_secs(40 * 60)).await;
    handle.shutdown().await;

    let fire = local(Shanghai, 2026, 11, 30, 2, 30, 0);
    assert_eq!(fire_times(&calls.lock().unwrap()), [fire]);
    let c = counters(&snap);
    assert_eq!(
        c.get(&(names::FAILURES.to_owned(), "org-nightly".to_owned())),
        Some(&1)
    );
    assert_eq!(
        c.get(&(names::SUCCESSES.to_owned(), "org-nightly".to_owned())),
        None
    );

    let views = list_schedules(
        &[failing, off],
        store.as_ref(),
        local(Shanghai, 2026, 11, 30, 3, 0, 0),
        3,
    )
    .await
    .unwrap();
    let v = &views[0];
    assert_eq!(
        v.next_fires,
        [
            "2026-12-01T02:30:00+08:00",
            "2026-12-02T02:30:00+08:00",
            "2026-12-03T02:30:00+08:00"
        ]
    );
    let last = v.last.as_ref().unwrap();
    assert_eq!(last.status, FireStatus::Failed);
    assert_eq!(last.fire_time, "2026-11-30T02:30:00+08:00");
    assert_eq!(
        last.finished_at.as_deref(),
        Some("2026-11-30T02:30:05+08:00")
    );
    assert_eq!(
        last.error.as_deref(),
        Some("dingtalk: HTTP 503 from /topapi/v2/user/list")
    );
    assert!(views[1].next_fires.is_empty());
    assert!(views[1].last.is_none());

    let table = render_table(&views);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{table}");
    assert!(
        lines[1].contains("org-nightly") && lines[1].contains("reconcile org"),
        "{table}"
    );
    assert!(lines[1].contains("2026-12-01 02:30:00 +08:00"), "{table}");
    assert!(
        lines[1].contains("failed 2026-11-30 02:30:00 +08:00: dingtalk: HTTP 503"),
        "{table}"
    );
    assert!(lines[2].trim() == "2026-12-02 02:30:00 +08:00", "{table}");
    assert!(
        lines[4].contains("off")
            && lines[4].contains("(disabled)")
            && lines[4].contains("never fired"),
        "{table}"
    );

    let json: serde_json::Value = serde_json::from_str(&render_json(&views).unwrap()).unwrap();
    assert_eq!(json[0]["last"]["status"], "failed");
    assert_eq!(
        json[0]["last"]["error"],
        "dingtalk: HTTP 503 from /topapi/v2/user/list"
    );
    assert_eq!(json[0]["timezone"], "Asia/Shanghai");
    assert_eq!(json[0]["overlap"], "skip");
    assert_eq!(json[0]["missed"], "run-once");
    assert_eq!(json[1]["enabled"], false);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_job_is_a_recorded_failure_and_the_schedule_goes_on() {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let mut runner = FakeRunner::new("a", Duration::from_secs(1), calls.clone());
    runner.panic = true;
    let store = Arc::new(MemoryFireStore::new());
    let s = schedule(
        "s",
        "*/10 * * * * *",
        Shanghai,
        OverlapPolicy::Skip,
        MissedPolicy::RunOnce,
    );
    let handle = start(vec![s], Arc::new(runner), store.clone(), t0(), "p1");
    tokio::time::sleep(Duration::from_secs(25)).await;
    handle.shutdown().await;
    assert_eq!(fire_times(&calls.lock().unwrap()), [secs(10), secs(20)]);
    let rows = store.all();
    assert_eq!(rows.len(), 2);
    for r in rows {
        assert_eq!(r.status, FireStatus::Failed);
        assert!(r.error.unwrap().contains("job panicked"));
    }
    assert!(store.last_fire("s").await.unwrap().is_some());
}

#[tokio::test(start_paused = true)]
async fn after_downtime_two_processes_catch_up_once() {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let store = Arc::new(MemoryFireStore::new());
    store.insert(last_run_record(
        "nightly",
        local(Shanghai, 2026, 11, 25, 2, 30, 0),
    ));
    store.insert(last_run_record(
        "weekly",
        local(Shanghai, 2026, 11, 1, 2, 30, 0),
    ));
    let mk = || {
        vec![
            schedule(
                "nightly",
                "0 30 2 * * Mon-Sat",
                Shanghai,
                OverlapPolicy::Skip,
                MissedPolicy::RunOnce,
            ),
            schedule(
                "weekly",
                "0 30 2 * * Sun",
                Shanghai,
                OverlapPolicy::Skip,
                MissedPolicy::Skip,
            ),
        ]
    };
    let now = local(Shanghai, 2026, 11, 30, 3, 0, 0);
    let a = start(
        mk(),
        Arc::new(FakeRunner::new("a", Duration::from_secs(60), calls.clone())),
        store.clone(),
        now,
        "a",
    );
    let b = start(
        mk(),
        Arc::new(FakeRunner::new("b", Duration::from_secs(60), calls.clone())),
        store.clone(),
        now,
        "b",
    );
    tokio::time::sleep(Duration::from_secs(600)).await;
    a.shutdown().await;
    b.shutdown().await;
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].schedule, "nightly");
    // Weekly (skip policy): Sundays 8, 15, 22, 29 missed, one record for all four.
    let weekly: Vec<_> = store
        .all()
        .into_iter()
        .filter(|r| r.schedule == "weekly")
        .collect();
    assert_eq!(weekly.len(), 2);
    assert_eq!(weekly[1].status, FireStatus::Missed);
    assert_eq!(weekly[1].missed_count, 4);
    assert_eq!(
        weekly[1].fire_time(),
        Some(local(Shanghai, 2026, 11, 29, 2, 30, 0))
    );
}

#[tokio::test(start_paused = true)]
async fn a_run_left_by_a_dead_process_stops_blocking_once_stale() {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let store = Arc::new(MemoryFireStore::new());
    let s = || {
        vec![schedule(
            "s",
            "0 0 * * * *",
            Shanghai,
            OverlapPolicy::Skip,
            MissedPolicy::RunOnce,
        )]
    };
    // A process claimed 00:00 and died without an outcome.
    let mut dead = last_run_record("s", t0());
    dead.status = FireStatus::Fired;
    dead.finished_at_ms = None;
    dead.holder = "dead".to_owned();
    store.insert(dead);
    // Fires 01:00 .. 05:00 are skipped as overlapping; from 06:00 (claimed 6 h ago, the
    // default stale_run_after) the dead claim no longer blocks.
    let handle = start(
        s(),
        Arc::new(FakeRunner::new("a", Duration::from_secs(1), calls.clone())),
        store.clone(),
        secs(30),
        "a",
    );
    tokio::time::sleep(Duration::from_secs(8 * 3600)).await;
    handle.shutdown().await;
    let hours = |h: i64| secs(h * 3600);
    assert_eq!(
        fire_times(&calls.lock().unwrap()),
        [hours(6), hours(7), hours(8)]
    );
    assert_eq!(
        by_status(&store, FireStatus::Skipped),
        (1..=5).map(hours).collect::<Vec<_>>()
    );
}

#[tokio::test(start_paused = true)]
async fn a_very_frequent_schedule_after_long_downtime_catches_up_once() {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let store = Arc::new(MemoryFireStore::new());
    store.insert(last_run_record("s", t0()));
    let s = schedule(
        "s",
        "* * * * * *",
        Shanghai,
        OverlapPolicy::Skip,
        MissedPolicy::RunOnce,
    );
    // Two days down: 172,800 missed seconds.
    let now = secs(2 * 86_400) + chrono::Duration::milliseconds(500);
    let handle = start(
        vec![s],
        Arc::new(FakeRunner::new(
            "a",
            Duration::from_millis(100),
            calls.clone(),
        )),
        store.clone(),
        now,
        "p1",
    );
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    handle.shutdown().await;
    let rows = store.all();
    let catch_up = rows.iter().find(|r| r.missed_count > 0).unwrap();
    assert!(
        catch_up.missed_count >= 100_000,
        "{}",
        catch_up.missed_count
    );
    assert_eq!(rows.iter().filter(|r| r.missed_count > 0).count(), 1);
    // The fires of the last minute (within the grace period) are coalesced too.
    assert!(rows.iter().all(|r| r.status == FireStatus::Succeeded));
    assert_eq!(catch_up.fire_time(), Some(secs(2 * 86_400)));
    // Then the regular fires of the next two seconds, on time.
    let times = fire_times(&calls.lock().unwrap());
    assert_eq!(times.len(), 3, "{times:?}");
    assert_eq!(
        times,
        [secs(2 * 86_400), secs(2 * 86_400 + 1), secs(2 * 86_400 + 2)]
    );
}
