//! Secrets never reach the logs: the real `licensor` binary, with debug logging (`LICENSOR_LOG`
//! and `RUST_LOG`), creates a tenant whose directory is the emulator (client secret from an
//! environment variable), mints a token, serves and works a job to its end through HTTP; then
//! nothing it printed holds an API token, the client secret, an access token the directory
//! issued (a JWT, `eyJ…`), or any `Authorization` header value. On the embedded default (one
//! `serve` process) and on PostgreSQL + Redis (`serve --no-worker` and a `worker`).

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Backend, PgDatabase, Processes, RedisNamespace};
use graph_emulator::{ENTERPRISEPACK_SKU_ID, EmulatorConfig, Scenario};
use serde_json::{Value, json};

/// The binary with debug logging and only the variables a test sets.
fn licensor(env: &[(String, String)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_licensor"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("LICENSOR_LOG", "debug")
        .env("RUST_LOG", "debug")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null());
    cmd
}

/// Where a process's stdout and stderr go.
fn log_files(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{name}.stdout")),
        dir.join(format!("{name}.stderr")),
    )
}

/// Run a command to its end; its output is kept under `logs`. Returns stdout.
fn run(mut cmd: Command, logs: &Path, name: &str) -> String {
    let out = cmd.output().expect("run licensor");
    let (o, e) = log_files(logs, name);
    std::fs::write(&o, &out.stdout).unwrap();
    std::fs::write(&e, &out.stderr).unwrap();
    assert!(
        out.status.success(),
        "licensor {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Start a long-running command with its output going to files under `logs`.
fn spawn(mut cmd: Command, logs: &Path, name: &str) -> Child {
    let (o, e) = log_files(logs, name);
    cmd.stdout(File::create(o).unwrap())
        .stderr(File::create(e).unwrap())
        .spawn()
        .expect("start licensor")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("licensor did not stop within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn get_json(http: &reqwest::Client, url: &str, token: &str) -> Value {
    let resp = http.get(url).bearer_auth(token).send().await.unwrap();
    assert!(resp.status().is_success(), "GET {url}: {}", resp.status());
    resp.json().await.unwrap()
}

async fn no_secret_in_the_logs(backend: Backend) {
    let logs = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut env = vec![
        (
            "LICENSOR_DATA_DIR".to_owned(),
            data.path().display().to_string(),
        ),
        (
            "LICENSOR_SECRET_KEY".to_owned(),
            common::SECRET_KEY.to_owned(),
        ),
    ];
    // PostgreSQL + Redis: dropped at the end of the test.
    let mut _pg = None;
    let mut _redis = None;
    if backend == Backend::Production {
        let (Some(pg_url), Some(redis_url)) = (common::postgres_url(), common::redis_url()) else {
            return;
        };
        let pg = PgDatabase::create(&pg_url).await;
        let ns = RedisNamespace::new(&redis_url);
        env.push(("LICENSOR_DATABASE_URL".into(), pg.url.clone()));
        env.push(("LICENSOR_QUEUE_URL".into(), redis_url));
        env.push(("LICENSOR_QUEUE_NAME".into(), ns.prefix.clone()));
        _pg = Some(pg);
        _redis = Some(ns);
    }

    let client_secret = format!("cs~{}", uuid::Uuid::new_v4().simple());
    let emulator = graph_emulator::spawn(EmulatorConfig {
        scenario: Some(Scenario {
            client_secret: Some(client_secret.clone()),
            ..Scenario::simple(4711, 60, 1_000)
        }),
        ..Default::default()
    })
    .await
    .expect("emulator starts");

    let mut create = licensor(&env);
    create
        .args(["tenant", "create", "--name", "contoso"])
        .args(["--directory-url", &emulator.base_url()])
        .args(["--directory-tenant-id", &emulator.directory_tenant_id()])
        .args(["--client-id", &emulator.client_id()])
        .args(["--client-secret-env", "CONTOSO_CLIENT_SECRET"])
        .env("CONTOSO_CLIENT_SECRET", &client_secret);
    run(create, logs.path(), "tenant-create");
    let mut token = licensor(&env);
    token.args(["token", "create", "--tenant", "contoso", "--role", "admin"]);
    // The token is printed once, on stdout: that is its delivery, not a log.
    let token = run(token, logs.path(), "token-create").trim().to_owned();
    std::fs::remove_file(log_files(logs.path(), "token-create").0).unwrap();
    assert!(token.starts_with("lic_"), "{token}");

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut serve = licensor(&env);
    serve
        .arg("serve")
        .env("LICENSOR_LISTEN", format!("127.0.0.1:{port}"));
    let mut processes = Processes(Vec::new());
    if backend == Backend::Production {
        serve.arg("--no-worker");
        processes.0.push(spawn(serve, logs.path(), "serve"));
        let mut worker = licensor(&env);
        worker.arg("worker");
        processes.0.push(spawn(worker, logs.path(), "worker"));
    } else {
        processes.0.push(spawn(serve, logs.path(), "serve"));
    }

    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            break;
        }
        assert!(Instant::now() < deadline, "licensor did not get ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A wrong token and a malformed header: refused, and not logged either.
    let wrong = format!("lic_{}", uuid::Uuid::new_v4().simple());
    let resp = http
        .get(format!("{base}/v1/jobs"))
        .bearer_auth(&wrong)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = http
        .get(format!("{base}/v1/jobs"))
        .header("authorization", format!("Token {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // A whole job: pickers, submit (with an Idempotency-Key), work, report.
    let groups = get_json(
        &http,
        &format!("{base}/v1/directory/groups?search=All"),
        &token,
    )
    .await;
    let group = groups["data"][0]["id"].as_str().unwrap().to_owned();
    get_json(&http, &format!("{base}/v1/directory/skus"), &token).await;
    let resp = http
        .post(format!("{base}/v1/jobs"))
        .bearer_auth(&token)
        .header("idempotency-key", "secrets-job-1")
        .json(&json!({"kind": "assign", "groups": [group], "add_licenses": [{"sku_id": ENTERPRISEPACK_SKU_ID}], "usage_location": "SE"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let job: Value = resp.json().await.unwrap();
    let job = job["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(120);
    let finished = loop {
        let j = get_json(&http, &format!("{base}/v1/jobs/{job}"), &token).await;
        if ["finished", "finished_with_exception", "failed"]
            .contains(&j["status"].as_str().unwrap())
        {
            break j;
        }
        assert!(Instant::now() < deadline, "job did not end: {j}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(finished["status"], "finished", "{finished}");
    assert_eq!(finished["progress"]["succeeded"], 60, "{finished}");
    let report = http
        .get(format!("{base}/v1/jobs/{job}/report?format=json"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let me = get_json(&http, &format!("{base}/v1/tenant"), &token).await;
    for answer in [&report, &me.to_string()] {
        assert!(!answer.contains(&client_secret) && !answer.contains(&token));
    }

    for child in &mut processes.0 {
        stop(child);
    }
    emulator.shutdown().await;

    // Every line every process printed.
    let mut text = String::new();
    for entry in std::fs::read_dir(logs.path()).unwrap() {
        let path = entry.unwrap().path();
        text.push_str(&std::fs::read_to_string(&path).unwrap());
    }
    eprintln!(
        "{backend:?}: {} log lines, {} at DEBUG",
        text.lines().count(),
        text.lines().filter(|l| l.contains("DEBUG")).count()
    );
    assert!(
        text.contains("DEBUG"),
        "debug logging was on: {} bytes",
        text.len()
    );
    assert!(
        text.lines().count() > 50,
        "the processes logged their work: {text}"
    );
    let secret_part = token.trim_start_matches("lic_");
    let wrong_part = wrong.trim_start_matches("lic_");
    let forbidden: [(&str, &str); 7] = [
        ("the API token", secret_part),
        ("the wrong API token", wrong_part),
        ("the client secret", &client_secret),
        ("a bearer credential", "Bearer "),
        ("a JWT (directory access token)", "eyJ"),
        ("an Authorization header", "authorization: "),
        ("a Basic credential", "Basic "),
    ];
    for (what, needle) in forbidden {
        let hit = text.lines().find(|l| {
            if needle == "authorization: " {
                l.to_ascii_lowercase().contains(needle)
            } else {
                l.contains(needle)
            }
        });
        assert!(
            hit.is_none(),
            "{what} in the logs: {}",
            hit.unwrap_or_default()
        );
    }
}
on_both_backends!(no_secret_in_the_logs);
