//! One story that drives the whole `Store` trait, run on SQLite always and on
//! PostgreSQL when `HUITONG_TEST_PG_URL` is set (required in CI).

use std::collections::BTreeMap;
use std::sync::Arc;

use huitong::config::DatabaseConfig;
use huitong::model::Entity;
use huitong::store::{
    self, LinkOutcome, NewAudit, RecordWrite, RunStatus, StepStatus, Store, UpsertOutcome, Xref,
    content_hash,
};
use huitong_schedules::{FireOutcome, FireStatus};
use huitong_tests::{PgDatabase, service_url};
use serde_json::json;

fn db(url: &str) -> DatabaseConfig {
    DatabaseConfig {
        url: url.to_owned().into(),
        max_connections: 4,
    }
}

async fn story(store: Arc<dyn Store>) {
    // Migrations are idempotent.
    store.migrate().await.unwrap();
    store.ping().await.unwrap();

    // --- canonical records: create, unchanged, update, stale, list.
    let mut w = RecordWrite {
        entity: Entity::Person,
        id: "p-1".into(),
        data: json!({"name": "张三", "email": "zhang.san@example.cn", "department_ids": ["d-1"]}),
        source_system: Some("hq".into()),
        source_time_ms: Some(1_000),
        deleted: false,
    };
    assert_eq!(
        store.upsert_record(&w, 10).await.unwrap(),
        UpsertOutcome::Created { version: 1 }
    );
    // Same content in another key order: unchanged.
    let mut same = w.clone();
    same.data = serde_json::from_str(
        r#"{"department_ids":["d-1"],"email":"zhang.san@example.cn","name":"张三"}"#,
    )
    .unwrap();
    same.source_time_ms = Some(2_000);
    assert_eq!(
        store.upsert_record(&same, 11).await.unwrap(),
        UpsertOutcome::Unchanged { version: 1 }
    );
    w.data["title"] = json!("会计");
    w.source_time_ms = Some(3_000);
    assert_eq!(
        store.upsert_record(&w, 12).await.unwrap(),
        UpsertOutcome::Updated { version: 2 }
    );
    // An older change arriving late does not overwrite the newer one.
    let mut old = w.clone();
    old.data["title"] = json!("出纳");
    old.source_time_ms = Some(2_500);
    assert_eq!(
        store.upsert_record(&old, 13).await.unwrap(),
        UpsertOutcome::Stale { version: 2 }
    );
    let rec = store
        .get_record(Entity::Person, "p-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.version, 2);
    assert_eq!(rec.data["title"], "会计");
    assert_eq!(rec.content_hash, content_hash(&w.data));
    assert_eq!(rec.source_system.as_deref(), Some("hq"));
    assert_eq!(rec.updated_at_ms, 12);
    assert!(!rec.deleted);
    // Deleting is a change even with the same content.
    let mut del = w.clone();
    del.deleted = true;
    del.source_time_ms = Some(4_000);
    assert_eq!(
        store.upsert_record(&del, 14).await.unwrap(),
        UpsertOutcome::Updated { version: 3 }
    );
    assert!(
        store
            .get_record(Entity::Person, "p-1")
            .await
            .unwrap()
            .unwrap()
            .deleted
    );
    assert!(
        store
            .get_record(Entity::Person, "nobody")
            .await
            .unwrap()
            .is_none()
    );

    for i in 0..5 {
        let r = RecordWrite {
            entity: Entity::Department,
            id: format!("d-{i}"),
            data: json!({"name": format!("部门{i}")}),
            source_system: None,
            source_time_ms: None,
            deleted: false,
        };
        store.upsert_record(&r, 20).await.unwrap();
    }
    let page1 = store
        .list_records(Entity::Department, None, 3)
        .await
        .unwrap();
    let ids: Vec<&str> = page1.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["d-0", "d-1", "d-2"]);
    let page2 = store
        .list_records(Entity::Department, Some("d-2"), 3)
        .await
        .unwrap();
    let ids: Vec<&str> = page2.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["d-3", "d-4"]);

    // --- identity: link, idempotent relink, conflicts both ways, hashes, unlink.
    let x = Xref {
        entity: Entity::Person,
        canonical_id: "p-1".into(),
        system: "dingtalk-sub".into(),
        external_id: "manager4411".into(),
        last_written_hash: None,
        last_seen_hash: Some("seen-0".into()),
    };
    assert_eq!(store.link(&x, 30).await.unwrap(), LinkOutcome::Linked);
    assert_eq!(
        store.link(&x, 31).await.unwrap(),
        LinkOutcome::AlreadyLinked
    );
    let mut other_canonical = x.clone();
    other_canonical.canonical_id = "p-2".into();
    assert_eq!(
        store.link(&other_canonical, 32).await.unwrap(),
        LinkOutcome::ExternalTaken {
            canonical_id: "p-1".into()
        }
    );
    let mut other_external = x.clone();
    other_external.external_id = "someone-else".into();
    assert_eq!(
        store.link(&other_external, 33).await.unwrap(),
        LinkOutcome::CanonicalTaken {
            external_id: "manager4411".into()
        }
    );
    let mut feishu = x.clone();
    feishu.system = "feishu-hq".into();
    feishu.external_id = "ou_7d8a6e6df7621556ce0d21922b676706ccs".into();
    assert_eq!(store.link(&feishu, 34).await.unwrap(), LinkOutcome::Linked);
    assert!(
        store
            .set_written_hash(
                Entity::Person,
                "dingtalk-sub",
                "manager4411",
                "written-1",
                35
            )
            .await
            .unwrap()
    );
    assert!(
        store
            .set_seen_hash(Entity::Person, "dingtalk-sub", "manager4411", "seen-1", 35)
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_written_hash(Entity::Person, "dingtalk-sub", "ghost", "h", 35)
            .await
            .unwrap()
    );
    let found = store
        .find_by_external(Entity::Person, "dingtalk-sub", "manager4411")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.canonical_id, "p-1");
    assert_eq!(found.last_written_hash.as_deref(), Some("written-1"));
    assert_eq!(found.last_seen_hash.as_deref(), Some("seen-1"));
    let by_canonical = store
        .find_by_canonical(Entity::Person, "feishu-hq", "p-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_canonical.external_id, feishu.external_id);
    let all = store.xrefs_of(Entity::Person, "p-1").await.unwrap();
    let systems: Vec<&str> = all.iter().map(|x| x.system.as_str()).collect();
    assert_eq!(systems, ["dingtalk-sub", "feishu-hq"]);
    let in_system = store
        .xrefs_in_system(Entity::Person, "feishu-hq")
        .await
        .unwrap();
    assert_eq!(in_system.len(), 1);
    assert_eq!(
        store
            .xref_ids_in_system(Entity::Person, "feishu-hq")
            .await
            .unwrap(),
        vec![(feishu.external_id.clone(), "p-1".to_owned())]
    );
    assert!(
        store
            .xref_ids_in_system(Entity::Department, "feishu-hq")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .count_xrefs(Entity::Person, "feishu-hq")
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .count_xrefs(Entity::Department, "feishu-hq")
            .await
            .unwrap(),
        0
    );
    assert!(
        store
            .unlink(Entity::Person, "feishu-hq", &feishu.external_id)
            .await
            .unwrap()
    );
    assert!(
        !store
            .unlink(Entity::Person, "feishu-hq", &feishu.external_id)
            .await
            .unwrap()
    );
    assert_eq!(
        store.xrefs_of(Entity::Person, "p-1").await.unwrap().len(),
        1
    );

    // --- event de-duplication with expiry.
    assert!(
        store
            .mark_event("feishu-hq", "ev-1", 1_000, 500)
            .await
            .unwrap()
    );
    assert!(
        !store
            .mark_event("feishu-hq", "ev-1", 1_200, 500)
            .await
            .unwrap()
    );
    assert!(
        store
            .mark_event("dingtalk-sub", "ev-1", 1_200, 500)
            .await
            .unwrap()
    );
    // After expiry the id counts as new again.
    assert!(
        store
            .mark_event("feishu-hq", "ev-1", 1_600, 500)
            .await
            .unwrap()
    );
    assert!(
        store
            .mark_event("feishu-hq", "ev-2", 1_600, 10)
            .await
            .unwrap()
    );
    assert_eq!(store.purge_events(1_700).await.unwrap(), 2);
    assert!(
        !store
            .mark_event("feishu-hq", "ev-1", 1_800, 500)
            .await
            .unwrap()
    );

    // --- sync runs.
    let run = store.start_run("org", "reconcile", 100).await.unwrap();
    assert_eq!(run.status, RunStatus::Running);
    let later = store.start_run("other", "reconcile", 200).await.unwrap();
    let counts = BTreeMap::from([("created".to_owned(), 12), ("updated".to_owned(), 3)]);
    assert!(
        store
            .finish_run(&run.id, RunStatus::Succeeded, &counts, None, 150)
            .await
            .unwrap()
    );
    assert!(
        store
            .finish_run(
                &later.id,
                RunStatus::Failed,
                &BTreeMap::new(),
                Some("token expired"),
                250
            )
            .await
            .unwrap()
    );
    let got = store.get_run(&run.id).await.unwrap().unwrap();
    assert_eq!(got.status, RunStatus::Succeeded);
    assert_eq!(got.counts, counts);
    assert_eq!(got.finished_at_ms, Some(150));
    let runs = store.list_runs(None, 10).await.unwrap();
    assert_eq!(
        runs.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        [later.id.as_str(), run.id.as_str()]
    );
    let org_runs = store.list_runs(Some("org"), 10).await.unwrap();
    assert_eq!(org_runs.len(), 1);
    assert_eq!(org_runs[0].id, run.id);
    assert_eq!(
        store
            .get_run(&later.id)
            .await
            .unwrap()
            .unwrap()
            .error
            .as_deref(),
        Some("token expired")
    );

    // --- the steps of a queued run: claimed, finished, counted by range.
    let first = store
        .begin_step(&run.id, 0, "sub", "create", 300)
        .await
        .unwrap();
    assert_eq!((first.status, first.attempts), (StepStatus::Started, 1));
    for seq in 1..4 {
        store
            .begin_step(&run.id, seq, "sub", "update", 300)
            .await
            .unwrap();
    }
    assert_eq!(store.count_finished_steps(&run.id, 0, 4).await.unwrap(), 0);
    // A redelivery before the step finished: still started, claimed twice.
    let again = store
        .begin_step(&run.id, 0, "sub", "create", 310)
        .await
        .unwrap();
    assert_eq!((again.status, again.attempts), (StepStatus::Started, 2));
    assert!(
        store
            .finish_step(&run.id, 0, StepStatus::Done, None, 320)
            .await
            .unwrap()
    );
    store
        .finish_step(&run.id, 1, StepStatus::Retrying, Some("busy"), 320)
        .await
        .unwrap();
    store
        .finish_step(&run.id, 2, StepStatus::Failed, Some("no such dept"), 320)
        .await
        .unwrap();
    // Retrying is not finished; done and failed are.
    assert_eq!(store.count_finished_steps(&run.id, 0, 4).await.unwrap(), 2);
    assert_eq!(store.count_finished_steps(&run.id, 1, 3).await.unwrap(), 1);
    assert_eq!(
        store.count_finished_steps(&later.id, 0, 4).await.unwrap(),
        0
    );
    let done_again = store
        .begin_step(&run.id, 0, "sub", "create", 330)
        .await
        .unwrap();
    assert_eq!(
        (done_again.status, done_again.attempts),
        (StepStatus::Done, 3)
    );
    let steps = store.run_steps(&run.id, None).await.unwrap();
    assert_eq!(
        steps
            .iter()
            .map(|s| (s.seq, s.action.as_str(), s.status, s.error.as_deref()))
            .collect::<Vec<_>>(),
        [
            (0, "create", StepStatus::Done, None),
            (1, "update", StepStatus::Retrying, Some("busy")),
            (2, "update", StepStatus::Failed, Some("no such dept")),
            (3, "update", StepStatus::Started, None),
        ]
    );
    let failed = store
        .run_steps(&run.id, Some(StepStatus::Failed))
        .await
        .unwrap();
    assert_eq!(failed.iter().map(|s| s.seq).collect::<Vec<_>>(), [2]);
    assert!(
        !store
            .finish_step(&later.id, 9, StepStatus::Done, None, 340)
            .await
            .unwrap(),
        "no such step"
    );

    // --- audit log.
    let a = store
        .audit(
            &NewAudit {
                actor: "admin@example.cn".into(),
                action: "dlq.replay".into(),
                target: "message:42".into(),
                before: Some(json!({"attempts": 5})),
                after: None,
            },
            500,
        )
        .await
        .unwrap();
    let b = store
        .audit(
            &NewAudit {
                actor: "cli".into(),
                action: "sync.apply".into(),
                target: "route:org".into(),
                before: None,
                after: Some(json!({"created": 12})),
            },
            501,
        )
        .await
        .unwrap();
    assert!(b > a);
    let log = store.list_audit(10).await.unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].action, "sync.apply");
    assert_eq!(log[1].before, Some(json!({"attempts": 5})));
    assert_eq!(log[1].after, None);
    assert_eq!(log[1].actor, "admin@example.cn");

    // --- schedule leases.
    assert!(
        store
            .acquire_lease("nightly", "node-a", 1_000, 2_000)
            .await
            .unwrap()
    );
    assert!(
        !store
            .acquire_lease("nightly", "node-b", 1_500, 2_500)
            .await
            .unwrap()
    );
    assert!(
        store
            .acquire_lease("nightly", "node-a", 1_500, 3_000)
            .await
            .unwrap(),
        "holder renews"
    );
    assert!(
        !store
            .acquire_lease("nightly", "node-b", 2_500, 3_500)
            .await
            .unwrap(),
        "renewed lease holds"
    );
    assert!(
        store
            .acquire_lease("nightly", "node-b", 3_000, 4_000)
            .await
            .unwrap(),
        "expired lease is taken over"
    );
    assert!(!store.release_lease("nightly", "node-a").await.unwrap());
    assert!(store.release_lease("nightly", "node-b").await.unwrap());
    assert!(
        store
            .acquire_lease("nightly", "node-a", 3_100, 4_100)
            .await
            .unwrap()
    );
}

/// The schedules' fires (`FireStore`) as two huitong nodes see them: `a` and `b` are two stores
/// opened on one database (two pools, as two processes). Both race to claim the same fire and
/// exactly one wins; the winner records the outcome and both read it back.
async fn fires(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    const FIRE: i64 = 1_700_000_000_000;
    assert!(a.last_fire("nightly").await.unwrap().is_none());
    assert!(a.recent_fires("nightly", 10).await.unwrap().is_empty());

    // Both nodes claim the same fire at the same moment, several fire times over: each time
    // exactly one of them wins.
    for round in 0..20i64 {
        let t = FIRE + round * 60_000;
        let (won_a, won_b) = tokio::join!(
            a.claim_fire("nightly", t, "node-a", t + 5),
            b.claim_fire("nightly", t, "node-b", t + 7),
        );
        let (won_a, won_b) = (won_a.unwrap(), won_b.unwrap());
        assert!(won_a ^ won_b, "fire {round}: a won {won_a}, b won {won_b}");
        // A late claim (either node) loses and changes nothing.
        assert!(!a.claim_fire("nightly", t, "node-a", t + 9).await.unwrap());
        assert!(!b.claim_fire("nightly", t, "node-b", t + 9).await.unwrap());
        let holder = if won_a { "node-a" } else { "node-b" };
        let claimed_at = if won_a { t + 5 } else { t + 7 };
        let seen = b.last_fire("nightly").await.unwrap().unwrap();
        assert_eq!(
            (seen.holder.as_str(), seen.claimed_at_ms, seen.status),
            (holder, claimed_at, FireStatus::Fired),
            "fire {round}"
        );
    }
    let last = FIRE + 19 * 60_000;

    // The winner of the last fire records its outcome; the other node reads it back.
    let winner = a.last_fire("nightly").await.unwrap().unwrap();
    let (mine, other) = if winner.holder == "node-a" {
        (&a, &b)
    } else {
        (&b, &a)
    };
    mine.record_outcome(
        "nightly",
        last,
        &FireOutcome {
            status: FireStatus::Succeeded,
            finished_at_ms: last + 1_000,
            error: None,
            detail: Some("12 created".into()),
            missed_count: 2,
        },
    )
    .await
    .unwrap();
    let done = other.last_fire("nightly").await.unwrap().unwrap();
    assert_eq!(done.fire_time_ms, last);
    assert_eq!(done.holder, winner.holder);
    assert_eq!(done.status, FireStatus::Succeeded);
    assert_eq!(done.finished_at_ms, Some(last + 1_000));
    assert_eq!(done.detail.as_deref(), Some("12 created"));
    assert_eq!(done.error, None);
    assert_eq!(done.missed_count, 2);
    // A failed fire keeps its error.
    other
        .record_outcome(
            "nightly",
            FIRE,
            &FireOutcome {
                status: FireStatus::Failed,
                finished_at_ms: FIRE + 500,
                error: Some("vendor 502".into()),
                detail: None,
                missed_count: 0,
            },
        )
        .await
        .unwrap();

    // Newest first, limited; another schedule's fires are apart.
    let recent = a.recent_fires("nightly", 3).await.unwrap();
    let times: Vec<i64> = recent.iter().map(|f| f.fire_time_ms).collect();
    assert_eq!(times, [last, last - 60_000, last - 120_000]);
    assert_eq!(recent[0].status, FireStatus::Succeeded);
    assert_eq!(recent[1].status, FireStatus::Fired);
    let all = b.recent_fires("nightly", 100).await.unwrap();
    assert_eq!(all.len(), 20);
    let first = all.last().unwrap();
    assert_eq!(
        (first.fire_time_ms, first.status, first.error.as_deref()),
        (FIRE, FireStatus::Failed, Some("vendor 502"))
    );
    assert!(b.claim_fire("weekly", FIRE, "node-b", FIRE).await.unwrap());
    assert_eq!(a.recent_fires("nightly", 100).await.unwrap().len(), 20);
    assert_eq!(a.recent_fires("weekly", 100).await.unwrap().len(), 1);
}

#[tokio::test]
async fn store_story_sqlite() {
    let dir = tempfile_dir();
    let url = format!("sqlite://{}/nested/huitong.db", dir.display());
    let store = store::open(&db(&url)).await.unwrap();
    assert_eq!(store.backend(), "sqlite");
    story(store.clone()).await;
    // A second node on the same file.
    let other = store::open(&db(&url)).await.unwrap();
    fires(store, other).await;
    // The file was created (with its missing parent directory) and is in WAL mode.
    assert!(dir.join("nested/huitong.db").exists());
    let again = store::SqliteStore::connect(&url, 1).await.unwrap();
    let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
        .fetch_one(again.pool())
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn store_story_postgres() {
    let Some(admin) = service_url("HUITONG_TEST_PG_URL", "store_story_postgres") else {
        return;
    };
    let pg = PgDatabase::create(&admin).await.unwrap();
    let store = store::open(&db(&pg.url)).await.unwrap();
    assert_eq!(store.backend(), "postgres");
    story(store.clone()).await;
    // A second node on the same database.
    let other = store::open(&db(&pg.url)).await.unwrap();
    fires(store, other).await;
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("huitong-store-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
