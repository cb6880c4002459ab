//! Helpers shared by the emulator's HTTP tests: start an emulator, get a token, call routes.
#![allow(dead_code)]

use graph_emulator::{EmulatorConfig, EmulatorHandle, Faults, Scenario};
use reqwest::header::HeaderMap;
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

pub struct Env {
    pub emu: EmulatorHandle,
    pub http: Client,
    pub token: String,
}

pub struct Res {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Res {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
    pub fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or("")
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub fn client() -> Client {
    Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .expect("client")
}

pub async fn start(scenario: Scenario) -> Env {
    start_with(scenario, Faults::default()).await
}

pub async fn start_with(scenario: Scenario, faults: Faults) -> Env {
    let emu = graph_emulator::spawn(EmulatorConfig {
        scenario: Some(scenario),
        faults,
        ..Default::default()
    })
    .await
    .expect("spawn");
    let http = client();
    let token = token(&emu, &http).await;
    Env { emu, http, token }
}

pub async fn token(emu: &EmulatorHandle, http: &Client) -> String {
    let res = http
        .post(emu.token_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &emu.client_id()),
            ("client_secret", &emu.client_secret()),
            ("scope", "https://graph.microsoft.com/.default"),
        ])
        .send()
        .await
        .expect("token request");
    assert_eq!(res.status(), StatusCode::OK);
    let v: Value = res.json().await.expect("token json");
    v["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

impl Env {
    /// A Graph call; `path` is relative to `/v1.0` (e.g. `/groups`) or an absolute URL.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Res {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{}", self.emu.graph_url(), path)
        };
        let mut rb = self.http.request(method, url).bearer_auth(&self.token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let res = rb.send().await.expect("send");
        into_res(res).await
    }

    pub async fn get(&self, path: &str) -> Res {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Res {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Res {
        self.call(Method::PATCH, path, Some(body)).await
    }

    pub async fn control(&self, method: Method, path: &str, body: Option<Value>) -> Res {
        let mut rb = self
            .http
            .request(method, format!("{}/_emulator{}", self.emu.base_url(), path));
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        into_res(rb.send().await.expect("send")).await
    }

    pub async fn summary(&self) -> Value {
        self.control(Method::GET, "/scenario", None).await.body
    }

    pub async fn group_id(&self, name: &str) -> String {
        let s = self.summary().await;
        s["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .find(|g| g["displayName"] == name)
            .and_then(|g| g["id"].as_str())
            .expect("group")
            .to_string()
    }

    /// Users in directory order.
    pub async fn users(&self, offset: usize, limit: usize) -> Vec<Value> {
        let r = self
            .control(
                Method::GET,
                &format!("/users?offset={offset}&limit={limit}"),
                None,
            )
            .await;
        r.body["value"].as_array().cloned().unwrap_or_default()
    }

    pub async fn user_id(&self, index: usize) -> String {
        self.users(index, 1).await[0]["id"]
            .as_str()
            .expect("id")
            .to_string()
    }

    pub async fn sku(&self, part: &str) -> Value {
        let r = self.get("/subscribedSkus").await;
        r.body["value"]
            .as_array()
            .expect("value")
            .iter()
            .find(|s| s["skuPartNumber"] == part)
            .cloned()
            .expect("sku")
    }

    pub async fn assign(&self, user: &str, sku: &str) -> Res {
        self.post(
            &format!("/users/{user}/assignLicense"),
            json!({"addLicenses": [{"skuId": sku, "disabledPlans": []}], "removeLicenses": []}),
        )
        .await
    }
}

pub async fn into_res(res: reqwest::Response) -> Res {
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.bytes().await.expect("body");
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Res {
        status,
        headers,
        body,
    }
}

/// Asserts Graph's error shape and returns the response for further checks.
pub fn assert_graph_error(r: &Res, status: u16, code: &str, message: &str) {
    assert_eq!(r.status.as_u16(), status, "status; body: {}", r.body);
    assert_eq!(r.code(), code, "error.code; body: {}", r.body);
    assert_eq!(r.message(), message, "error.message; body: {}", r.body);
    let inner = &r.body["error"]["innerError"];
    assert!(
        inner["date"].is_string(),
        "innerError.date; body: {}",
        r.body
    );
    assert!(inner["request-id"].is_string(), "innerError.request-id");
    assert!(
        inner["client-request-id"].is_string(),
        "innerError.client-request-id"
    );
    assert_eq!(
        r.header("request-id"),
        inner["request-id"].as_str(),
        "request-id header matches the body"
    );
}
