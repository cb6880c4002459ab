//! Many tenants in one emulator: each its own directory, app registration, token endpoint,
//! budgets, faults and statistics; requests are routed by the token's tenant.

mod common;

use common::*;
use graph_emulator::{
    Budget, ENTERPRISEPACK_SKU_ID, EmulatorConfig, EmulatorHandle, Faults, GroupSpec,
    SPE_E5_SKU_ID, Scenario, SkuSpec, TenantCredentials,
};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

/// Contoso (default): 30 users in "All Users", ENTERPRISEPACK. Fabrikam: 50 users in "Fabrikam
/// Staff", SPE_E5 only, its own domain and app registration.
fn contoso() -> Scenario {
    Scenario::simple(11, 30, 100)
}

fn fabrikam() -> Scenario {
    Scenario {
        seed: 12,
        domain: "fabrikam.onmicrosoft.com".into(),
        users: 50,
        groups: vec![GroupSpec {
            leading_users: true,
            ..GroupSpec::new("Fabrikam Staff", 50)
        }],
        skus: vec![SkuSpec {
            sku_part_number: "SPE_E5".into(),
            sku_id: Some(SPE_E5_SKU_ID.into()),
            enabled: 100,
            ..Default::default()
        }],
        ..Default::default()
    }
}

async fn two_tenants(faults: Faults) -> (EmulatorHandle, Vec<TenantCredentials>) {
    let emu = graph_emulator::spawn(EmulatorConfig {
        scenario: Some(contoso()),
        more_tenants: vec![fabrikam()],
        faults,
        ..Default::default()
    })
    .await
    .expect("spawn");
    let creds = emu.tenants();
    (emu, creds)
}

/// A token from `tenant`'s endpoint (id or domain) with `cred`'s app registration.
async fn token_at(
    emu: &EmulatorHandle,
    http: &Client,
    tenant: &str,
    cred: &TenantCredentials,
) -> Res {
    let res = http
        .post(emu.token_url_of(tenant))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", cred.client_id.as_str()),
            ("client_secret", cred.client_secret.as_str()),
            ("scope", "https://graph.microsoft.com/.default"),
        ])
        .send()
        .await
        .expect("token request");
    into_res(res).await
}

async fn token_of(emu: &EmulatorHandle, http: &Client, cred: &TenantCredentials) -> String {
    let r = token_at(emu, http, &cred.tenant_id, cred).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["access_token"].as_str().expect("token").to_string()
}

/// The `tid` claim of an access token.
fn tid(token: &str) -> String {
    use base64::Engine;
    let claims = token.split('.').nth(1).expect("claims");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(claims)
        .expect("base64");
    let v: Value = serde_json::from_slice(&bytes).expect("json");
    v["tid"].as_str().expect("tid").to_string()
}

/// An environment speaking as one tenant (its token), for the shared helpers.
fn as_tenant(emu: EmulatorHandle, http: &Client, token: String) -> Env {
    Env {
        emu,
        http: http.clone(),
        token,
    }
}

async fn control(
    emu: &EmulatorHandle,
    http: &Client,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Res {
    let mut rb = http.request(method, format!("{}/_emulator{path}", emu.base_url()));
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    into_res(rb.send().await.expect("send")).await
}

/// `GET` a Graph path as the tenant whose token this is.
async fn graph_get(emu: &EmulatorHandle, http: &Client, token: &str, path: &str) -> Res {
    let rb = http
        .get(format!("{}{path}", emu.graph_url()))
        .bearer_auth(token);
    into_res(rb.send().await.expect("send")).await
}

fn names(r: &Res, key: &str) -> Vec<String> {
    r.body["value"]
        .as_array()
        .expect("value")
        .iter()
        .filter_map(|v| v[key].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn each_tenant_sees_only_its_own_directory() {
    let (emu, creds) = two_tenants(Faults::default()).await;
    assert_eq!(creds.len(), 2);
    let (a, b) = (&creds[0], &creds[1]);
    assert_eq!(
        a.tenant_id,
        emu.directory_tenant_id(),
        "the default tenant is first"
    );
    assert_eq!(b.domain, "fabrikam.onmicrosoft.com");
    assert_ne!(a.tenant_id, b.tenant_id);
    assert_ne!(a.client_id, b.client_id);
    let http = client();
    let ta = token_of(&emu, &http, a).await;
    // A tenant's endpoint answers by domain as well as by id.
    let r = token_at(&emu, &http, "Fabrikam.onmicrosoft.com", b).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let tb = r.body["access_token"].as_str().expect("token").to_string();
    // Each token names the tenant it was issued for.
    assert_eq!(tid(&ta), a.tenant_id);
    assert_eq!(tid(&tb), b.tenant_id);

    let env_a = as_tenant(emu, &http, ta.clone());
    // Tenant B's reads: the same emulator, B's token.
    let get_b = |path: String| {
        let http = http.clone();
        let url = format!("{}{path}", env_a.emu.graph_url());
        let tb = tb.clone();
        async move { into_res(http.get(url).bearer_auth(tb).send().await.expect("send")).await }
    };

    // Groups, users and SKUs: each tenant its own.
    let ga = env_a.get("/groups").await;
    assert_eq!(names(&ga, "displayName"), ["All Users"]);
    let gb = get_b("/groups".into()).await;
    assert_eq!(names(&gb, "displayName"), ["Fabrikam Staff"]);
    let skus_a = env_a.get("/subscribedSkus").await;
    assert_eq!(names(&skus_a, "skuPartNumber"), ["ENTERPRISEPACK"]);
    let skus_b = get_b("/subscribedSkus".into()).await;
    assert_eq!(names(&skus_b, "skuPartNumber"), ["SPE_E5"]);
    let ua = env_a
        .get("/users?$top=999&$select=id,userPrincipalName")
        .await;
    let ub = get_b("/users?$top=999&$select=id,userPrincipalName".into()).await;
    assert_eq!(names(&ua, "id").len(), 30);
    assert_eq!(names(&ub, "id").len(), 50);
    assert!(
        names(&ub, "userPrincipalName")
            .iter()
            .all(|u| u.ends_with("@fabrikam.onmicrosoft.com"))
    );
    let group_b = names(&gb, "id")[0].clone();
    let members_b = get_b(format!("/groups/{group_b}/members/graph.user?$top=999")).await;
    assert_eq!(names(&members_b, "id").len(), 50);

    // A token of tenant A cannot read or write tenant B: B's objects do not exist for it.
    let user_b = names(&ub, "id")[0].clone();
    let r = env_a.get(&format!("/groups/{group_b}")).await;
    assert_eq!(r.status.as_u16(), 404, "{}", r.body);
    assert_eq!(r.code(), "Request_ResourceNotFound");
    let r = env_a
        .get(&format!("/groups/{group_b}/members/microsoft.graph.user"))
        .await;
    assert_eq!(r.status.as_u16(), 404);
    let r = env_a.get(&format!("/users/{user_b}")).await;
    assert_eq!(r.status.as_u16(), 404);
    let r = env_a
        .post(
            &format!("/users/{user_b}/assignLicense"),
            json!({"addLicenses": [{"skuId": SPE_E5_SKU_ID, "disabledPlans": []}], "removeLicenses": []}),
        )
        .await;
    assert_eq!(r.status.as_u16(), 404, "{}", r.body);
    // Nor through $batch.
    let r = env_a
        .post(
            "/$batch",
            json!({"requests": [{"id": "1", "method": "GET", "url": format!("/users/{user_b}")}]}),
        )
        .await;
    assert_eq!(r.body["responses"][0]["status"], 404, "{}", r.body);
    // B's own write works and lands in B only.
    let r = get_b(format!("/users/{user_b}?$select=id")).await;
    assert_eq!(r.status, StatusCode::OK);
    let res = http
        .post(format!(
            "{}/users/{user_b}/assignLicense",
            env_a.emu.graph_url()
        ))
        .bearer_auth(&tb)
        .json(&json!({"addLicenses": [{"skuId": SPE_E5_SKU_ID, "disabledPlans": []}], "removeLicenses": []}))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status().as_u16(), 200);

    // App registrations are per tenant: B's app is unknown in A, A's secret is wrong for B's
    // app, and an unknown tenant is refused.
    let r = token_at(&env_a.emu, &http, &a.tenant_id, b).await;
    assert_eq!(r.status.as_u16(), 400);
    assert_eq!(r.body["error_codes"][0], 700016);
    let wrong = TenantCredentials {
        client_secret: a.client_secret.clone(),
        ..b.clone()
    };
    let r = token_at(&env_a.emu, &http, &b.tenant_id, &wrong).await;
    assert_eq!(r.status.as_u16(), 401);
    assert_eq!(r.body["error_codes"][0], 7000215);
    let r = token_at(&env_a.emu, &http, "nowhere.onmicrosoft.com", a).await;
    assert_eq!(r.body["error_codes"][0], 90002);

    // Control API: per tenant with ?tenant=, the default tenant without.
    let emu = &env_a.emu;
    let users_b = control(
        emu,
        &http,
        Method::GET,
        "/users?tenant=fabrikam.onmicrosoft.com&limit=1000",
        None,
    )
    .await;
    assert_eq!(users_b.body["total"], 50);
    let users_a = control(emu, &http, Method::GET, "/users?limit=1000", None).await;
    assert_eq!(users_a.body["total"], 30);
    let u = control(emu, &http, Method::GET, &format!("/users/{user_b}"), None).await;
    assert_eq!(
        u.status.as_u16(),
        404,
        "B's user is not in the default tenant"
    );
    let u = control(
        emu,
        &http,
        Method::GET,
        &format!("/users/{user_b}?tenant={}", b.tenant_id),
        None,
    )
    .await;
    assert_eq!(u.body["successfulWrites"], 1);
    let s = control(
        emu,
        &http,
        Method::GET,
        &format!("/scenario?tenant={}", b.tenant_id),
        None,
    )
    .await;
    assert_eq!(s.body["domain"], "fabrikam.onmicrosoft.com");
    let r = control(emu, &http, Method::GET, "/stats?tenant=nowhere", None).await;
    assert_eq!(r.status.as_u16(), 404);

    // Statistics are per tenant.
    let sa = control(emu, &http, Method::GET, "/stats", None).await.body;
    let sb = control(
        emu,
        &http,
        Method::GET,
        &format!("/stats?tenant={}", b.domain),
        None,
    )
    .await
    .body;
    assert_eq!(sa["tenant_id"], a.tenant_id.as_str());
    assert_eq!(sb["tenant_id"], b.tenant_id.as_str());
    assert_eq!(sa["successful_writes"], 0);
    assert_eq!(sb["successful_writes"], 1);
    // The tenants' list: when each tenant's first and last license write were made (0 before
    // any).
    let list = control(emu, &http, Method::GET, "/tenants", None)
        .await
        .body;
    let of = |id: &str| {
        list["value"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["tenant_id"] == id)
            .cloned()
            .unwrap()
    };
    let (la, lb) = (of(a.tenant_id.as_str()), of(b.tenant_id.as_str()));
    assert_eq!(
        (la["first_write_ms"].as_u64(), la["last_write_ms"].as_u64()),
        (Some(0), Some(0))
    );
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let (first, last) = (
        lb["first_write_ms"].as_u64().unwrap(),
        lb["last_write_ms"].as_u64().unwrap(),
    );
    assert!(
        first > now_ms - 600_000 && first <= last && last <= now_ms,
        "B's one write: first {first}, last {last}, now {now_ms}"
    );
    assert_eq!(sb["requests"]["GET /v1.0/groups"]["200"], 1);
    assert_eq!(
        sb["requests"]["POST /v1.0/users/{id}/assignLicense"]["200"],
        1
    );
    assert_eq!(
        sa["requests"]["POST /v1.0/users/{id}/assignLicense"]["404"],
        1
    );
    assert!(
        sa["requests"]["POST /v1.0/users/{id}/assignLicense"]
            .get("200")
            .is_none()
    );
    // Token requests are counted on the tenant asked (unknown tenants on the default one).
    assert_eq!(sb["requests"]["POST /{tenant}/oauth2/v2.0/token"]["200"], 1);
    assert_eq!(sb["requests"]["POST /{tenant}/oauth2/v2.0/token"]["401"], 1);
    assert_eq!(sa["requests"]["POST /{tenant}/oauth2/v2.0/token"]["400"], 2);
    let list = control(emu, &http, Method::GET, "/tenants", None)
        .await
        .body;
    let list = list["value"].as_array().expect("tenants").clone();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["tenant_id"], a.tenant_id.as_str());
    assert_eq!(list[1]["domain"], "fabrikam.onmicrosoft.com");
    assert_eq!(list[1]["client_id"], b.client_id.as_str());
    assert_eq!(list[1]["successful_writes"], 1);
    assert_eq!(list[1]["users"], 50);

    env_a.emu.shutdown().await;
}

#[tokio::test]
async fn budgets_and_faults_are_per_tenant() {
    let faults = Faults {
        write_budget: Budget {
            limit: 5,
            window_ms: 60_000,
        },
        ..Default::default()
    };
    let (emu, creds) = two_tenants(faults).await;
    let http = client();
    let ta = token_of(&emu, &http, &creds[0]).await;
    let tb = token_of(&emu, &http, &creds[1]).await;
    let ids = |tenant: String| {
        let (emu, http) = (&emu, &http);
        async move {
            let path = format!("/users?limit=10&tenant={tenant}");
            names(&control(emu, http, Method::GET, &path, None).await, "id")
        }
    };
    let users_a = ids(creds[0].tenant_id.clone()).await;
    let users_b = ids(creds[1].tenant_id.clone()).await;
    let assign = |token: &str, user: &str, sku: &str| {
        let req = http
            .post(format!("{}/users/{user}/assignLicense", emu.graph_url()))
            .bearer_auth(token)
            .json(&json!({"addLicenses": [{"skuId": sku, "disabledPlans": []}], "removeLicenses": []}));
        async move { into_res(req.send().await.expect("send")).await }
    };

    // Tenant A spends its whole budget and is throttled…
    for u in &users_a[..5] {
        assert_eq!(
            assign(&ta, u, ENTERPRISEPACK_SKU_ID).await.status.as_u16(),
            200
        );
    }
    let r = assign(&ta, &users_a[5], ENTERPRISEPACK_SKU_ID).await;
    assert_eq!(r.status.as_u16(), 429, "{}", r.body);
    let scope = r.header("x-ms-throttle-scope").expect("scope");
    assert_eq!(
        scope,
        format!(
            "Tenant_Application/Write/{}/{}",
            creds[0].client_id, creds[0].tenant_id
        )
    );
    // …while tenant B still has all of its own.
    for u in &users_b[..5] {
        let r = assign(&tb, u, SPE_E5_SKU_ID).await;
        assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    }
    let r = assign(&tb, &users_b[5], SPE_E5_SKU_ID).await;
    assert_eq!(r.status.as_u16(), 429);
    assert!(
        r.header("x-ms-throttle-scope")
            .is_some_and(|s| s.ends_with(&creds[1].tenant_id))
    );

    // Faults per tenant: B gets a fresh, larger budget and injected errors; A keeps its own.
    let r = control(
        &emu,
        &http,
        Method::PUT,
        &format!("/faults?tenant={}", creds[1].domain),
        Some(json!({"write_budget": {"limit": 50, "window_ms": 60000}, "error_rate": 1.0})),
    )
    .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    let fa = control(&emu, &http, Method::GET, "/faults", None)
        .await
        .body;
    assert_eq!(fa["write_budget"]["limit"], 5);
    assert_eq!(fa["error_rate"], 0.0);
    let r = assign(&tb, &users_b[6], SPE_E5_SKU_ID).await;
    assert_eq!(r.status.as_u16(), 503, "B's injected error");
    assert_eq!(
        assign(&ta, &users_a[6], ENTERPRISEPACK_SKU_ID)
            .await
            .status
            .as_u16(),
        429,
        "A: still its own budget and no injected errors"
    );
    // `*` sets every tenant.
    let r = control(
        &emu,
        &http,
        Method::PUT,
        "/faults?tenant=*",
        Some(json!({"write_budget": {"limit": 7, "window_ms": 1000}})),
    )
    .await;
    assert_eq!(r.status.as_u16(), 200);
    for t in &creds {
        let f = control(
            &emu,
            &http,
            Method::GET,
            &format!("/faults?tenant={}", t.tenant_id),
            None,
        )
        .await
        .body;
        assert_eq!(f["write_budget"]["limit"], 7);
    }
    assert_eq!(
        assign(&ta, &users_a[6], ENTERPRISEPACK_SKU_ID)
            .await
            .status
            .as_u16(),
        200
    );
    assert_eq!(
        assign(&tb, &users_b[6], SPE_E5_SKU_ID)
            .await
            .status
            .as_u16(),
        200
    );

    let sa = control(&emu, &http, Method::GET, "/stats", None).await.body;
    let sb = control(
        &emu,
        &http,
        Method::GET,
        &format!("/stats?tenant={}", creds[1].tenant_id),
        None,
    )
    .await
    .body;
    assert_eq!(sa["throttled"], 2);
    assert_eq!(sb["throttled"], 1);
    assert_eq!(sa["injected_errors"], 0);
    assert_eq!(sb["injected_errors"], 1);
    assert_eq!(sa["successful_writes"], 6);
    assert_eq!(sb["successful_writes"], 6);
    emu.shutdown().await;
}

#[tokio::test]
async fn a_scenario_body_takes_a_list_of_tenants_or_a_count() {
    let env = start(Scenario::simple(1, 10, 10)).await;

    // A count of tenants from a template sharing one app registration (a multi-tenant app).
    let mut template = Scenario::simple(40, 20, 20);
    template.client_id = Some("0f0e0d0c-0b0a-4000-8000-000000000042".into());
    template.client_secret = Some("shared-secret".into());
    let r = env
        .control(
            Method::POST,
            "/scenario",
            Some(json!({"count": 3, "template": template})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let tenants = r.body["tenants"].as_array().expect("tenants").clone();
    assert_eq!(tenants.len(), 3);
    let domains: Vec<&str> = tenants
        .iter()
        .filter_map(|t| t["domain"].as_str())
        .collect();
    assert_eq!(
        domains,
        [
            "contoso-1.onmicrosoft.com",
            "contoso-2.onmicrosoft.com",
            "contoso-3.onmicrosoft.com"
        ]
    );
    let ids: std::collections::HashSet<&str> = tenants
        .iter()
        .filter_map(|t| t["tenant_id"].as_str())
        .collect();
    assert_eq!(ids.len(), 3, "tenant ids differ");
    assert!(
        tenants
            .iter()
            .all(|t| t["client_id"] == "0f0e0d0c-0b0a-4000-8000-000000000042")
    );
    assert_eq!(
        env.emu.directory_tenant_id(),
        tenants[0]["tenant_id"].as_str().unwrap_or("")
    );

    // The tenants that were served are gone, and their tokens with them.
    assert_eq!(env.get("/groups").await.status.as_u16(), 401);

    // The same app's token from tenant 3's endpoint reads tenant 3 only, even though the app
    // (client id and secret) is the same everywhere.
    let creds = env.emu.tenants();
    let t3 = token_of(&env.emu, &env.http, &creds[2]).await;
    let t1 = token_of(&env.emu, &env.http, &creds[0]).await;
    let users = |tok: String| {
        let env = &env;
        async move {
            let path = "/users?$top=999&$select=userPrincipalName";
            names(
                &graph_get(&env.emu, &env.http, &tok, path).await,
                "userPrincipalName",
            )
        }
    };
    let u3 = users(t3).await;
    let u1 = users(t1).await;
    assert_eq!(u3.len(), 20);
    assert!(
        u3.iter().all(|u| u.ends_with("@contoso-3.onmicrosoft.com")),
        "{u3:?}"
    );
    assert!(u1.iter().all(|u| u.ends_with("@contoso-1.onmicrosoft.com")));

    // Reset keeps the tenants.
    assert_eq!(
        env.control(Method::POST, "/reset", None)
            .await
            .status
            .as_u16(),
        204
    );
    assert_eq!(env.emu.tenants(), creds);

    // A list of tenants; ids and domains must differ.
    let mut b = Scenario::simple(2, 5, 5);
    b.domain = "b.onmicrosoft.com".into();
    let r = env
        .control(
            Method::POST,
            "/scenario",
            Some(json!({"tenants": [Scenario::simple(1, 5, 5), b]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(env.emu.tenants().len(), 2);
    let r = env
        .control(
            Method::POST,
            "/scenario",
            Some(json!({"tenants": [Scenario::simple(1, 5, 5), Scenario::simple(1, 5, 5)]})),
        )
        .await;
    assert_eq!(r.status.as_u16(), 400);
    assert!(r.message().contains("tenants[1]"), "{}", r.body);
    let r = env
        .control(Method::POST, "/scenario", Some(json!({"count": 0})))
        .await;
    assert_eq!(r.body["error"]["field"], "count", "{}", r.body);
    let r = env
        .control(
            Method::POST,
            "/scenario",
            Some(json!({"count": 2, "template": {"tenant_id": "0a0b0c0d-0000-4000-8000-000000000001"}})),
        )
        .await;
    assert_eq!(r.body["error"]["field"], "template.tenant_id", "{}", r.body);
    let r = env
        .control(
            Method::POST,
            "/scenario",
            Some(json!({"count": 2, "tenants": [{}]})),
        )
        .await;
    assert_eq!(r.status.as_u16(), 400);
    assert_eq!(env.emu.tenants().len(), 2, "refused bodies change nothing");

    // One scenario again: one tenant, as before.
    let r = env
        .control(
            Method::POST,
            "/scenario",
            Some(serde_json::to_value(Scenario::simple(9, 4, 4)).expect("json")),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["users"], 4);
    assert_eq!(env.emu.tenants().len(), 1);
    env.emu.shutdown().await;
}
