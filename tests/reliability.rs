//! Jobs survive what breaks in production: a worker killed with SIGKILL mid-job, the queue's
//! Redis emptied mid-job, and a directory failing 30% of requests under a tight write budget. Each
//! time the job still ends `finished`, every member is assigned, and no member is written twice.
//!
//! The process tests run the real `licensor` binary on PostgreSQL + Redis: one `serve
//! --no-worker` and worker processes, with short heartbeats, leases and reconcile intervals.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::deployment::{Deployment, assert_all_assigned_once, stats};
use common::{Backend, TestApp};
use graph_emulator::{
    Budget, ENTERPRISEPACK_SKU_ID, EmulatorConfig, EmulatorHandle, Faults, Scenario,
};
use licensor::Roles;
use serde_json::{Value, json};

async fn slow_directory(members: usize) -> EmulatorHandle {
    graph_emulator::spawn(EmulatorConfig {
        scenario: Some(Scenario::simple(31, members, (members * 2) as u32)),
        faults: Faults {
            latency_ms: 15,
            ..Faults::unthrottled()
        },
        ..EmulatorConfig::default()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worker_killed_mid_job_postgres_redis() {
    let emulator = slow_directory(20_000).await;
    let Some(mut d) = Deployment::start(&emulator, 2).await else {
        return;
    };
    let id = d.submit_assign().await;
    d.wait_progress(&id, 3_000).await;
    // SIGKILL the first worker in the middle of its chunks.
    let victim = &mut d.procs.0[1];
    Command::new("kill")
        .args(["-9", &victim.id().to_string()])
        .status()
        .unwrap();
    victim.wait().unwrap();
    let before = d.job(&id).await;
    assert_eq!(before["status"], "running");
    // A new worker joins.
    d.spawn(&["worker"]);
    let job = d.wait_end(&id, 180).await;
    assert_all_assigned_once(&emulator, &job, 20_000).await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queue_emptied_mid_job_postgres_redis() {
    let emulator = slow_directory(5_000).await;
    let Some(d) = Deployment::start(&emulator, 1).await else {
        return;
    };
    let id = d.submit_assign().await;
    d.wait_progress(&id, 1_000).await;
    // Everything the queue held for this deployment is gone (as after FLUSHALL or a Redis
    // restart without persistence), keeping other tests' keys.
    let ns = d.redis.as_ref().unwrap();
    let client = redis::Client::open(ns.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys = ns.keys();
    assert!(!keys.is_empty());
    let _: () = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut conn)
        .await
        .unwrap();
    let flushed = Instant::now();
    let job = d.wait_end(&id, 60).await;
    assert!(flushed.elapsed() < Duration::from_secs(60));
    assert_all_assigned_once(&emulator, &job, 5_000).await;
    emulator.shutdown().await;
}

/// Tenant "contoso" of `app`, pointed at `emulator`, and the id of an assign job of its "All
/// Users" group submitted through the API.
async fn assign_all_users(
    app: &TestApp,
    emulator: &EmulatorHandle,
) -> (common::TestTenant, String) {
    let tenant = app.tenant("contoso").await;
    app.connect_directory(tenant.id, emulator).await;
    let group = app.group_id(&tenant.admin, "All Users").await;
    let submitted = app
        .post_json(
            "/v1/jobs",
            &tenant.admin,
            &json!({"kind": "assign", "groups": [group], "add_licenses": [{"sku_id": ENTERPRISEPACK_SKU_ID}], "usage_location": "SE"}),
        )
        .await;
    let job_id = submitted["id"].as_str().unwrap().to_owned();
    (tenant, job_id)
}

/// The id of a remove job of tenant's "All Users" group, submitted through the API.
async fn remove_from_all_users(app: &TestApp, tenant: &common::TestTenant) -> String {
    let group = app.group_id(&tenant.admin, "All Users").await;
    let remove =
        json!({"kind": "remove", "groups": [group], "remove_licenses": [ENTERPRISEPACK_SKU_ID]});
    app.post_json("/v1/jobs", &tenant.admin, &remove).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// After an assign and a remove of all `members`: no unit is consumed, and each member was
/// written exactly once by each job (a write sent again would show as a third). The emulator's
/// stats.
async fn assert_assigned_and_removed_once(emulator: &EmulatorHandle, members: u64) -> Value {
    let stats = stats(emulator).await;
    assert_eq!(stats["skus"][0]["consumedUnits"], 0, "{stats}");
    assert_eq!(
        stats["successful_writes"].as_u64(),
        Some(2 * members),
        "{stats}"
    );
    assert_eq!(stats["writes_per_user_max"], 2, "{stats}");
    stats
}

/// 30% of directory requests fail with 503 and writes are throttled hard: transient errors are
/// retried until they succeed, none is left as a failed member, and none is read first (a 503
/// is the directory's word that it did not carry the write out).
async fn flaky_throttled_directory(backend: Backend) {
    let emulator = graph_emulator::spawn(EmulatorConfig {
        scenario: Some(Scenario::simple(32, 5_000, 10_000)),
        faults: Faults {
            error_rate: 0.3,
            error_statuses: vec![503],
            write_budget: Budget {
                limit: 1_000,
                window_ms: 5_000,
            },
            ..Faults::default()
        },
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let Some(app) = TestApp::start_with(
        backend,
        Roles::ALL,
        "[directory]\nretry_min_delay_ms = 50\nretry_max_delay_ms = 2000\n",
    )
    .await
    else {
        return;
    };
    let (tenant, job_id) = assign_all_users(&app, &emulator).await;
    let job = app.wait_for_job(&tenant.admin, &job_id, 240).await;
    assert_eq!(job["progress"]["failed"], 0, "{job}");
    assert_all_assigned_once(&emulator, &job, 5_000).await;
    app.assert_outcomes_true(
        &tenant.viewer,
        job["id"].as_str().unwrap(),
        &emulator.base_url(),
    )
    .await;
    let stats = stats(&emulator).await;
    assert!(stats["injected_errors"].as_u64().unwrap() > 100, "{stats}");
    // A 503 says the write was not carried out: it is sent again without reading the member
    // first, and no member was read at all.
    assert!(
        stats["requests"]["GET /v1.0/users/{id}"].is_null(),
        "members read: {stats}"
    );
    // The budget bound the job: 5,000 writes at 1,000 per 5 s take at least 20 s. (Whether the
    // directory also answered 429 depends on how closely the scheduler met it: none is best.)
    let at = |k: &str| chrono::DateTime::parse_from_rfc3339(job[k].as_str().unwrap()).unwrap();
    let took = (at("finished_at") - at("started_at")).num_milliseconds();
    assert!(took >= 20_000, "{took} ms: {stats}");
    app.stop().await;
    emulator.shutdown().await;
}
on_both_backends!(flaky_throttled_directory);

/// The directory carries out a quarter of its requests and then loses the answer (the
/// connection closes, as when a gateway times out on a request that went through), and fails
/// or drops others before carrying them out (10 % answered 503, 5 % closed unanswered). A write
/// whose answer was lost is never sent again blindly: the member is read, and a read that shows
/// the change ends it `succeeded`. An assign and then a remove of every member: each member is
/// written exactly once by each job, no member is said to have been skipped (licensor made
/// every change), and every item agrees with the directory.
async fn lost_answers_are_read_not_written_again(backend: Backend) {
    const MEMBERS: u64 = 300;
    let emulator = graph_emulator::spawn(EmulatorConfig {
        scenario: Some(Scenario::simple(33, MEMBERS as usize, 1_000)),
        faults: Faults {
            lost_answer_rate: 0.25,
            error_rate: 0.1,
            drop_rate: 0.05,
            seed: 11,
            ..Faults::unthrottled()
        },
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let Some(app) = TestApp::start_with(
        backend,
        Roles::ALL,
        "[directory]\nretry_min_delay_ms = 20\nretry_max_delay_ms = 200\n[jobs]\nchunk_size = 40\n",
    )
    .await
    else {
        return;
    };
    let (tenant, assign) = assign_all_users(&app, &emulator).await;
    let mut lost_notes = 0;
    for id in [Some(assign), None] {
        let id = match id {
            Some(id) => id,
            None => remove_from_all_users(&app, &tenant).await,
        };
        let job = app.wait_for_job(&tenant.admin, &id, 120).await;
        assert_eq!(job["status"], "finished", "{job}");
        assert_eq!(
            job["progress"]["succeeded"].as_u64(),
            Some(MEMBERS),
            "{job}"
        );
        app.assert_outcomes_true(&tenant.viewer, &id, &emulator.base_url())
            .await;
        for item in app.all_items(&tenant.viewer, &id).await {
            assert_eq!(item["status"], "succeeded", "{item}");
            let note = item["note"].as_str().unwrap_or_default();
            if note.contains("answer was lost") || note.contains("answer was not recorded") {
                lost_notes += 1;
            }
        }
    }
    // Each member written once by each job: a write sent again after its answer was lost
    // would show as a third write of the member.
    let stats = assert_assigned_and_removed_once(&emulator, MEMBERS).await;
    assert!(stats["lost_answers"].as_u64().unwrap() > 10, "{stats}");
    assert!(lost_notes > 0, "no item tells of a lost answer: {stats}");
    app.stop().await;
    emulator.shutdown().await;
}
on_both_backends!(lost_answers_are_read_not_written_again);

/// Writes the emulator has accepted so far.
async fn written_to(emulator: &EmulatorHandle) -> u64 {
    stats(emulator).await["successful_writes"].as_u64().unwrap()
}

/// Wait (up to 10 s) until no write reaches the emulator for a second, well before all
/// `members` are written, and check that none comes for 3 s more (`while`: what should hold
/// them back). Returns the writes made by then.
async fn writes_stop(emulator: &EmulatorHandle, members: u64, while_: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stopped = written_to(emulator).await;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = written_to(emulator).await;
        if now == stopped {
            break;
        }
        assert!(Instant::now() < deadline, "writes went on: {now}");
        stopped = now;
    }
    assert!(stopped < members, "the chunk wrote all {stopped} members");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        written_to(emulator).await,
        stopped,
        "writes went on {while_}"
    );
    stopped
}

/// Processes `names` record a heartbeat: they are live worker processes, which alone take
/// members, expansions and turns to write.
async fn live(db: &sea_orm::DatabaseConnection, names: &[&str]) {
    use licensor_core::jobs::processes;
    for name in names {
        let process = processes::ProcessId {
            name: (*name).into(),
            host: "host".into(),
            pid: 1,
        };
        processes::beat(db, &process).await.unwrap();
    }
}

/// Process `name` (whose leases are named `{name}/{step}`) beat once and was found silent
/// since: another process takes over its leases and turns, as its missed heartbeats would have
/// it. Returns what was freed.
async fn take_over_silent_process(
    db: &sea_orm::DatabaseConnection,
    name: &str,
) -> licensor_core::jobs::processes::Freed {
    use licensor_core::jobs::processes;
    live(db, &[name]).await;
    let row = processes::all(db)
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.id == name)
        .unwrap();
    processes::take_over(db, &row)
        .await
        .unwrap()
        .expect("nobody else took it over")
}

/// A tenant's turn to write (`jobs::writer`), as worker processes ask for it: taken by the first
/// process whose step for the tenant starts, refused to another while it lasts, renewed by its
/// holder, kept by it while its lanes wait for the write budget (longer than a turn: Graph's
/// window is 150 s), only looked at when not taken, and ended with its process — stopped
/// cleanly, or found dead by its missed heartbeats — so another takes it at once.
async fn a_tenants_turn_to_write_goes_to_one_process(backend: Backend) {
    use licensor_core::jobs::processes;
    use licensor_core::jobs::writer::{self, Turn};
    let Some(app) = TestApp::start_with(backend, Roles::API, "").await else {
        return;
    };
    let (a, b) = (
        app.tenant("contoso").await.id,
        app.tenant("fabrikam").await.id,
    );
    let db = &app.db;
    live(db, &["p1", "p2"]).await;
    let ask = |tenant, process: &'static str, throttled| async move {
        writer::ask(db, tenant, process, throttled).await.unwrap()
    };
    // Nobody wrote yet: nobody holds it, and looking takes nothing.
    assert_eq!(ask(a, "p1", false).await, Turn::Free);
    assert_eq!(ask(a, "p2", false).await, Turn::Free);
    // p1's step starts first: its turn; p2 leaves the tenant to it.
    assert_eq!(ask(a, "p1", true).await, Turn::Mine);
    assert_eq!(ask(a, "p2", true).await, Turn::Others("p1".into()));
    assert_eq!(ask(a, "p2", false).await, Turn::Others("p1".into()));
    // Renewed by its holder; looked at by it, still its own.
    assert_eq!(ask(a, "p1", true).await, Turn::Mine);
    assert_eq!(ask(a, "p1", false).await, Turn::Mine);
    // Turns are per tenant.
    assert_eq!(ask(b, "p2", true).await, Turn::Mine);
    assert_eq!(ask(b, "p1", true).await, Turn::Others("p2".into()));
    // b's turn as stored, and the test moving its end (its row is there: one row moved).
    let until = || async {
        use licensor_core::entities::tenant_writer;
        use sea_orm::EntityTrait;
        tenant_writer::Entity::find_by_id(b)
            .one(db)
            .await
            .unwrap()
            .unwrap()
            .until
    };
    let set_until = |at: chrono::DateTime<chrono::Utc>| async move {
        use licensor_core::entities::tenant_writer;
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
        let moved = tenant_writer::Entity::update_many()
            .col_expr(tenant_writer::Column::Until, Expr::value(at))
            .filter(tenant_writer::Column::TenantId.eq(b))
            .exec(db)
            .await
            .unwrap();
        assert_eq!(moved.rows_affected, 1);
        until().await
    };
    // A turn lapses TURN after its holder's last step (here the test moves its end back, as if
    // p2 had been idle that long): nobody holds it, and p1 takes it when pushed back.
    set_until(chrono::Utc::now() - chrono::Duration::seconds(1)).await;
    assert_eq!(ask(b, "p2", false).await, Turn::Free);
    assert_eq!(ask(b, "p1", false).await, Turn::Free);
    assert_eq!(ask(b, "p1", true).await, Turn::Mine);
    assert_eq!(ask(b, "p2", true).await, Turn::Others("p1".into()));
    // p1's lanes of b wait 150 s for the budget: its turn is kept past them, not TURN.
    let before = until().await;
    let p1 = writer::Turns::new("p1");
    p1.keep(db, b, Duration::from_secs(150)).await.unwrap();
    let kept = until().await;
    assert!(
        kept >= before + chrono::Duration::seconds(140),
        "kept until {kept}, was {before}"
    );
    // A turn p1 already made last past a wait by half a TURN or more is not kept again (no
    // statement: the test moves the stored end to see that); a longer wait keeps it again.
    let marked = set_until(chrono::Utc::now() + chrono::Duration::seconds(40)).await;
    p1.keep(db, b, Duration::from_secs(100)).await.unwrap();
    assert_eq!(
        until().await,
        marked,
        "a turn kept long enough is not kept again"
    );
    p1.keep(db, b, Duration::from_secs(170)).await.unwrap();
    assert!(
        until().await >= marked + chrono::Duration::seconds(150),
        "a longer wait keeps the turn again"
    );
    let kept = set_until(kept).await;
    // Only the holder's turn is kept.
    writer::Turns::new("p2")
        .keep(db, b, Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(until().await, kept);
    // p1 stops cleanly: its turns end, p2 takes the tenant at once.
    processes::leave(db, "p1").await.unwrap();
    assert_eq!(ask(a, "p2", false).await, Turn::Free);
    assert_eq!(ask(a, "p2", true).await, Turn::Mine);
    assert_eq!(ask(a, "p1", true).await, Turn::Others("p2".into()));
    // p2 found dead (its heartbeat stopped): taken over with its leases, its turns end too.
    // p1 stopped: it takes nothing until it starts again (its heartbeat is recorded).
    take_over_silent_process(db, "p2").await;
    assert_eq!(ask(a, "p2", false).await, Turn::Free);
    assert_eq!(ask(a, "p1", true).await, Turn::Gone);
    live(db, &["p1"]).await;
    assert_eq!(ask(a, "p1", true).await, Turn::Mine);
    assert_eq!(ask(b, "p1", true).await, Turn::Mine);
    app.stop().await;
}
on_both_backends!(a_tenants_turn_to_write_goes_to_one_process);

/// A lane that waits for its tenant's write budget waits in the process holding the tenant's
/// turn to write, not on the queue (the queue gave it to whichever process polled first, and
/// another process only sent it back). So a process that stops, or is found dead by its missed
/// heartbeats, frees the running jobs of the tenants whose turn it held with its leases: they
/// are queued again at once, not after `jobs.stall_secs` by the reconciler.
async fn a_writers_running_jobs_are_queued_again_when_it_goes(backend: Backend) {
    use licensor_core::jobs::processes;
    use licensor_core::jobs::writer::{self, Turn};
    let Some((emulator, app, job, _group)) = started_assign(backend).await else {
        return;
    };
    let db = &app.db;
    live(db, &["p1", "p2"]).await;
    let ask = |process: &'static str| async move {
        writer::ask(db, job.tenant_id, process, true).await.unwrap()
    };
    // p1 writes to the tenant and holds none of the job's members: its lanes wait for the
    // budget. It stops cleanly.
    assert_eq!(ask("p1").await, Turn::Mine);
    let freed = processes::leave(db, "p1").await.unwrap();
    assert_eq!(freed.jobs, vec![(job.tenant_id, job.id)]);
    assert_eq!(freed.members, 0);
    // p2 takes the turn, and is found dead.
    assert_eq!(ask("p2").await, Turn::Mine);
    let freed = take_over_silent_process(db, "p2").await;
    assert_eq!(freed.jobs, vec![(job.tenant_id, job.id)]);
    // p1 comes back, takes the turn, and is found dead only once its turn has run out (it
    // waited long for the budget, or its takeover came late): nobody took the tenant since, so
    // the lanes that waited in it are still its, and its running job is queued again all the
    // same.
    live(db, &["p1"]).await;
    assert_eq!(ask("p1").await, Turn::Mine);
    use sea_orm::EntityTrait;
    licensor_core::entities::tenant_writer::Entity::update_many()
        .col_expr(
            licensor_core::entities::tenant_writer::Column::Until,
            sea_orm::sea_query::Expr::value(chrono::Utc::now() - chrono::Duration::seconds(120)),
        )
        .exec(db)
        .await
        .unwrap();
    let freed = take_over_silent_process(db, "p1").await;
    assert_eq!(freed.jobs, vec![(job.tenant_id, job.id)]);
    // A process that held no turn and no lease frees nothing.
    let freed = processes::leave(db, "p3").await.unwrap();
    assert!(freed.jobs.is_empty(), "{freed:?}");
    app.stop().await;
    emulator.shutdown().await;
}
on_both_backends!(a_writers_running_jobs_are_queued_again_when_it_goes);

/// A process that has left — stopped cleanly, its row removed, though a step of its may still
/// run until it exits (its grace period was over) — or that was taken for dead takes nothing
/// more: no turn to write, no members, no expansion, until its heartbeat is recorded again.
/// Before, a chunk of a stopping worker asked for the tenant's turn after the process had left,
/// took it again for `jobs::writer::TURN` (30 s) and kept every other process from the tenant with nobody
/// writing: `faults::sigterm_with_short_grace_releases_members_postgres_redis` saw the job end
/// 47 s after the stop instead of about 15.
async fn a_process_that_left_takes_nothing_more(backend: Backend) {
    use licensor_core::domain::ItemStatus;
    use licensor_core::jobs::expand;
    use licensor_core::jobs::lease::{self, Pick};
    use licensor_core::jobs::processes;
    use licensor_core::jobs::writer::{self, Turn};
    let Some((emulator, app, job, group)) = started_assign(backend).await else {
        return;
    };
    let (db, job_id, tenant) = (&app.db, job.id, job.tenant_id);
    live(db, &["p1", "p2"]).await;
    let until = chrono::Utc::now() + chrono::Duration::seconds(60);
    let ask = |process: &'static str| async move {
        writer::ask(db, tenant, process, true).await.unwrap()
    };
    let claim = |owner: &'static str| async move {
        lease::claim(db, job_id, owner, until, 10, Pick::All)
            .await
            .unwrap()
            .len()
    };
    let claim_expansion = |owner: &'static str| async move {
        expand::claim_expansion(db, job_id, owner, until)
            .await
            .unwrap()
    };
    // p1 writes to the tenant and reads the job's groups; it stops.
    assert_eq!(ask("p1").await, Turn::Mine);
    assert!(claim_expansion("p1/run").await);
    let freed = processes::leave(db, "p1").await.unwrap();
    assert_eq!(freed.expansions, 1);
    // A step of p1 still running takes nothing: the turn, the expansion.
    assert_eq!(ask("p1").await, Turn::Gone);
    assert_eq!(
        writer::ask(db, tenant, "p2", false).await.unwrap(),
        Turn::Free,
        "p1 took no turn again"
    );
    assert!(!claim_expansion("p1/run").await);
    // p2 reads the groups to the end; p1 takes no member of them.
    assert!(claim_expansion("p2/run").await);
    let members = (1..=3).map(|n| member_of(&group, n)).collect();
    let stored = expand::insert_items(
        db,
        job_id,
        job.runs,
        "p2/run",
        members,
        ItemStatus::Pending,
        None,
    )
    .await
    .unwrap();
    assert_eq!(stored, Some(3));
    assert!(expand::mark_expanded(db, job_id, "p2/run").await.unwrap());
    assert_eq!(claim("p1/work").await, 0);
    // p2 takes one; it is taken for dead: it takes nothing more either.
    assert_eq!(ask("p2").await, Turn::Mine);
    let one = lease::claim(db, job_id, "p2/work", until, 1, Pick::All)
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    let freed = take_over_silent_process(db, "p2").await;
    assert_eq!(freed.members, 1);
    assert_eq!(ask("p2").await, Turn::Gone);
    assert_eq!(claim("p2/work").await, 0);
    // Once its heartbeat is recorded again, p2 is a live process: it takes the turn and the
    // three members (one of them taken over from its old step).
    live(db, &["p2"]).await;
    assert_eq!(ask("p2").await, Turn::Mine);
    assert_eq!(claim("p2/again").await, 3);
    app.stop().await;
    emulator.shutdown().await;
}
on_both_backends!(a_process_that_left_takes_nothing_more);

/// A chunk that is being written when its process loses the tenant's turn to write (taken for
/// dead by its missed heartbeats while it wrote) and another process takes it stops part-way
/// (within the step's turn watch, about a second): the writes it has not sent are not
/// sent, its members go back to the job, and nothing more is written to the tenant while the
/// other process holds the turn. Before, the chunk went on writing into the budget the writer
/// scheduled, for as long as it lasted (up to `jobs.chunk_size` members): one tenant of
/// `licensor-bench --scenario msp` on PostgreSQL + Redis got 1,600–2,000 429s that way. Once the
/// turn ends, the job finishes with every member written once, and each member's outcome is
/// the directory's state.
async fn a_chunk_stops_when_another_process_takes_the_turn(backend: Backend) {
    use licensor_core::jobs::writer::{self, Turn};
    const MEMBERS: u64 = 400;
    let emulator = graph_emulator::spawn(EmulatorConfig {
        scenario: Some(Scenario::simple(34, MEMBERS as usize, 800)),
        faults: Faults {
            latency_ms: 100,
            ..Faults::unthrottled()
        },
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    // One lane taking every member in one chunk, one request at a time: the chunk is written
    // for several seconds.
    let Some(app) = TestApp::start_with(
        backend,
        Roles::ALL,
        "[jobs]\nchunk_size = 400\nlanes_per_job = 1\n[directory]\nmax_in_flight = 1\n",
    )
    .await
    else {
        return;
    };
    let (tenant, job_id) = assign_all_users(&app, &emulator).await;
    // Another live process: it beats for as long as the test runs, so the app's worker never
    // takes it for dead.
    let elsewhere = {
        let db = app.db.clone();
        licensor_core::tasks::AbortOnDrop(tokio::spawn(async move {
            loop {
                live(&db, &["elsewhere"]).await;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }))
    };
    let written = || written_to(&emulator);
    let deadline = Instant::now() + Duration::from_secs(60);
    while written().await == 0 {
        assert!(Instant::now() < deadline, "no write within 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The writing process holds the tenant's turn: nobody else may take it.
    assert!(matches!(
        writer::ask(&app.db, tenant.id, "elsewhere", true)
            .await
            .unwrap(),
        Turn::Others(_)
    ));
    // Its turn ends (as when its missed heartbeats had it taken for dead) and another process
    // takes the turn.
    {
        use licensor_core::entities::tenant_writer;
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
        tenant_writer::Entity::delete_many()
            .filter(tenant_writer::Column::TenantId.eq(tenant.id))
            .exec(&app.db)
            .await
            .unwrap();
    }
    assert_eq!(
        writer::ask(&app.db, tenant.id, "elsewhere", true)
            .await
            .unwrap(),
        Turn::Mine
    );
    // The chunk stops within its turn watch (about a second), plus the one request in flight:
    // no write for a second, well before all are written (about 2 s of writes at the least).
    let stopped = writes_stop(&emulator, MEMBERS, "while another process held the turn").await;
    // Stopped by the turn, not taken for a cancel: the written members are done, the rest
    // pending, none skipped.
    let job = app
        .get_json(&format!("/v1/jobs/{job_id}"), &tenant.viewer)
        .await;
    assert_eq!(job["status"], "running", "{job}");
    assert_eq!(
        job["progress"]["succeeded"].as_u64(),
        Some(stopped),
        "{job}"
    );
    assert_eq!(job["progress"]["failed"].as_u64(), Some(0), "{job}");
    assert_eq!(job["progress"]["skipped"].as_u64(), Some(0), "{job}");
    let metrics = app.text("/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("licensor_chunks_left_to_writer_total") && !l.ends_with(" 0")),
        "{metrics}"
    );
    // The other process stops: its turn ends, and this one writes the rest.
    drop(elsewhere);
    let freed = licensor_core::jobs::processes::leave(&app.db, "elsewhere")
        .await
        .unwrap();
    assert_eq!(freed.jobs.len(), 1, "{freed:?}");
    let job = app.wait_for_job(&tenant.admin, &job_id, 120).await;
    assert_all_assigned_once(&emulator, &job, MEMBERS).await;
    app.assert_outcomes_true(&tenant.viewer, &job_id, &emulator.base_url())
        .await;
    app.stop().await;
    emulator.shutdown().await;
}
on_both_backends!(a_chunk_stops_when_another_process_takes_the_turn);

/// A worker process taken for dead while it writes a chunk (its heartbeats were late: a stall,
/// not a crash) stops the chunk within its turn watch and takes nothing more — no turn, no
/// member — while its row is gone, though it still polls the queue: its lanes go back to the
/// queue. Once its heartbeat is recorded again it is a live process and finishes the job, every
/// member written once and each outcome the directory's state.
async fn a_worker_taken_for_dead_writes_nothing_until_it_beats_again(backend: Backend) {
    use licensor_core::jobs::processes;
    const MEMBERS: u64 = 1_000;
    let emulator = graph_emulator::spawn(EmulatorConfig {
        scenario: Some(Scenario::simple(35, MEMBERS as usize, 1_200)),
        faults: Faults {
            latency_ms: 100,
            ..Faults::unthrottled()
        },
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    // One lane, one request at a time: the chunk is written for about 5 s. Heartbeats
    // every 60 s: the process does not beat again by itself while the test looks.
    let Some(app) = TestApp::start_with(
        backend,
        Roles::ALL,
        "[worker]\nheartbeat_secs = 60\nmissed_heartbeats = 3\nshutdown_grace_secs = 5\n\
         [jobs]\nchunk_size = 1000\nlanes_per_job = 1\n[directory]\nmax_in_flight = 1\n",
    )
    .await
    else {
        return;
    };
    let (tenant, job_id) = assign_all_users(&app, &emulator).await;
    let written = || written_to(&emulator);
    let deadline = Instant::now() + Duration::from_secs(60);
    while written().await == 0 {
        assert!(Instant::now() < deadline, "no write within 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A peer finds the process silent and takes it over: its row, leases and turns go.
    let rows = processes::all(&app.db).await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let me = rows.into_iter().next().unwrap();
    let freed = processes::take_over(&app.db, &me)
        .await
        .unwrap()
        .expect("taken over");
    // (The chunk holds the members of the step learning the tenant's budget: at most ten
    // `$batch`es, 200 — or, were that step done, the 800 left.)
    assert!(freed.members >= 200, "{freed:?}");
    // The chunk stops within its turn watch (about a second), and nothing more is written while
    // the process has no row, however often its lanes come back.
    let stopped = writes_stop(&emulator, MEMBERS, "while the process had no row").await;
    let job = app
        .get_json(&format!("/v1/jobs/{job_id}"), &tenant.viewer)
        .await;
    assert_eq!(job["status"], "running", "{job}");
    assert_eq!(
        job["progress"]["succeeded"].as_u64(),
        Some(stopped),
        "{job}"
    );
    // Its heartbeat is recorded again: it goes on and finishes the job.
    let process = processes::ProcessId {
        name: me.id.clone(),
        host: me.host.clone(),
        pid: me.pid as u32,
    };
    processes::beat(&app.db, &process).await.unwrap();
    let job = app.wait_for_job(&tenant.admin, &job_id, 120).await;
    assert_all_assigned_once(&emulator, &job, MEMBERS).await;
    app.assert_outcomes_true(&tenant.viewer, &job_id, &emulator.base_url())
        .await;
    app.stop().await;
    emulator.shutdown().await;
}
on_both_backends!(a_worker_taken_for_dead_writes_nothing_until_it_beats_again);

/// A process's heartbeats come `worker.heartbeat_secs` apart from its very first, the one it
/// records at start: a process taken for dead just after it started stays gone until its next
/// heartbeat is due, rather than being brought back a second later by a beat out of schedule.
async fn a_process_taken_for_dead_at_start_stays_gone_until_its_heartbeat_is_due(backend: Backend) {
    use licensor_core::jobs::processes;
    let Some(app) = TestApp::start_with(
        backend,
        Roles::ALL,
        "[worker]\nheartbeat_secs = 60\nmissed_heartbeats = 3\n",
    )
    .await
    else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let me = loop {
        if let Some(row) = processes::all(&app.db).await.unwrap().into_iter().next() {
            break row;
        }
        assert!(Instant::now() < deadline, "no heartbeat within 30 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    processes::take_over(&app.db, &me)
        .await
        .unwrap()
        .expect("taken over");
    // The heartbeat task looks every second; its next beat is due a minute after the first.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rows = processes::all(&app.db).await.unwrap();
    assert!(
        rows.is_empty(),
        "the process beat again out of schedule: {rows:?}"
    );
    app.stop().await;
}
on_both_backends!(a_process_taken_for_dead_at_start_stays_gone_until_its_heartbeat_is_due);

/// `jobs` assign jobs of the "All Users" group of a `members`-member directory, submitted
/// through the API alone (no worker takes them): the emulator, the app, the tenant, the
/// group's id and the jobs' ids. `None` when the backend is not configured.
async fn submitted_assigns(
    backend: Backend,
    members: usize,
    jobs: usize,
) -> Option<(
    EmulatorHandle,
    TestApp,
    common::TestTenant,
    String,
    Vec<uuid::Uuid>,
)> {
    let emulator = slow_directory(members).await;
    let app = TestApp::start_with(backend, Roles::API, "").await?;
    let t = app.tenant("contoso").await;
    app.connect_directory(t.id, &emulator).await;
    let group = app.group_id(&t.admin, "All Users").await;
    let mut ids = Vec::new();
    for _ in 0..jobs {
        let submitted = app
            .post_json(
                "/v1/jobs",
                &t.admin,
                &json!({"kind": "assign", "groups": [group], "add_licenses": [{"sku_id": ENTERPRISEPACK_SKU_ID}]}),
            )
            .await;
        ids.push(submitted["id"].as_str().unwrap().parse().unwrap());
    }
    Some((emulator, app, t, group, ids))
}

/// An assign job of the "All Users" group of a 10-member directory, submitted through the API
/// alone (no worker takes it) and moved to running, for tests that play its steps by hand:
/// the emulator, the app, the job and the group's id. `None` when the backend is not configured.
async fn started_assign(
    backend: Backend,
) -> Option<(
    EmulatorHandle,
    TestApp,
    licensor_core::entities::job::Model,
    String,
)> {
    let (emulator, app, t, group, ids) = submitted_assigns(backend, 10, 1).await?;
    let job = licensor_core::jobs::expand::start(&app.db, t.id, ids[0])
        .await
        .unwrap()
        .unwrap();
    Some((emulator, app, job, group))
}

/// `members` stored as pending items of `job`'s current run by expansion step `holder`, with
/// `mark` ([`licensor_core::jobs::expand::insert_items`]): how many were new, or `None` when
/// nothing was stored.
async fn store_page(
    db: &sea_orm::DatabaseConnection,
    job: &licensor_core::entities::job::Model,
    holder: &str,
    members: Vec<licensor_core::jobs::expand::NewItem>,
    mark: &licensor_core::jobs::expand::PageMark,
) -> Option<u64> {
    licensor_core::jobs::expand::insert_items(
        db,
        job.id,
        job.runs,
        holder,
        members,
        licensor_core::domain::ItemStatus::Pending,
        Some(mark),
    )
    .await
    .unwrap()
}

/// Member `n` of `group`, as an expansion stores it.
fn member_of(group: &str, n: usize) -> licensor_core::jobs::expand::NewItem {
    licensor_core::jobs::expand::NewItem {
        user_id: format!("00000000-0000-0000-0000-{n:012}"),
        user_principal_name: None,
        display_name: None,
        group_id: group.to_owned(),
        usage_location: None,
        licenses: None,
        prediction: None,
    }
}

/// A job's `Run` starts it and its run in one round trip: the run's row is marked running only
/// by the call that started the job. Starting it again (a `Run` delivered twice) changes
/// neither, and a job cancelled while queued is not started, nor is its run.
async fn a_job_and_its_run_start_together_once(backend: Backend) {
    use licensor_core::domain::JobStatus;
    use licensor_core::entities::job_run;
    use licensor_core::jobs::expand;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let Some((emulator, app, t, _, ids)) = submitted_assigns(backend, 4, 2).await else {
        return;
    };
    let run_of = |job_id: uuid::Uuid| {
        let db = app.db.clone();
        async move {
            job_run::Entity::find()
                .filter(job_run::Column::JobId.eq(job_id))
                .one(&db)
                .await
                .unwrap()
                .unwrap()
        }
    };
    let (job_id, cancelled) = (ids[0], ids[1]);
    let queued = run_of(job_id).await;
    let job = expand::start(&app.db, t.id, job_id)
        .await
        .unwrap()
        .expect("a queued job starts");
    let started_at = job.started_at.expect("a started job has its start time");
    let run = run_of(job_id).await;
    assert_eq!(run.status, JobStatus::Running, "{run:?}");
    assert_eq!(run.started_at, started_at, "the run starts with its job");
    assert!(run.started_at >= queued.started_at, "{run:?} {queued:?}");
    // Another tenant's id starts nothing.
    let other = app.tenant("fabrikam").await;
    assert!(
        expand::start(&app.db, other.id, job_id)
            .await
            .unwrap()
            .is_none()
    );
    // Started again: the job is running as it was, its run unchanged.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let again = expand::start(&app.db, t.id, job_id)
        .await
        .unwrap()
        .expect("a running job is still running");
    assert_eq!(again.started_at, Some(started_at));
    assert_eq!(run_of(job_id).await, run);
    // A job cancelled while queued stays cancelled, and its run with it.
    let resp = app
        .post_json(
            &format!("/v1/jobs/{cancelled}/cancel"),
            &t.admin,
            &json!({}),
        )
        .await;
    assert_eq!(resp["status"], "cancelled", "{resp}");
    let before = run_of(cancelled).await;
    assert!(
        expand::start(&app.db, t.id, cancelled)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(run_of(cancelled).await, before);
    assert_ne!(before.status, JobStatus::Running, "{before:?}");
    app.stop().await;
    emulator.shutdown().await;
}
on_both_backends!(a_job_and_its_run_start_together_once);

/// A job whose members are not all read yet says `expanding` while it is queued, running or
/// paused (a canary pauses it mid-read, and it reads on once resumed), so its total is never
/// taken for the whole; once it ended (cancelled) it no longer does. A paused job said
/// `expanding: false` with 2,997 of All Staff's 5,000 members read, and `jobs watch` printed
/// "Paused: 11 of 2997 done".
async fn a_job_not_fully_read_says_expanding_until_it_ends(backend: Backend) {
    use licensor_core::domain::JobStatus;
    use licensor_core::entities::job;
    use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityTrait};
    let Some((emulator, app, t, _, ids)) = submitted_assigns(backend, 4, 1).await else {
        return;
    };
    let id = ids[0];
    let set_status = |status: JobStatus| {
        let db = app.db.clone();
        async move {
            let row = job::Entity::find_by_id(id).one(&db).await.unwrap().unwrap();
            assert!(row.expanded_at.is_none(), "no member read yet: {row:?}");
            let mut row: job::ActiveModel = row.into();
            row.status = Set(status);
            row.update(&db).await.unwrap();
        }
    };
    let expanding = |status: &'static str| {
        let app = &app;
        let admin = t.admin.clone();
        async move {
            let job = app.get_json(&format!("/v1/jobs/{id}"), &admin).await;
            assert_eq!(job["status"], status, "{job}");
            job["expanding"].as_bool().unwrap()
        }
    };
    assert!(expanding("queued").await);
    set_status(JobStatus::Running).await;
    assert!(expanding("running").await);
    set_status(JobStatus::Paused).await;
    assert!(
        expanding("paused").await,
        "a paused job reads on once resumed"
    );
    set_status(JobStatus::Cancelled).await;
    assert!(
        !expanding("cancelled").await,
        "a cancelled job reads no more"
    );
    app.stop().await;
    emulator.shutdown().await;
}
on_both_backends!(a_job_not_fully_read_says_expanding_until_it_ends);

/// The chunks a process is writing are watched together (`licensor_workers::watch`): a chunk
/// is stopped once its own job is cancelled, not its neighbours of other jobs, and every chunk
/// of a tenant is stopped once another process holds the tenant's turn to write.
async fn chunks_being_written_stop_with_their_job_or_turn(backend: Backend) {
    use licensor_core::jobs::writer::{self, Turn, Turns};
    use licensor_workers::watch::Watched;
    use std::sync::atomic::Ordering;
    let Some((emulator, app, t, _, ids)) = submitted_assigns(backend, 4, 2).await else {
        return;
    };
    let (db, a, b) = (&app.db, ids[0], ids[1]);
    for id in [a, b] {
        licensor_core::jobs::expand::start(db, t.id, id)
            .await
            .unwrap()
            .unwrap();
    }
    live(db, &["p1", "p2"]).await;
    let turns = Turns::new("p1");
    assert_eq!(turns.confirm(db, t.id).await.unwrap(), Turn::Mine);
    let watched = Watched::new(db.clone(), turns);
    let (chunk_a, chunk_b) = (watched.watch(t.id, a), watched.watch(t.id, b));
    let raised = |w: &licensor_workers::watch::Watch| w.stop.load(Ordering::Acquire);
    // Both running, the turn this process's: nothing is stopped, past a turn watch.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!raised(&chunk_a) && !raised(&chunk_b));
    let cancelled = app
        .post_json(&format!("/v1/jobs/{a}/cancel"), &t.admin, &json!({}))
        .await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !raised(&chunk_a) {
        assert!(
            Instant::now() < deadline,
            "a cancelled job's chunk was not stopped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!raised(&chunk_b), "another job's chunk was stopped with it");
    // Another process takes the tenant's turn once this one's has ended.
    {
        use licensor_core::entities::tenant_writer;
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
        tenant_writer::Entity::delete_many()
            .filter(tenant_writer::Column::TenantId.eq(t.id))
            .exec(db)
            .await
            .unwrap();
    }
    assert_eq!(writer::ask(db, t.id, "p2", true).await.unwrap(), Turn::Mine);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !raised(&chunk_b) {
        assert!(
            Instant::now() < deadline,
            "a chunk went on after its turn was taken"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Once nothing is watched the watch's reads stop; a chunk watched after that starts them
    // again, and its job's status decides.
    drop((chunk_a, chunk_b));
    tokio::time::sleep(Duration::from_millis(800)).await;
    let again = watched.watch(t.id, a);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !raised(&again) {
        assert!(
            Instant::now() < deadline,
            "a new chunk of a cancelled job was not stopped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(again);
    app.stop().await;
    emulator.shutdown().await;
}
on_both_backends!(chunks_being_written_stop_with_their_job_or_turn);

/// A step's directory client comes from the tenant's row read at most
/// `DirectoryClients::RECHECK` before: within it no read is made and the client is the one
/// already made; after it, changed directory settings give the tenant a new client.
async fn a_tenants_client_is_checked_against_its_row_once_a_second(backend: Backend) {
    use licensor_core::config::DirectoryTuning;
    use licensor_core::directory::DirectoryClients;
    const RECHECK: Duration = DirectoryClients::RECHECK;
    let emulator = slow_directory(2).await;
    let other = slow_directory(2).await;
    let Some(app) = TestApp::start_with(backend, Roles::API, "").await else {
        return;
    };
    let t = app.tenant("contoso").await;
    app.connect_directory(t.id, &emulator).await;
    let clients = DirectoryClients::new(DirectoryTuning::default(), app.secrets.clone());
    let client = || async {
        clients
            .for_tenant_id(&app.db, t.id)
            .await
            .unwrap()
            .expect("a connected tenant has a client")
    };
    let first = client().await;
    let checked = Instant::now();
    // The tenant is pointed at another directory: within the recheck the client stays (on a
    // machine too busy to change the tenant within it, there is nothing to see).
    app.connect_directory(t.id, &other).await;
    let soon = client().await;
    if checked.elapsed() < RECHECK - Duration::from_millis(200) {
        assert!(
            soon.same_client(&first),
            "the row was read again within the recheck"
        );
    }
    tokio::time::sleep(RECHECK + Duration::from_millis(100)).await;
    let later = client().await;
    assert!(
        !later.same_client(&first),
        "changed settings were not read after the recheck"
    );
    assert!(later.same_client(&client().await));
    // A tenant that is gone is an error once its row is read.
    let gone = clients.for_tenant_id(&app.db, uuid::Uuid::now_v7()).await;
    assert!(gone.is_err());
    app.stop().await;
    emulator.shutdown().await;
    other.shutdown().await;
}
on_both_backends!(a_tenants_client_is_checked_against_its_row_once_a_second);

/// An expansion's last page marks the job expanded in the page's own transaction, with the
/// facts the step read (stored with the first page its step stores), and lets the expansion go;
/// a step that no longer holds the expansion marks nothing and stores nothing.
async fn the_last_page_marks_the_job_expanded(backend: Backend) {
    use licensor_core::domain::JobStatus;
    use licensor_core::entities::job;
    use licensor_core::jobs::expand::{self, ExpandPosition, PageMark};
    use sea_orm::EntityTrait;
    let Some((emulator, app, started, group)) = started_assign(backend).await else {
        return;
    };
    let (db, job_id) = (&app.db, started.id);
    live(db, &["p1", "p2"]).await;
    let until = chrono::Utc::now() + chrono::Duration::seconds(60);
    let load = || async {
        job::Entity::find_by_id(job_id)
            .one(db)
            .await
            .unwrap()
            .unwrap()
    };
    assert!(
        expand::claim_expansion(db, job_id, "p1/run", until)
            .await
            .unwrap()
    );
    let status_and_pending = |id| licensor_core::jobs::finish::status_and_pending(db, id);
    // Members `from..=to` stored as `holder`'s page with `mark`.
    let store = |holder: &'static str, from: usize, to: usize, mark: PageMark| {
        let members = (from..=to).map(|n| member_of(&group, n)).collect();
        let job = &started;
        async move { store_page(db, job, holder, members, &mark).await }
    };
    assert_eq!(
        status_and_pending(job_id).await.unwrap(),
        Some((JobStatus::Running, false)),
        "no member stored yet"
    );
    assert_eq!(
        status_and_pending(uuid::Uuid::now_v7()).await.unwrap(),
        None
    );
    let first_facts = json!({"groups": [{"id": group, "display_name": "All Users"}], "skus": []});
    // The first page, with the facts.
    let first = PageMark {
        position: ExpandPosition::after_page(0, Some("next".into())),
        lease_until: until,
        facts: Some(first_facts.clone()),
        ..PageMark::default()
    };
    let stored = store("p1/run", 1, 3, first).await;
    assert_eq!(stored, Some(3));
    assert_eq!(
        status_and_pending(job_id).await.unwrap(),
        Some((JobStatus::Running, true))
    );
    let job = load().await;
    assert_eq!(
        job.result,
        Some(first_facts.clone()),
        "the facts go with the first page"
    );
    assert!(job.expanded_at.is_none());
    assert_eq!(job.expand_owner.as_deref(), Some("p1/run"));
    // A step that does not hold the expansion stores nothing with its last page (here with
    // facts of its own, as a step whose only page is its last stores them).
    let facts = json!({"groups": [{"id": group, "display_name": "Everyone"}], "skus": []});
    let last = PageMark {
        position: ExpandPosition::after_page(0, None),
        lease_until: until,
        facts: Some(facts.clone()),
        last: true,
        ..PageMark::default()
    };
    let refused = store("p2/run", 4, 5, last.clone()).await;
    assert_eq!(refused, None);
    let job = load().await;
    assert!(job.expanded_at.is_none() && job.total == 3, "{job:?}");
    assert_eq!(job.result, Some(first_facts));
    // The holder's last page: stored, marked expanded, the expansion let go.
    let stored = store("p1/run", 4, 5, last).await;
    assert_eq!(stored, Some(2));
    let job = load().await;
    assert!(job.expanded_at.is_some(), "{job:?}");
    assert_eq!((job.expand_owner, job.expand_until), (None, None));
    assert_eq!(job.total, 5);
    assert_eq!(
        job.result,
        Some(facts),
        "the last page's facts are stored with it"
    );
    assert_eq!(
        ExpandPosition::of(&load().await),
        ExpandPosition::after_page(0, None)
    );
    // Marked once: the step that marked it holds the expansion no more.
    assert!(!expand::mark_expanded(db, job_id, "p1/run").await.unwrap());
    app.stop().await;
    emulator.shutdown().await;
}
on_both_backends!(the_last_page_marks_the_job_expanded);

/// A step whose process was taken for dead (its heartbeats stopped for a while: a stall, not a
/// crash) while it read a job's groups holds nothing from then on — before a live step claims
/// the expansion, while it reads, and after the live step's own lease ends: its pages are
/// refused, its renewals and its "all read" too, and the stored position stays the live
/// step's. Before, such a step went on storing pages and moving the position, reading the
/// groups side by side with its successor (a page of members was read 4 times in
/// `workers_killed_during_slow_expansion_postgres_redis`), and its renewals took the expansion
/// back.
async fn an_expansion_taken_over_stores_nothing_more_from_its_old_step(backend: Backend) {
    use licensor_core::entities::job;
    use licensor_core::jobs::expand::{self, ExpandPosition, NewItem, PageMark};
    use sea_orm::EntityTrait;
    let Some((emulator, app, job, group)) = started_assign(backend).await else {
        return;
    };
    let (db, job_id) = (&app.db, job.id);
    live(db, &["p1", "p2", "p3"]).await;
    let until = chrono::Utc::now() + chrono::Duration::seconds(60);
    let member = |n: usize| member_of(&group, n);
    let store = |holder: &'static str, items: Vec<NewItem>, next: &'static str| {
        let job = &job;
        async move {
            let mark = PageMark {
                position: ExpandPosition::after_page(0, Some(next.to_owned())),
                lease_until: until,
                ..PageMark::default()
            };
            store_page(db, job, holder, items, &mark).await
        }
    };
    let holds = |step: &'static str| async move {
        expand::holds_expansion(db, job_id, step).await.unwrap()
    };
    let renews = |step: &'static str| async move {
        expand::renew_expansion(db, job_id, step, until)
            .await
            .unwrap()
    };
    let stored = || async {
        job::Entity::find_by_id(job_id)
            .one(db)
            .await
            .unwrap()
            .unwrap()
    };
    // p1's step reads the groups, and stores its first page.
    assert!(
        expand::claim_expansion(db, job_id, "p1/run", until)
            .await
            .unwrap()
    );
    assert_eq!(store("p1/run", vec![member(1)], "page-2").await, Some(1));
    assert!(renews("p1/run").await);
    // p1's heartbeats stop for longer than the takeover delay: another process takes it over.
    let freed = take_over_silent_process(db, "p1").await;
    assert_eq!(freed.expansions, 1);
    // Before any live step has claimed the expansion, p1 wakes up with page 2 read: refused,
    // whether it brings members or an empty page, and it cannot renew its hold either.
    assert!(!holds("p1/run").await);
    assert_eq!(store("p1/run", vec![member(2)], "page-3").await, None);
    assert_eq!(store("p1/run", vec![], "page-3").await, None);
    assert!(!renews("p1/run").await);
    // A live step (p2's) claims the expansion and reads on from page 2.
    assert!(
        expand::claim_expansion(db, job_id, "p2/run", until)
            .await
            .unwrap()
    );
    assert!(holds("p2/run").await);
    assert_eq!(store("p1/run", vec![member(2)], "page-3").await, None);
    assert!(!renews("p1/run").await);
    assert!(!expand::mark_expanded(db, job_id, "p1/run").await.unwrap());
    let now = stored().await;
    assert_eq!(now.total, 1, "p1's late pages stored no member");
    assert_eq!(now.expand_owner.as_deref(), Some("p2/run"));
    assert!(now.expanded_at.is_none());
    assert_eq!(
        ExpandPosition::of(&now),
        ExpandPosition::after_page(0, Some("page-2".into())),
        "the position is still the one p2 reads on from"
    );
    // p2 stores page 2 and goes on.
    assert_eq!(store("p2/run", vec![member(2)], "page-3").await, Some(1));
    assert!(renews("p2/run").await);
    // p2's process is taken for dead too: p1 still holds nothing.
    take_over_silent_process(db, "p2").await;
    assert!(!renews("p1/run").await);
    assert_eq!(store("p1/run", vec![member(3)], "page-2").await, None);
    let now = stored().await;
    assert_eq!(now.total, 2);
    assert_eq!(
        ExpandPosition::of(&now),
        ExpandPosition::after_page(0, Some("page-3".into()))
    );
    // A third step claims it and reads to the end.
    assert!(
        expand::claim_expansion(db, job_id, "p3/run", until)
            .await
            .unwrap()
    );
    assert!(expand::mark_expanded(db, job_id, "p3/run").await.unwrap());
    assert!(stored().await.expanded_at.is_some());
    app.stop().await;
    emulator.shutdown().await;
}
on_both_backends!(an_expansion_taken_over_stores_nothing_more_from_its_old_step);

/// Members held by a step whose process was taken for dead stay with the live step that took
/// them over: the old step's lease renewal leaves them alone, and its "try again later" for
/// them does not free members the live step is writing now (a third step could have claimed
/// and written them a second time).
async fn members_taken_over_stay_with_the_live_step(backend: Backend) {
    use licensor_core::domain::ItemStatus;
    use licensor_core::entities::job_item;
    use licensor_core::jobs::expand;
    use licensor_core::jobs::lease::{self, Pick};
    use licensor_core::jobs::outcome::{self, Outcome};
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let Some((emulator, app, job, group)) = started_assign(backend).await else {
        return;
    };
    let (db, job_id) = (&app.db, job.id);
    live(db, &["x", "p1", "p2", "p3"]).await;
    let until = chrono::Utc::now() + chrono::Duration::seconds(60);
    assert!(
        expand::claim_expansion(db, job_id, "x/run", until)
            .await
            .unwrap()
    );
    let members = (1..=2).map(|n| member_of(&group, n)).collect();
    let stored = expand::insert_items(
        db,
        job_id,
        job.runs,
        "x/run",
        members,
        ItemStatus::Pending,
        None,
    )
    .await
    .unwrap();
    assert_eq!(stored, Some(2));
    assert!(expand::mark_expanded(db, job_id, "x/run").await.unwrap());
    let items = || async {
        job_item::Entity::find()
            .filter(job_item::Column::JobId.eq(job_id))
            .all(db)
            .await
            .unwrap()
    };
    // p1 holds both members; its process is taken for dead.
    let claimed = lease::claim(db, job_id, "p1/work", until, 10, Pick::All)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    take_over_silent_process(db, "p1").await;
    // p2 takes both over; p1's renewal leaves them with p2.
    let taken = lease::claim(db, job_id, "p2/work", until, 10, Pick::All)
        .await
        .unwrap();
    assert_eq!(taken.len(), 2);
    assert!(taken.iter().all(|i| i.taken_over));
    lease::renew(db, job_id, "p1/work", until).await.unwrap();
    assert!(
        items()
            .await
            .iter()
            .all(|i| i.lease_owner.as_deref() == Some("p2/work"))
    );
    // p1 wakes up and records "try again later" for both: p2 still holds them.
    let retry = |id| {
        (
            id,
            Outcome::Retry {
                not_before: chrono::Utc::now(),
                code: "throttled".into(),
                detail: "429".into(),
                read_first: false,
            },
        )
    };
    let ids: Vec<i64> = taken.iter().map(|i| i.id).collect();
    outcome::record(
        db,
        job_id,
        "p1/work",
        ids.iter().map(|&id| retry(id)).collect(),
        0,
    )
    .await
    .unwrap();
    for item in items().await {
        assert_eq!(item.status, ItemStatus::Pending);
        assert_eq!(item.lease_owner.as_deref(), Some("p2/work"), "{item:?}");
        assert!(item.lease_until > Some(chrono::Utc::now()), "{item:?}");
    }
    assert!(
        lease::claim(db, job_id, "p3/work", until, 10, Pick::All)
            .await
            .unwrap()
            .is_empty(),
        "no third step takes members p2 holds"
    );
    // p2's own "try again later" frees them, as it should.
    outcome::record(db, job_id, "p2/work", vec![retry(ids[0])], 0)
        .await
        .unwrap();
    let freed = items().await;
    let first = freed.iter().find(|i| i.id == ids[0]).unwrap();
    assert_eq!(first.lease_owner, None);
    app.stop().await;
    emulator.shutdown().await;
}
on_both_backends!(members_taken_over_stay_with_the_live_step);

/// A directory of `members` users (scenario `seed`, twice as many units) whose write budget is
/// 60 writes per 3 s.
async fn throttled_directory(seed: u64, members: u64) -> EmulatorHandle {
    graph_emulator::spawn(EmulatorConfig {
        scenario: Some(Scenario::simple(
            seed,
            members as usize,
            (members * 2) as u32,
        )),
        faults: Faults {
            write_budget: Budget {
                limit: 60,
                window_ms: 3_000,
            },
            ..Faults::default()
        },
        ..EmulatorConfig::default()
    })
    .await
    .unwrap()
}

/// Two worker processes and one throttled tenant: from its first write, one process holds the
/// tenant's turn to write (`tenant_writers`) and the other leaves its lanes of the job to it, so
/// one scheduler learns and fills the tenant's budget. When both wrote, each took the other's
/// writes for a foreign client's and they collided: 8–13 % of requests were answered 429
/// (`licensor-bench --scenario msp` on PostgreSQL + Redis, 2 workers). When the turn was taken
/// only once the directory had pushed back, both learned the budget side by side at first, and
/// the writer kept what that taught it — a window too short, a limit too high or too low: 27 to
/// 275 of 660–1,350 requests were answered 429 in one run of six.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_worker_writes_to_a_throttled_tenant_postgres_redis() {
    const MEMBERS: u64 = 600;
    let emulator = throttled_directory(33, MEMBERS).await;
    let Some(d) = Deployment::start(&emulator, 2).await else {
        return;
    };
    let id = d.submit_assign().await;
    // 600 writes at 60 per 3 s take at least 27 s: well after the first windows, one worker
    // process holds the tenant's turn.
    d.wait_progress(&id, 240).await;
    let db = sea_orm::Database::connect(d.database_url()).await.unwrap();
    let writers = {
        use sea_orm::{ConnectionTrait, Statement};
        db.query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT w.owner FROM tenant_writers w JOIN worker_processes p ON p.id = w.owner \
             WHERE w.until > clock_timestamp()",
        ))
        .await
        .unwrap()
    };
    assert_eq!(writers.len(), 1, "one live worker process holds the turn");
    let job = d.wait_end(&id, 180).await;
    assert_all_assigned_once(&emulator, &job, MEMBERS).await;
    let s = stats(&emulator).await;
    let (throttled, requests) = (
        s["throttled"].as_u64().unwrap(),
        s["requests_total"].as_u64().unwrap(),
    );
    assert!(
        (throttled as f64) < 0.03 * requests as f64,
        "{throttled} of {requests} requests answered 429: {s}"
    );
    emulator.shutdown().await;
}

/// Two worker processes and one throttled tenant: a lane of the tenant's job that the process
/// not writing to the tenant takes goes straight to the writer's own queue, and the writer
/// queues its lanes' next steps there too, so no lane goes back and forth between the two. When
/// lanes went back on the shared queue for whichever process polled next, half of them landed
/// on the other process again (`licensor-bench --scenario msp` on two workers: 11,498 lanes
/// left to their writer for 5,438 chunks written). Every member ends assigned, written once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lanes_stay_with_their_tenants_writer_postgres_redis() {
    const MEMBERS: u64 = 900;
    const LANES: usize = 4;
    let emulator = throttled_directory(34, MEMBERS).await;
    let Some(mut d) = Deployment::start(&emulator, 0).await else {
        return;
    };
    let metrics: Vec<String> = (0..2)
        .map(|_| format!("127.0.0.1:{}", common::servers::free_port()))
        .collect();
    let lanes = LANES.to_string();
    for listen in &metrics {
        d.spawn_with(
            &["worker"],
            &[
                ("LICENSOR_WORKER__METRICS_LISTEN", listen),
                ("LICENSOR_JOBS__LANES_PER_JOB", &lanes),
            ],
        );
    }
    let scrape = |listen: &String| {
        let url = format!("http://{listen}/metrics");
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match reqwest::get(&url).await {
                    Ok(r) if r.status().is_success() => return r.text().await.unwrap(),
                    _ if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(100)).await
                    }
                    other => panic!("{url}: {other:?}"),
                }
            }
        }
    };
    for listen in &metrics {
        scrape(listen).await;
    }
    let id = d.submit_assign().await;
    // 900 writes at 60 per 3 s take at least 42 s: fifteen windows, each worked by the
    // writer's lanes in turn.
    let job = d.wait_end(&id, 180).await;
    assert_all_assigned_once(&emulator, &job, MEMBERS).await;
    let counter = |text: &str, name: &str| -> f64 {
        text.lines()
            .filter(|l| l.split([' ', '{']).next() == Some(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let (mut left, mut chunks) = (0.0, 0.0);
    for listen in &metrics {
        let text = scrape(listen).await;
        left += counter(&text, "licensor_lanes_left_to_writer_total");
        chunks += counter(&text, "licensor_job_chunk_seconds_count");
    }
    eprintln!("{left} lanes left to the tenant's writer for {chunks} chunks written");
    assert!(chunks >= 5.0, "the job was written in {chunks} chunks");
    // Only the lanes queued on the shared queue as the job started can land on the other
    // process: once there, they go to the writer and stay.
    assert!(
        left <= LANES as f64,
        "{left} lanes left to the writer for {chunks} chunks: lanes went back and forth"
    );
    emulator.shutdown().await;
}

/// A process stopped in the middle of a transaction (SIGSTOP, a frozen VM, a cut network) does
/// not keep its row locks for ever: PostgreSQL ends a licensor session that sits idle inside a
/// transaction after `db::IDLE_IN_TRANSACTION_TIMEOUT`, and the rows it held — members a worker
/// was recording, which `FOR UPDATE SKIP LOCKED` claims would skip for ever — are free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_transaction_releases_its_locks_postgres() {
    use licensor_core::config::DatabaseUrl;
    use licensor_core::db::{self, IDLE_IN_TRANSACTION_TIMEOUT};
    use sea_orm::ConnectionTrait;
    let Some(url) = common::postgres_url() else {
        return;
    };
    let pg = common::PgDatabase::create(&url).await;
    let licensor = db::connect(&DatabaseUrl::Postgres(pg.url.clone()))
        .await
        .unwrap();
    licensor
        .execute_unprepared("CREATE TABLE held (id INT PRIMARY KEY); INSERT INTO held VALUES (1)")
        .await
        .unwrap();
    // licensor's connection locks the row, then goes silent without committing. Its silence is
    // timed on the server's clock from the locking statement on: the client may read the answer
    // late on a loaded machine, which would shorten a silence timed here.
    let txn = db::begin(&licensor).await.unwrap();
    let locked_at = txn
        .query_one_raw(sea_orm::Statement::from_string(
            txn.get_database_backend(),
            "SELECT clock_timestamp()::text AS at FROM held WHERE id = 1 FOR UPDATE".to_owned(),
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<String>("", "at")
        .unwrap();
    let silent = Instant::now();
    let other = sea_orm::Database::connect(pg.url.as_str()).await.unwrap();
    let free = || async {
        other
            .query_all_raw(sea_orm::Statement::from_string(
                other.get_database_backend(),
                "SELECT id FROM held FOR UPDATE SKIP LOCKED".to_owned(),
            ))
            .await
            .unwrap()
            .len()
            == 1
    };
    assert!(
        !free().await,
        "the row is locked while the transaction is open"
    );
    loop {
        if free().await {
            break;
        }
        assert!(
            silent.elapsed() < IDLE_IN_TRANSACTION_TIMEOUT + Duration::from_secs(10),
            "the silent transaction still held its lock {:?} later",
            silent.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let released = other
        .query_one_raw(sea_orm::Statement::from_sql_and_values(
            other.get_database_backend(),
            "SELECT EXTRACT(EPOCH FROM clock_timestamp() - $1::timestamptz)::float8 AS secs",
            [locked_at.into()],
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<f64>("", "secs")
        .unwrap();
    let released = Duration::from_secs_f64(released);
    eprintln!("a silent transaction's lock was released {released:?} after it went silent");
    assert!(
        released >= IDLE_IN_TRANSACTION_TIMEOUT,
        "the lock was free {released:?} after the locking statement, before the timeout"
    );
    // Its session is gone: the transaction cannot commit what it had done.
    assert!(txn.commit().await.is_err());
    // The pool serves again on a new connection.
    assert!(db::ping(&licensor).await);
    drop(other);
    drop(licensor);
    drop(pg);
}

/// Many tenants' jobs at once, each throttled on its own write budget, on a worker that runs one
/// task at a time: a chunk whose tenant has spent its budget gives its members back and leaves,
/// so the other tenants' jobs are worked meanwhile — side by side, each at its budget's pace —
/// instead of one tenant after another. Every member ends assigned exactly once, as its item
/// says, in its own tenant's directory.
async fn tenants_share_one_worker_by_budget(backend: Backend) {
    const TENANTS: usize = 3;
    const MEMBERS: u64 = 150;
    let directories = graph_emulator::TenantSet {
        count: Some(TENANTS),
        template: Some(Scenario::simple(71, MEMBERS as usize, 1_000)),
        ..Default::default()
    }
    .expand()
    .unwrap();
    let mut directories = directories.into_iter();
    let emulator = graph_emulator::spawn(EmulatorConfig {
        scenario: directories.next(),
        more_tenants: directories.collect(),
        faults: Faults {
            write_budget: Budget {
                limit: 30,
                window_ms: 3_000,
            },
            ..Faults::default()
        },
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    // Lines before any table header land in the test settings' [worker] table.
    let Some(app) = TestApp::start_with(backend, Roles::ALL, "concurrency = 1\n").await else {
        return;
    };
    let mut jobs = Vec::new();
    for (i, directory) in emulator.tenants().iter().enumerate() {
        let tenant = app.tenant(&format!("customer-{i}")).await;
        app.connect_directory_to(tenant.id, &emulator, directory)
            .await;
        let group = app.group_id(&tenant.admin, "All Users").await;
        let job = app
            .post_json(
                "/v1/jobs",
                &tenant.admin,
                &json!({"kind": "assign", "groups": [group], "add_licenses": [{"sku_id": ENTERPRISEPACK_SKU_ID}], "usage_location": "SE"}),
            )
            .await;
        jobs.push((
            tenant,
            directory.tenant_id.clone(),
            job["id"].as_str().unwrap().to_owned(),
        ));
    }
    // 150 writes at 30 per 3 s take at least 12 s per tenant. Worked one after another on the
    // one worker place, at most one job would be part-way at any moment.
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut side_by_side = false;
    let ended = loop {
        let mut done = Vec::new();
        let mut ended = Vec::new();
        for (tenant, _, id) in &jobs {
            let job = app
                .get_json(&format!("/v1/jobs/{id}"), &tenant.viewer)
                .await;
            let p = &job["progress"];
            done.push(p["succeeded"].as_u64().unwrap_or(0) + p["failed"].as_u64().unwrap_or(0));
            if matches!(
                job["status"].as_str(),
                Some("finished" | "finished_with_exception" | "failed" | "cancelled")
            ) {
                ended.push(job);
            }
        }
        side_by_side |= done.iter().all(|d| *d > 0 && *d < MEMBERS);
        if ended.len() == TENANTS {
            break ended;
        }
        assert!(Instant::now() < deadline, "jobs not done: {done:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        side_by_side,
        "every tenant's job was part-way at the same moment"
    );
    // A job's lanes that found its tenant's budget spent waited for it as one, not each through
    // the queue (`licensor_lanes_joined_total`).
    let metrics = app.text("/metrics").await;
    let counter = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
    };
    let (deferred, joined) = (
        counter("licensor_lanes_deferred_total"),
        counter("licensor_lanes_joined_total"),
    );
    assert!(
        deferred.is_some_and(|n| n > 0.0) && joined.is_some_and(|n| n > 0.0),
        "lanes deferred {deferred:?}, joined {joined:?}"
    );
    let per_tenant = reqwest::get(format!("{}/_emulator/tenants", emulator.base_url()))
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    for ((tenant, directory, id), job) in jobs.iter().zip(&ended) {
        assert_eq!(job["status"], "finished", "{job}");
        assert_eq!(job["progress"]["succeeded"], MEMBERS, "{job}");
        let checked = app
            .assert_outcomes_true_in(&tenant.viewer, id, &emulator.base_url(), Some(directory))
            .await;
        assert_eq!(checked as u64, MEMBERS);
        let stats = per_tenant["value"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["tenant_id"] == directory.as_str())
            .unwrap_or_else(|| panic!("{per_tenant}"));
        assert_eq!(
            stats["successful_writes"].as_u64(),
            Some(MEMBERS),
            "no member written twice: {stats}"
        );
    }
    app.stop().await;
    emulator.shutdown().await;
}
on_both_backends!(tenants_share_one_worker_by_budget);

/// A new throttled tenant's job: one of its lanes learns the write budget, and the others wait
/// for that step instead of each taking a chunk of members to give back unsent when the budget
/// proves to allow fewer writes (`Lanes::probe`). Every member is written once and each outcome
/// agrees with the directory.
async fn one_lane_learns_a_new_tenants_budget(backend: Backend) {
    const MEMBERS: u64 = 200;
    const CHUNK: u64 = 50;
    let emulator = graph_emulator::spawn(EmulatorConfig {
        scenario: Some(Scenario::simple(73, MEMBERS as usize, 1_000)),
        faults: Faults {
            // Each step lasts round trips long, so the job's four lanes start while the first
            // one still learns.
            latency_ms: 20,
            write_budget: Budget {
                limit: 30,
                window_ms: 3_000,
            },
            ..Faults::default()
        },
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let extra = format!("[jobs]\nchunk_size = {CHUNK}\nlanes_per_job = 4\n");
    let Some(app) = TestApp::start_with(backend, Roles::ALL, &extra).await else {
        return;
    };
    let (tenant, id) = assign_all_users(&app, &emulator).await;
    let job = app.wait_for_job(&tenant.viewer, &id, 120).await;
    assert_eq!(job["status"], "finished", "{job}");
    assert_eq!(job["progress"]["succeeded"], MEMBERS, "{job}");
    let checked = app
        .assert_outcomes_true_in(&tenant.viewer, &id, &emulator.base_url(), None)
        .await;
    assert_eq!(checked as u64, MEMBERS);
    let stats = stats(&emulator).await;
    assert_eq!(
        stats["successful_writes"].as_u64(),
        Some(MEMBERS),
        "{stats}"
    );

    // The job's three other lanes, brought by its first, waited while it learned the budget.
    let metrics = app.text("/metrics").await;
    let waited = metrics.lines().find_map(|l| {
        l.strip_prefix("licensor_lanes_waited_for_budget_learning_total ")?
            .parse::<f64>()
            .ok()
    });
    assert!(
        waited.is_some_and(|n| n >= 3.0),
        "lanes that waited for the one learning the budget: {waited:?}"
    );
    app.stop().await;
    emulator.shutdown().await;
}
on_both_backends!(one_lane_learns_a_new_tenants_budget);

/// A write budget that grows between two jobs (another client of the same app stops spending,
/// or the directory allows more) is used by the next job at once. The last job's writes fill
/// the learned budget's window, so the schedule would hold the next job back until they left
/// it, and then let its writes out at the old limit; a limit probe's reading and then each
/// write's raise the limit by what they prove. Here the next job ends before the last job's
/// writes leave the window (without the probe it could not start writing until then), and
/// every item agrees with the directory.
async fn a_budget_that_grows_is_used_by_the_next_job(backend: Backend) {
    const MEMBERS: u64 = 2_000;
    const WINDOW_MS: u64 = 20_000;
    let emulator = graph_emulator::spawn(EmulatorConfig {
        scenario: Some(Scenario::simple(74, MEMBERS as usize, (MEMBERS * 2) as u32)),
        faults: Faults {
            write_budget: Budget {
                limit: 1_000,
                window_ms: WINDOW_MS,
            },
            ..Faults::default()
        },
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let (tenant, assign) = assign_all_users(&app, &emulator).await;
    let first = app.wait_for_job(&tenant.viewer, &assign, 120).await;
    assert_all_assigned_once(&emulator, &first, MEMBERS).await;
    app.assert_outcomes_true(&tenant.viewer, &assign, &emulator.base_url())
        .await;

    // The directory now allows ten times as many writes in the same window.
    common::put_faults(
        &emulator,
        json!({"write_budget": {"limit": 10_000, "window_ms": WINDOW_MS}}),
    )
    .await;
    let remove = remove_from_all_users(&app, &tenant).await;
    let second = app.wait_for_job(&tenant.viewer, &remove, 120).await;
    assert_eq!(second["status"], "finished", "{second}");
    assert_eq!(second["progress"]["succeeded"], MEMBERS, "{second}");
    app.assert_outcomes_true(&tenant.viewer, &remove, &emulator.base_url())
        .await;
    let stats = assert_assigned_and_removed_once(&emulator, MEMBERS).await;

    let at = |job: &Value, k: &str| {
        chrono::DateTime::parse_from_rfc3339(job[k].as_str().unwrap()).unwrap()
    };
    let after = (at(&second, "finished_at") - at(&first, "finished_at")).num_milliseconds();
    eprintln!("the next job finished {after} ms after the last: {stats}");
    assert!(
        after < WINDOW_MS as i64,
        "the next job finished {after} ms after the last, not within its writes' window"
    );
    app.stop().await;
    emulator.shutdown().await;
}
on_both_backends!(a_budget_that_grows_is_used_by_the_next_job);
