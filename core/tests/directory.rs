//! The directory client against the Graph emulator over real HTTP, with faults switched on.

use std::collections::HashSet;
use std::time::Duration;

use futures::TryStreamExt;
use graph_emulator::{EmulatorConfig, EmulatorHandle, Scenario};
use licensor_core::config::DirectoryTuning;
use licensor_core::directory::{
    AssignedLicense, DirectoryClient, DirectoryConfig, DirectoryError, ItemCode, User, WriteOp,
    Written,
};
use serde_json::{Value, json};
use uuid::Uuid;

const E3: &str = "6fd2c87f-b296-42f0-b197-1e91e994b900";
const EXCHANGE_STANDARD: &str = "4b9405b0-7788-4568-add1-99614e613b69";
const EXCHANGE_S_ENTERPRISE: &str = "efb87545-963c-4e0d-99df-69c6916d9eb0";

async fn emulator() -> EmulatorHandle {
    graph_emulator::spawn(EmulatorConfig {
        scenario: Some(Scenario::demo()),
        ..EmulatorConfig::default()
    })
    .await
    .expect("emulator starts")
}

fn tuning() -> DirectoryTuning {
    DirectoryTuning {
        retry_min_delay_ms: 20,
        retry_max_delay_ms: 2_000,
        retry_max_attempts: 12,
        ..DirectoryTuning::default()
    }
}

fn client_for(em: &EmulatorHandle, secret: &str) -> DirectoryClient {
    DirectoryClient::new(
        DirectoryConfig {
            token_url: em.token_url(),
            graph_url: em.graph_url(),
            client_id: em.client_id(),
            client_secret: secret.to_owned(),
        },
        tuning(),
    )
    .unwrap()
}

async fn control(
    em: &EmulatorHandle,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Value {
    let http = reqwest::Client::new();
    let mut req = http.request(method, format!("{}{path}", em.base_url()));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.unwrap_or(Value::Null)
}

async fn stats(em: &EmulatorHandle) -> Value {
    control(
        em,
        reqwest::Method::GET,
        "/_emulator/stats?per_user=true",
        None,
    )
    .await
}

async fn group_id(client: &DirectoryClient, name: &str) -> String {
    let groups = client.list_groups(Some(name), 10).await.unwrap();
    groups
        .into_iter()
        .find(|g| g.display_name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("group {name}"))
        .id
}

async fn members(client: &DirectoryClient, group: &str, transitive: bool) -> Vec<User> {
    client
        .members(group, transitive)
        .try_collect()
        .await
        .unwrap()
}

fn requests_matching(stats: &Value, needle: &str) -> u64 {
    stats["requests"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(route, _)| route.contains(needle))
        .flat_map(|(_, by)| by.as_object().unwrap().values())
        .map(|n| n.as_u64().unwrap())
        .sum()
}

#[tokio::test]
async fn pages_a_5000_member_group_each_member_once() {
    let em = emulator().await;
    let client = client_for(&em, &em.client_secret());
    let all_staff = group_id(&client, "All Staff").await;
    let users = members(&client, &all_staff, false).await;
    assert_eq!(users.len(), 5_000);
    let ids: HashSet<&str> = users.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(ids.len(), 5_000, "each member exactly once");
    assert!(users.iter().all(|u| u.user_principal_name.is_some()));
    let without_location = users.iter().filter(|u| u.usage_location.is_none()).count();
    assert!(
        (50..=150).contains(&without_location),
        "about 2% lack a usage location: {without_location}"
    );
    assert_eq!(
        requests_matching(&stats(&em).await, "members"),
        6,
        "$top=999: 5,000 members in 6 pages"
    );
    em.shutdown().await;
}

/// A job stores each group's `@odata.nextLink` to read on after a restart. When the tenant's
/// directory URL changed meanwhile (the demo's emulator restarted on another port), the stored
/// link names a host that is gone: reading on goes to the client's own Graph URL with the same
/// path and `$skiptoken`, and every member is read once. A link outside `/v1.0` is refused
/// before any request, so the token never leaves the configured Graph URL.
#[tokio::test]
async fn a_stored_next_link_reads_on_at_the_current_graph_url() {
    let em = emulator().await;
    let client = client_for(&em, &em.client_secret());
    let all_staff = group_id(&client, "All Staff").await;
    let mut pages = client.member_pages(&all_staff, false, None);
    let first = pages.try_next().await.unwrap().expect("a first page");
    drop(pages);
    let link = first.next_link.expect("5,000 members: more than one page");
    let port = reqwest::Url::parse(&em.base_url()).unwrap().port().unwrap();
    let stale = link.replace(&format!("127.0.0.1:{port}"), "127.0.0.1:9");
    assert_ne!(stale, link, "the link names the emulator's address: {link}");

    let rest: Vec<User> = client
        .member_pages(&all_staff, false, Some(stale))
        .map_ok(|page| futures::stream::iter(page.users.into_iter().map(Ok::<_, DirectoryError>)))
        .try_flatten()
        .try_collect()
        .await
        .expect("reads on at the emulator");
    let mut ids: HashSet<String> = first.users.into_iter().map(|u| u.id).collect();
    let read_on = rest.len();
    ids.extend(rest.into_iter().map(|u| u.id));
    assert_eq!(read_on, 5_000 - 999);
    assert_eq!(ids.len(), 5_000, "each member exactly once");

    let before = requests_matching(&stats(&em).await, "members");
    for foreign in [
        "https://elsewhere.example/api/groups/x/members?$skiptoken=1",
        "not a link",
    ] {
        let err = client
            .member_pages(&all_staff, false, Some(foreign.to_owned()))
            .try_collect::<Vec<_>>()
            .await
            .expect_err(foreign);
        assert!(
            matches!(
                err,
                DirectoryError::Permanent {
                    code: ItemCode::Other,
                    ..
                }
            ),
            "{foreign}: {err:?}"
        );
    }
    assert_eq!(
        requests_matching(&stats(&em).await, "members"),
        before,
        "no request for a link outside the Graph URL"
    );
    em.shutdown().await;
}

#[tokio::test]
async fn transitive_members_include_nested_groups_and_only_users() {
    let em = emulator().await;
    let client = client_for(&em, &em.client_secret());
    let engineering = group_id(&client, "Engineering").await;
    let platform = group_id(&client, "Platform Team").await;
    let direct: HashSet<String> = members(&client, &engineering, false)
        .await
        .into_iter()
        .map(|u| u.id)
        .collect();
    let nested: HashSet<String> = members(&client, &platform, false)
        .await
        .into_iter()
        .map(|u| u.id)
        .collect();
    let transitive: Vec<User> = members(&client, &engineering, true).await;
    let transitive_ids: HashSet<String> = transitive.iter().map(|u| u.id.clone()).collect();
    assert_eq!(transitive_ids.len(), transitive.len(), "each member once");
    assert_eq!(direct.len(), 1_200);
    assert_eq!(
        nested.len(),
        40,
        "the nested group's devices and contacts are not users"
    );
    let expected: HashSet<String> = direct.union(&nested).cloned().collect();
    assert_eq!(transitive_ids, expected);
    let missing = client
        .members("00000000-0000-0000-0000-000000000000", false)
        .try_collect::<Vec<_>>()
        .await;
    assert!(
        matches!(missing, Err(DirectoryError::NotFound { .. })),
        "{missing:?}"
    );
    em.shutdown().await;
}

#[tokio::test]
async fn skus_report_available_units() {
    let em = emulator().await;
    let client = client_for(&em, &em.client_secret());
    let skus = client.subscribed_skus().await.unwrap();
    let e5 = skus.iter().find(|s| s.sku_part_number == "SPE_E5").unwrap();
    assert_eq!(e5.enabled, 100);
    assert_eq!(e5.available, e5.enabled - e5.consumed);
    assert!(!e5.service_plans.is_empty());
    em.shutdown().await;
}

fn lic(sku: &str, disabled: &[&str]) -> AssignedLicense {
    AssignedLicense {
        sku_id: sku.parse().unwrap(),
        disabled_plans: disabled.iter().map(|p| p.parse().unwrap()).collect(),
    }
}

fn assign(user: &str, add: Vec<AssignedLicense>, remove: Vec<Uuid>) -> WriteOp {
    WriteOp::AssignLicense {
        user_id: user.to_owned(),
        add,
        remove,
    }
}

#[tokio::test]
async fn batch_mixes_successes_and_every_error_code() {
    let em = emulator().await;
    let client = client_for(&em, &em.client_secret());
    let users = members(&client, &group_id(&client, "All Staff").await, false).await;
    let pilot = members(&client, &group_id(&client, "Licensed Pilot").await, false).await;
    let free: Vec<&User> = users
        .iter()
        .filter(|u| u.usage_location.is_some() && u.assigned_licenses.is_empty())
        .collect();
    let without_location = users.iter().find(|u| u.usage_location.is_none()).unwrap();
    let e3: Uuid = E3.parse().unwrap();
    // A SKU with no units left: take the last E5 units first.
    let e5 = client
        .subscribed_skus()
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.sku_part_number == "SPE_E5")
        .unwrap();
    let e5_id = e5.sku_id.to_string();
    let fillers: Vec<WriteOp> = free[10..10 + e5.available as usize]
        .iter()
        .map(|u| assign(&u.id, vec![lic(&e5_id, &[])], vec![]))
        .collect();
    assert!(client.write_batch(&fillers).await.iter().all(Result::is_ok));

    let ops = vec![
        assign(&free[0].id, vec![lic(E3, &[])], vec![]),
        assign(&free[1].id, vec![lic(&e5_id, &[])], vec![]),
        assign(&without_location.id, vec![lic(E3, &[])], vec![]),
        assign(
            &free[2].id,
            vec![lic(E3, &[]), lic(EXCHANGE_STANDARD, &[])],
            vec![],
        ),
        assign(&free[3].id, vec![lic(E3, &[EXCHANGE_S_ENTERPRISE])], vec![]),
        assign(&pilot[0].id, vec![], vec![e3]),
        assign(&Uuid::new_v4().to_string(), vec![lic(E3, &[])], vec![]),
        assign(
            &free[4].id,
            vec![lic(&Uuid::new_v4().to_string(), &[])],
            vec![],
        ),
        assign(&free[5].id, vec![], vec![e3]),
        WriteOp::SetUsageLocation {
            user_id: without_location.id.clone(),
            usage_location: "SE".into(),
        },
    ];
    let outcomes = client.write_batch(&ops).await;
    let codes: Vec<Option<ItemCode>> = outcomes
        .iter()
        .map(|o| o.as_ref().err().map(DirectoryError::item_code))
        .collect();
    assert_eq!(
        codes,
        vec![
            None,
            Some(ItemCode::CountViolation),
            Some(ItemCode::UsageLocationMissing),
            Some(ItemCode::MutuallyExclusiveViolation),
            Some(ItemCode::DependencyViolation),
            Some(ItemCode::InheritedFromGroup),
            Some(ItemCode::UserNotFound),
            Some(ItemCode::SkuNotFound),
            Some(ItemCode::Other),
            None,
        ],
        "{outcomes:?}"
    );
    assert!(
        matches!(outcomes[8], Err(DirectoryError::AlreadyDone { .. })),
        "removing a license not held is already done"
    );
    // The directory's state matches.
    let first = client.get_user(&free[0].id).await.unwrap();
    assert!(first.assigned_licenses.iter().any(|l| l.sku_id == e3));
    assert_eq!(
        client
            .get_user(&without_location.id)
            .await
            .unwrap()
            .usage_location
            .as_deref(),
        Some("SE")
    );
    // More than 20 ops go out as several batches (more than three while a new client is still
    // proving how much of the write budget it may use: it lets the first writes out in parts).
    let before = requests_matching(&stats(&em).await, "batch");
    let many: Vec<WriteOp> = free[200..245]
        .iter()
        .map(|u| assign(&u.id, vec![lic(E3, &[])], vec![]))
        .collect();
    assert!(client.write_batch(&many).await.iter().all(Result::is_ok));
    let batches = requests_matching(&stats(&em).await, "batch") - before;
    assert!((3..=45).contains(&batches), "{batches} batches");
    em.shutdown().await;
}

#[tokio::test]
async fn tokens_are_shared_refreshed_after_expiry_and_rejected_secrets_fail_once() {
    let em = emulator().await;
    control(
        &em,
        reqwest::Method::PUT,
        "/_emulator/faults",
        Some(json!({"token_lifetime_secs": 2})),
    )
    .await;
    let client = client_for(&em, &em.client_secret());
    let all_staff = group_id(&client, "All Staff").await;
    // Concurrent callers share one token request.
    let results = futures::future::join_all((0..30).map(|_| client.get_group(&all_staff))).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(requests_matching(&stats(&em).await, "token"), 1);
    // After expiry the next call fetches a new token and succeeds.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    client.get_group(&all_staff).await.unwrap();
    assert_eq!(requests_matching(&stats(&em).await, "token"), 2);

    let wrong = client_for(&em, "not-the-secret");
    let err = wrong.get_group(&all_staff).await.unwrap_err();
    assert!(
        matches!(err, DirectoryError::CredentialsRejected { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("directory credentials rejected"),
        "{err}"
    );
    assert!(!err.to_string().contains("not-the-secret"));
    assert!(wrong.check_credentials().await.is_err());
    assert_eq!(
        requests_matching(&stats(&em).await, "token"),
        4,
        "no retry loop on a rejected secret"
    );
    em.shutdown().await;
}

#[tokio::test]
async fn faults_and_throttling_leave_every_member_assigned_exactly_once() {
    let em = emulator().await;
    control(
        &em,
        reqwest::Method::PUT,
        "/_emulator/faults",
        Some(json!({
            "error_rate": 0.2,
            "error_statuses": [503],
            "lost_answer_rate": 0.1,
            "throttling": true,
            "write_budget": {"limit": 400, "window_ms": 2000},
            "seed": 7
        })),
    )
    .await;
    let client = client_for(&em, &em.client_secret());
    let users = members(&client, &group_id(&client, "All Staff").await, false).await;
    let e3: Uuid = E3.parse().unwrap();
    let targets: Vec<&User> = users
        .iter()
        .filter(|u| {
            u.usage_location.is_some() && !u.assigned_licenses.iter().any(|l| l.sku_id == e3)
        })
        .take(2_000)
        .collect();
    assert_eq!(targets.len(), 2_000);
    let ops: Vec<WriteOp> = targets
        .iter()
        .map(|u| assign(&u.id, vec![lic(E3, &[])], vec![]))
        .collect();
    // Several callers at once, as a job's workers would.
    let outcomes: Vec<Result<Written, DirectoryError>> =
        futures::future::join_all(ops.chunks(100).map(|c| client.write_batch(c)))
            .await
            .into_iter()
            .flatten()
            .collect();
    let failed: Vec<_> = outcomes.iter().filter(|o| o.is_err()).collect();
    assert!(
        failed.is_empty(),
        "no transient failure is left failed while retries remain: {:?}",
        &failed[..failed.len().min(3)]
    );
    let s = stats(&em).await;
    assert!(
        s["injected_errors"].as_u64().unwrap() > 0,
        "faults were injected: {s}"
    );
    // Writes whose answers were lost were read, found made, and not sent again.
    assert!(s["lost_answers"].as_u64().unwrap() > 0, "{s}");
    assert!(
        outcomes.contains(&Ok(Written::SeenAfterLostAnswer)),
        "no write was found made after its answer was lost"
    );
    let per_user = s["writes_per_user"].as_object().unwrap();
    for u in &targets {
        assert_eq!(
            per_user.get(&u.id).and_then(Value::as_u64),
            Some(1),
            "user {} written once",
            u.id
        );
    }
    assert_eq!(s["writes_per_user_max"], 1);
    em.shutdown().await;
}
