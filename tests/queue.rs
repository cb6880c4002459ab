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
    let mut seen = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while seen.len() < nonces.len() {
        let event = tokio::time::timeout_at(deadline, app.events.recv())
            .await
            .expect("every ping is handled within 30 s")
            .unwrap();
        let WorkerEvent::Pinged { nonce, worker } = event;
        assert!(worker.starts_with("licensor-"), "{worker}");
        seen.insert(nonce);
    }
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
