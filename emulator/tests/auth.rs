//! Token endpoint and bearer-token checks on Graph routes.

mod common;

use common::*;
use graph_emulator::{Faults, Scenario};
use reqwest::StatusCode;
use serde_json::Value;

async fn token_call(env: &Env, url: &str, form: &[(&str, &str)]) -> Res {
    into_res(env.http.post(url).form(form).send().await.expect("send")).await
}

#[tokio::test]
async fn client_credentials_token_is_issued() {
    let env = start(Scenario::simple(1, 10, 10)).await;
    let r = token_call(
        &env,
        &env.emu.token_url(),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &env.emu.client_id()),
            ("client_secret", &env.emu.client_secret()),
            ("scope", "https://graph.microsoft.com/.default"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["token_type"], "Bearer");
    assert_eq!(r.body["expires_in"], 3599);
    assert_eq!(r.body["ext_expires_in"], 3599);
    let tok = r.body["access_token"].as_str().expect("token");
    assert_eq!(tok.matches('.').count(), 2, "a JWT");
    // The tenant's domain name works as well as its id.
    let by_domain = format!(
        "{}/contoso.onmicrosoft.com/oauth2/v2.0/token",
        env.emu.base_url()
    );
    let r = token_call(
        &env,
        &by_domain,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &env.emu.client_id()),
            ("client_secret", &env.emu.client_secret()),
            ("scope", "https://graph.microsoft.com/.default"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    env.emu.shutdown().await;
}

fn assert_aad(r: &Res, status: u16, error: &str, code: u64) {
    assert_eq!(r.status.as_u16(), status, "{}", r.body);
    assert_eq!(r.body["error"], error);
    assert_eq!(r.body["error_codes"], Value::from(vec![code]));
    let desc = r.body["error_description"].as_str().expect("description");
    assert!(desc.starts_with(&format!("AADSTS{code}: ")), "{desc}");
    assert!(desc.contains("\r\nTrace ID: "), "{desc}");
    assert!(r.body["trace_id"].is_string() && r.body["correlation_id"].is_string());
    assert!(r.body["timestamp"].is_string());
    assert_eq!(
        r.body["error_uri"],
        format!("https://login.microsoftonline.com/error?code={code}")
    );
}

#[tokio::test]
async fn token_errors_are_aadsts_bodies() {
    let env = start(Scenario::simple(1, 10, 10)).await;
    let url = env.emu.token_url();
    let cid = env.emu.client_id();
    let secret = env.emu.client_secret();
    let scope = "https://graph.microsoft.com/.default";

    let r = token_call(
        &env,
        &url,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &cid),
            ("client_secret", "wrong"),
            ("scope", scope),
        ],
    )
    .await;
    assert_aad(&r, 401, "invalid_client", 7000215);
    assert!(
        r.body["error_description"]
            .as_str()
            .unwrap_or("")
            .contains("Invalid client secret provided.")
    );

    let r = token_call(
        &env,
        &url,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &cid),
            ("scope", scope),
        ],
    )
    .await;
    assert_aad(&r, 401, "invalid_client", 7000216);

    let r = token_call(
        &env,
        &url,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "00000000-0000-0000-0000-000000000001"),
            ("client_secret", &secret),
            ("scope", scope),
        ],
    )
    .await;
    assert_aad(&r, 400, "unauthorized_client", 700016);

    let other_tenant = format!(
        "{}/11111111-2222-3333-4444-555555555555/oauth2/v2.0/token",
        env.emu.base_url()
    );
    let r = token_call(
        &env,
        &other_tenant,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &cid),
            ("client_secret", &secret),
            ("scope", scope),
        ],
    )
    .await;
    assert_aad(&r, 400, "invalid_request", 90002);

    let r = token_call(
        &env,
        &url,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &cid),
            ("client_secret", &secret),
        ],
    )
    .await;
    assert_aad(&r, 400, "invalid_request", 90014);

    let r = token_call(
        &env,
        &url,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &cid),
            ("client_secret", &secret),
            ("scope", "User.Read"),
        ],
    )
    .await;
    assert_aad(&r, 400, "invalid_scope", 1002012);

    let r = token_call(
        &env,
        &url,
        &[
            ("grant_type", "password"),
            ("client_id", &cid),
            ("scope", scope),
        ],
    )
    .await;
    assert_aad(&r, 400, "unsupported_grant_type", 70003);

    let r = token_call(&env, &url, &[("client_id", &cid)]).await;
    assert_aad(&r, 400, "invalid_request", 900144);
    env.emu.shutdown().await;
}

#[tokio::test]
async fn graph_rejects_missing_malformed_unknown_and_expired_tokens() {
    let env = start_with(
        Scenario::simple(1, 10, 10),
        Faults {
            token_lifetime_secs: 1,
            ..Default::default()
        },
    )
    .await;
    let url = format!("{}/groups", env.emu.graph_url());

    let r = into_res(env.http.get(&url).send().await.expect("send")).await;
    assert_graph_error(
        &r,
        401,
        "InvalidAuthenticationToken",
        "Access token is empty.",
    );
    assert!(r.header("www-authenticate").is_some());

    let r = into_res(
        env.http
            .get(&url)
            .bearer_auth("garbage")
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(r.status.as_u16(), 401);
    assert_eq!(r.code(), "InvalidAuthenticationToken");
    assert!(r.message().starts_with("IDX14100: JWT is not well formed"));

    let r = into_res(
        env.http
            .get(&url)
            .bearer_auth("eyJ0eXAiOiJKV1QifQ.eyJhdWQiOiJ4In0.c2ln")
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(r.status.as_u16(), 401);
    assert_eq!(r.code(), "InvalidAuthenticationToken");

    // The token from start() lives one second.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = env.get("/groups").await;
    assert_graph_error(
        &r,
        401,
        "InvalidAuthenticationToken",
        "Lifetime validation failed, the token is expired.",
    );
    env.emu.shutdown().await;
}

#[tokio::test]
async fn client_request_id_is_echoed() {
    let env = start(Scenario::simple(1, 10, 10)).await;
    let res = env
        .http
        .get(format!("{}/groups", env.emu.graph_url()))
        .bearer_auth(&env.token)
        .header("client-request-id", "0b1c2d3e-aaaa-bbbb-cccc-000000000001")
        .send()
        .await
        .expect("send");
    assert_eq!(
        res.headers()
            .get("client-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("0b1c2d3e-aaaa-bbbb-cccc-000000000001")
    );
    assert!(res.headers().get("request-id").is_some());
    env.emu.shutdown().await;
}

#[tokio::test]
async fn client_secret_basic_is_accepted() {
    use base64::Engine;
    let env = start(Scenario::simple(1, 10, 10)).await;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        env.emu.client_id(),
        env.emu.client_secret()
    ));
    let res = env
        .http
        .post(env.emu.token_url())
        .header("Authorization", format!("Basic {basic}"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "https://graph.microsoft.com/.default"),
        ])
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), StatusCode::OK);
    env.emu.shutdown().await;
}
