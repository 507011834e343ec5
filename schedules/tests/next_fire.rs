mod common;

use chrono::{Duration, NaiveDate, Timelike};
use chrono_tz::America::New_York;
use chrono_tz::Asia::Shanghai;
use chrono_tz::Europe::Berlin;
use common::{local, schedule, utc};
use huitong_schedules::{MissedPolicy, OverlapPolicy};

fn s(cron: &str, tz: chrono_tz::Tz) -> huitong_schedules::Schedule {
    schedule("t", cron, tz, OverlapPolicy::Skip, MissedPolicy::RunOnce)
}

#[test]
fn shanghai_mon_sat_skips_sunday() {
    let nightly = s("0 30 2 * * Mon-Sat", Shanghai);
    // Sat 2026-11-28 03:00 Shanghai -> next is Mon 2026-11-30 02:30 +08:00.
    let after = local(Shanghai, 2026, 11, 28, 3, 0, 0);
    let next = nightly.next_fire_after(after).unwrap();
    assert_eq!(next, utc(2026, 11, 29, 18, 30, 0));
    let up = nightly.upcoming(after, 2);
    assert_eq!(up[0].to_rfc3339(), "2026-11-30T02:30:00+08:00");
    assert_eq!(up[1].to_rfc3339(), "2026-12-01T02:30:00+08:00");
    // Strictly after: a fire time itself is not returned again.
    assert_eq!(
        nightly.next_fire_after(next).unwrap(),
        utc(2026, 11, 30, 18, 30, 0)
    );
}

#[test]
fn same_cron_different_zones_fire_at_different_instants() {
    let after = utc(2026, 6, 1, 0, 0, 0);
    let sh = s("0 0 9 * * *", Shanghai).next_fire_after(after).unwrap();
    let ny = s("0 0 9 * * *", New_York).next_fire_after(after).unwrap();
    assert_eq!(sh, utc(2026, 6, 1, 1, 0, 0)); // 09:00 +08:00
    assert_eq!(ny, utc(2026, 6, 1, 13, 0, 0)); // 09:00 EDT (-04:00)
}

#[test]
fn berlin_spring_forward_fires_at_end_of_gap_once() {
    // 2026-03-29: 02:00 CET -> 03:00 CEST; 02:30 does not exist.
    let daily = s("0 30 2 * * *", Berlin);
    let fires = daily.upcoming(utc(2026, 3, 27, 12, 0, 0), 4);
    let got: Vec<String> = fires.iter().map(|t| t.to_rfc3339()).collect();
    assert_eq!(
        got,
        [
            "2026-03-28T02:30:00+01:00",
            "2026-03-29T03:00:00+02:00",
            "2026-03-30T02:30:00+02:00",
            "2026-03-31T02:30:00+02:00",
        ]
    );
}

#[test]
fn berlin_fall_back_fires_repeated_time_once() {
    // 2026-10-25: 03:00 CEST -> 02:00 CET; 02:30 happens twice.
    let daily = s("0 30 2 * * *", Berlin);
    let fires = daily.upcoming(utc(2026, 10, 24, 12, 0, 0), 3);
    let got: Vec<String> = fires.iter().map(|t| t.to_rfc3339()).collect();
    assert_eq!(
        got,
        [
            "2026-10-25T02:30:00+02:00",
            "2026-10-26T02:30:00+01:00",
            "2026-10-27T02:30:00+01:00",
        ]
    );
    // Asked from between the two occurrences, it does not fire the second one.
    let between = utc(2026, 10, 25, 1, 0, 0); // 02:00 CET... i.e. after the first 02:30
    assert_eq!(
        daily.next_fire_after(between).unwrap(),
        utc(2026, 10, 26, 1, 30, 0)
    );
}

#[test]
fn new_york_daily_fires_once_per_local_day_for_a_whole_year() {
    let daily = s("0 30 2 * * *", New_York);
    let (fires, more) = daily.fires_between(
        utc(2026, 1, 1, 5, 0, 0), // 2026-01-01 00:00 EST
        utc(2027, 1, 1, 5, 0, 0),
        1000,
    );
    assert!(!more);
    assert_eq!(fires.len(), 365);
    let mut day = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
    for t in &fires {
        let l = t.with_timezone(&New_York);
        assert_eq!(l.date_naive(), day, "{l}");
        if day == NaiveDate::from_ymd_opt(2026, 3, 8).unwrap() {
            // 02:30 does not exist that day: end of the gap.
            assert_eq!((l.hour(), l.minute()), (3, 0), "{l}");
        } else {
            assert_eq!((l.hour(), l.minute()), (2, 30), "{l}");
        }
        day = day.succ_opt().unwrap();
    }
}

#[test]
fn hourly_keeps_real_time_rhythm_across_both_transitions() {
    // Hour field `*`: skipped local times do not exist, repeated ones fire twice, so the
    // fires stay exactly one hour apart all year (New York, both DST transitions).
    let hourly = s("0 30 * * * *", New_York);
    let (fires, _) =
        hourly.fires_between(utc(2026, 1, 1, 0, 0, 0), utc(2027, 1, 1, 0, 0, 0), 10_000);
    assert_eq!(fires.len(), 8760);
    for w in fires.windows(2) {
        assert_eq!(w[1] - w[0], Duration::hours(1), "{} -> {}", w[0], w[1]);
    }
    // Around the fall-back: 01:30 EDT, 01:30 EST, 02:30 EST.
    let around: Vec<String> = hourly
        .upcoming(utc(2026, 11, 1, 5, 0, 0), 3)
        .iter()
        .map(|t| t.to_rfc3339())
        .collect();
    assert_eq!(
        around,
        [
            "2026-11-01T01:30:00-04:00",
            "2026-11-01T01:30:00-05:00",
            "2026-11-01T02:30:00-05:00",
        ]
    );
}

#[test]
fn every_ten_seconds_and_past_year_end() {
    let s10 = s("*/10 * * * * *", Shanghai);
    assert_eq!(
        s10.next_fire_after(utc(2026, 1, 1, 0, 0, 3)).unwrap(),
        utc(2026, 1, 1, 0, 0, 10)
    );
    let (fires, more) = s10.fires_between(utc(2026, 1, 1, 0, 0, 0), utc(2026, 1, 1, 0, 1, 0), 3);
    assert_eq!(fires.len(), 3);
    assert!(more);
    let past = s("0 0 0 1 1 * 2020", Shanghai);
    assert_eq!(past.next_fire_after(utc(2026, 1, 1, 0, 0, 0)), None);
    assert!(past.upcoming(utc(2026, 1, 1, 0, 0, 0), 3).is_empty());
}
