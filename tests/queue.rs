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
