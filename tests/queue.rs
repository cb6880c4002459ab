//! The queue round trip: a message pushed by one side is handled by a worker, on apalis-sqlite
//! and on apalis-redis against the real Redis (in a key namespace of the test's own).

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{Backend, TestApp};
use licensor::Roles;
use licensor_core::queue::Message;
use licensor_workers::WorkerEvent;
use uuid::Uuid;

/// The nonces of the next `n` pings the app's worker handles, within `within`.
async fn handled(app: &mut TestApp, n: usize, within: Duration) -> HashSet<Uuid> {
    let mut seen = HashSet::new();
    let deadline = tokio::time::Instant::now() + within;
    while seen.len() < n {
        let event = tokio::time::timeout_at(deadline, app.events.recv())
            .await
            .unwrap_or_else(|_| panic!("{} of {n} pings handled within {within:?}", seen.len()))
            .unwrap();
        let WorkerEvent::Pinged { nonce, worker } = event;
        assert!(worker.starts_with("licensor-"), "{worker}");
        seen.insert(nonce);
    }
    seen
}

async fn queue_round_trip(backend: Backend) {
    let Some(mut app) = TestApp::start_with(backend, Roles::WORKER, "").await else {
        return;
    };
    let nonces: Vec<Uuid> = (0..20).map(|_| Uuid::new_v4()).collect();
    app.queue
        .push(Message::Ping { nonce: nonces[0] })
        .await
        .unwrap();
    app.queue
        .push_bulk(
            nonces[1..]
                .iter()
                .map(|&nonce| Message::Ping { nonce })
                .collect(),
        )
        .await
        .unwrap();
    let seen = handled(&mut app, nonces.len(), Duration::from_secs(30)).await;
    assert_eq!(seen, nonces.iter().copied().collect::<HashSet<_>>());
    if let Some(ns) = &app.data.redis {
        assert!(
            ns.keys().iter().all(|k| k.starts_with(&ns.prefix)),
            "the queue keeps to its namespace"
        );
        assert!(!ns.keys().is_empty(), "the queue used the test's namespace");
    }
    app.stop().await;
}
on_both_backends!(queue_round_trip);

/// The queue keeps only what waits or runs: a worker removes finished tasks as it goes. On
/// apalis-sqlite every acknowledgement was planned through the index all of a worker's past
/// tasks share, so a queue that kept them cost more with every task it ever ran.
async fn finished_tasks_leave_the_queue(backend: Backend) {
    let Some(mut app) = TestApp::start_with(backend, Roles::WORKER, "").await else {
        return;
    };
    let nonces: Vec<Uuid> = (0..600).map(|_| Uuid::new_v4()).collect();
    app.queue
        .push_bulk(
            nonces
                .iter()
                .map(|&nonce| Message::Ping { nonce })
                .collect(),
        )
        .await
        .unwrap();
    let seen = handled(&mut app, nonces.len(), Duration::from_secs(60)).await;
    assert_eq!(seen, nonces.iter().copied().collect::<HashSet<_>>());
    // Removed within a few of the workers' tidying rounds (every second), more than one
    // batch's worth of them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let kept = app.queue.finished_kept().await.unwrap();
        if kept == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{kept} finished tasks still kept by the queue 10 s after the last was handled"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // And what is left is handled as before.
    let last = Uuid::new_v4();
    app.queue.push(Message::Ping { nonce: last }).await.unwrap();
    let seen = handled(&mut app, 1, Duration::from_secs(30)).await;
    assert!(seen.contains(&last), "a ping after the tidying is handled");
    app.stop().await;
}
on_both_backends!(finished_tasks_leave_the_queue);

/// On Redis each worker process has its own queue (`{queue}:to:{process}`), where the lanes of
/// the tenants it writes to wait: the process works what is sent there, the queue's depth counts
/// it, and the own queue of a process that is gone — stopped, or taken for dead — is deleted
/// rather than kept for ever (nobody would take its messages; its jobs were queued again on the
/// shared queue).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_process_works_its_own_queue_redis() {
    let Some(mut app) = TestApp::start_with(Backend::Production, Roles::WORKER, "").await else {
        return;
    };
    // The worker names itself in its answer to a ping sent on the shared queue.
    let first = Uuid::new_v4();
    app.queue
        .push(Message::Ping { nonce: first })
        .await
        .unwrap();
    let worker = loop {
        let event = tokio::time::timeout(Duration::from_secs(30), app.events.recv())
            .await
            .expect("the ping is handled")
            .unwrap();
        let WorkerEvent::Pinged { nonce, worker } = event;
        if nonce == first {
            break worker;
        }
    };
    let own = app
        .queue
        .of_process(&worker)
        .expect("an own queue on Redis");
    let nonces: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
    for &nonce in &nonces {
        own.push_unwoken(Message::Ping { nonce }).await.unwrap();
    }
    let seen = handled(&mut app, nonces.len(), Duration::from_secs(30)).await;
    assert_eq!(seen, nonces.iter().copied().collect::<HashSet<_>>());

    // A process that is gone: what waits on its own queue counts in the depth until its queue
    // is deleted, at the next worker's start or at its takeover.
    let ns = app.data.redis.as_ref().unwrap().prefix.clone();
    let redis = common::RedisNamespace {
        url: app.data.redis.as_ref().unwrap().url.clone(),
        prefix: ns,
    };
    let gone = "licensor-gone-1-00000000";
    let stranded = app.queue.of_process(gone).unwrap();
    let strand = |n: usize| {
        let stranded = stranded.clone();
        async move {
            for _ in 0..n {
                stranded
                    .push_unwoken(Message::Ping {
                        nonce: Uuid::new_v4(),
                    })
                    .await
                    .unwrap();
            }
        }
    };
    strand(3).await;
    assert_eq!(app.queue.depth().await, Some(3));
    let mine = |keys: &[String], process: &str| {
        keys.iter()
            .filter(|k| k.contains(&format!(":to:{process}")))
            .count()
    };
    assert!(mine(&redis.keys(), gone) > 0);
    let removed = app.queue.forget_departed_workers().await.unwrap();
    let keys = redis.keys();
    assert_eq!(mine(&keys, gone), 0, "{keys:?}");
    assert!(removed >= 1);
    assert_eq!(app.queue.depth().await, Some(0));
    // The live worker's own queue stays, and still works.
    assert!(mine(&keys, &worker) > 0, "{keys:?}");
    let again = Uuid::new_v4();
    own.push_unwoken(Message::Ping { nonce: again })
        .await
        .unwrap();
    assert!(
        handled(&mut app, 1, Duration::from_secs(30))
            .await
            .contains(&again)
    );
    // Taken over, or stopped: its own queue goes.
    strand(2).await;
    assert!(app.queue.forget_process(gone).await.unwrap() > 0);
    assert_eq!(mine(&redis.keys(), gone), 0);
    app.stop().await;
}

/// On the embedded default the lanes of a job go through this process's own queue, in memory
/// (`licensor_core::queue::LocalQueue`): the shared SQLite queue carries the job's `Run` and its
/// first lane, not one message per chunk. Every member is still worked once, and every item's
/// outcome is the directory's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_jobs_lanes_stay_in_this_process() {
    use common::jobs::setup;
    use graph_emulator::ENTERPRISEPACK_SKU_ID;
    use serde_json::json;

    let Some(s) = setup(
        Backend::Embedded,
        "[jobs]\nchunk_size = 20\nlanes_per_job = 3\n",
    )
    .await
    else {
        return;
    };
    let licensor_core::queue::Queue::Sqlite { pool, .. } = &s.app.queue else {
        panic!("the embedded default's queue is SQLite");
    };
    // Every message pushed to the shared queue, kept past the queue's own tidying.
    for statement in [
        "CREATE TABLE pushed (message TEXT NOT NULL)",
        "CREATE TRIGGER pushed_messages AFTER INSERT ON Jobs \
         BEGIN INSERT INTO pushed (message) VALUES (CAST(new.job AS TEXT)); END",
    ] {
        sea_orm::sqlx::query(statement).execute(pool).await.unwrap();
    }
    let staff = s.app.group_id(&s.admin, "Staff").await;
    let job = s
        .run(json!({"kind": "assign", "groups": [staff], "add_licenses": [{"sku_id": ENTERPRISEPACK_SKU_ID}], "usage_location": "SE"}))
        .await;
    let id = job["id"].as_str().unwrap().to_owned();
    assert_eq!(job["progress"]["total"], 1000, "{job}");
    assert_eq!(job["progress"]["pending"], 0, "{job}");

    assert_items_are_the_directorys(&s, &job).await;

    let pushed: Vec<String> = sea_orm::sqlx::query_scalar("SELECT message FROM pushed")
        .fetch_all(pool)
        .await
        .unwrap();
    let of_job: Vec<serde_json::Value> = pushed
        .iter()
        .filter_map(|m| serde_json::from_str::<serde_json::Value>(m).ok())
        .filter(|m| m["job_id"] == id.as_str())
        .collect();
    let count = |kind: &str| of_job.iter().filter(|m| m["type"] == kind).count();
    assert_eq!(count("run"), 1, "{of_job:?}");
    // 50 chunks of 20 on three lanes: the first lane alone went through SQLite.
    assert_eq!(count("work"), 1, "{of_job:?}");
    assert_eq!(first_lanes(&s).await, [0, 0, 1], "own, writer, shared");
    s.finish().await;
}

/// Every item of the finished assign `job` (1,000 members, the SKU `ENTERPRISEPACK`) as the
/// directory has it now: succeeded and skipped members hold the SKU directly, the others do
/// not; nearly all succeeded, and each of those was written once.
async fn assert_items_are_the_directorys(s: &common::jobs::Setup, job: &serde_json::Value) {
    use common::jobs::holds;
    use graph_emulator::ENTERPRISEPACK_SKU_ID;

    let id = job["id"].as_str().unwrap();
    assert_eq!(job["progress"]["total"], 1000, "{job}");
    assert_eq!(job["progress"]["pending"], 0, "{job}");
    let items = s.app.all_items(&s.viewer, id).await;
    assert_eq!(items.len(), 1000);
    let mut succeeded = 0;
    for item in &items {
        let user = s.user(item["user_id"].as_str().unwrap()).await;
        let (direct, _) = holds(&user, ENTERPRISEPACK_SKU_ID);
        match item["status"].as_str().unwrap() {
            "succeeded" => {
                succeeded += 1;
                assert!(direct, "succeeded but not assigned: {item} {user}");
            }
            "skipped" => assert!(direct, "skipped but not held: {item} {user}"),
            _ => assert!(!direct, "{} but assigned: {item} {user}", item["status"]),
        }
    }
    assert!(succeeded > 900, "{job}");
    let stats = s.stats().await;
    assert_eq!(
        stats["successful_writes"], succeeded,
        "each member written once: {stats}"
    );
}

/// `licensor_first_lanes_queued_total` of the app's process, by queue: own, writer, shared.
async fn first_lanes(s: &common::jobs::Setup) -> [u64; 3] {
    let text = s.app.get_anonymous("/metrics").await.text().await.unwrap();
    ["own", "writer", "shared"].map(|queue| {
        let series = format!("licensor_first_lanes_queued_total{{queue=\"{queue}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .map_or(0, |n| n.trim().parse().unwrap())
    })
}

/// On Redis a job's `Run` takes its tenant's turn to write and queues the job's first lane on
/// its own process's queue, not on the shared queue behind every `Run` pushed before it (500
/// tenants' jobs submitted at once on two workers: the first write came a median 5.1 s after
/// the groups were read that way). Every member is worked once, and every item's outcome is the
/// directory's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_first_lane_goes_to_its_writers_own_queue_redis() {
    use graph_emulator::ENTERPRISEPACK_SKU_ID;
    use serde_json::json;

    let Some(s) = common::jobs::setup(
        Backend::Production,
        "[jobs]\nchunk_size = 20\nlanes_per_job = 3\n",
    )
    .await
    else {
        return;
    };
    let staff = s.app.group_id(&s.admin, "Staff").await;
    let job = s
        .run(json!({"kind": "assign", "groups": [staff], "add_licenses": [{"sku_id": ENTERPRISEPACK_SKU_ID}], "usage_location": "SE"}))
        .await;
    assert_items_are_the_directorys(&s, &job).await;
    assert_eq!(first_lanes(&s).await, [1, 0, 0], "own, writer, shared");
    // The process holds the tenant's turn it took in the `Run`.
    let writers: Vec<String> = {
        use licensor_core::entities::tenant_writer;
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
        tenant_writer::Entity::find()
            .filter(tenant_writer::Column::TenantId.eq(s.tenant_id))
            .all(&s.app.db)
            .await
            .unwrap()
            .into_iter()
            .map(|w| w.owner)
            .collect()
    };
    assert_eq!(writers.len(), 1, "{writers:?}");
    s.finish().await;
}
