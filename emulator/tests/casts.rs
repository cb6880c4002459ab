//! Type-cast segments after `members` / `transitiveMembers`: the short form Microsoft's SDKs send
//! (`graph.user`) answers exactly as the qualified one (`microsoft.graph.user`), pages and
//! `$count` included.

mod common;

use common::*;
use graph_emulator::{GroupSpec, Scenario};
use reqwest::StatusCode;
use serde_json::{Value, json};

const CASTS: [&str; 4] = ["user", "group", "device", "orgContact"];
const RELATIONS: [&str; 2] = ["members", "transitiveMembers"];

/// Outer: 30 users, 2 devices, 3 contacts and the nested group Inner (20 users, 1 device, and
/// the nested group Core with 5 users and 1 contact).
fn scenario() -> Scenario {
    let mut s = Scenario::demo();
    s.users = 500;
    s.groups = vec![
        GroupSpec {
            nested_groups: vec!["Inner".into()],
            devices: 2,
            contacts: 3,
            ..GroupSpec::new("Outer", 30)
        },
        GroupSpec {
            nested_groups: vec!["Core".into()],
            devices: 1,
            ..GroupSpec::new("Inner", 20)
        },
        GroupSpec {
            contacts: 1,
            ..GroupSpec::new("Core", 5)
        },
    ];
    s
}

/// Every page of a listing: (status, body) per page, following `@odata.nextLink`.
async fn pages(env: &Env, first: &str) -> Vec<(StatusCode, Value)> {
    let mut out = Vec::new();
    let mut next = Some(first.to_string());
    while let Some(url) = next {
        let r = env.get(&url).await;
        next = r.body["@odata.nextLink"].as_str().map(str::to_string);
        out.push((r.status, r.body));
        assert!(out.len() < 100, "paging does not end");
    }
    out
}

async fn raw_count(env: &Env, path: &str, eventual: bool) -> Res {
    let mut rb = env
        .http
        .get(format!("{}{path}", env.emu.graph_url()))
        .bearer_auth(&env.token);
    if eventual {
        rb = rb.header("ConsistencyLevel", "eventual");
    }
    into_res(rb.send().await.expect("send")).await
}

#[tokio::test]
async fn short_cast_segments_answer_as_the_qualified_ones() {
    let env = start(scenario()).await;
    let outer = env.group_id("Outer").await;
    let inner = env.group_id("Inner").await;
    let core = env.group_id("Core").await;
    let s = env.summary().await;
    let users_of = |name: &str, key: &str| -> u64 {
        s["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .find(|g| g["displayName"] == name)
            .and_then(|g| g[key].as_u64())
            .expect("count")
    };
    // (relation, cast) → members expected, from the scenario.
    let expected = |rel: &str, cast: &str| -> u64 {
        match (rel, cast) {
            ("members", "user") => users_of("Outer", "userMembers"),
            ("members", "group") => 1,
            ("members", "device") => 2,
            ("members", "orgContact") => 3,
            (_, "user") => users_of("Outer", "transitiveUserMembers"),
            (_, "group") => 2,
            (_, "device") => 3,
            _ => 4,
        }
    };
    assert_eq!(users_of("Outer", "userMembers"), 30);
    assert!(users_of("Outer", "transitiveUserMembers") > 30);

    for rel in RELATIONS {
        for cast in CASTS {
            let want = expected(rel, cast);
            // As the SDKs page ($top=999) and with a small page, so that nextLinks are followed.
            for query in ["?$top=999", "?$top=7&$select=id,displayName"] {
                let short =
                    pages(&env, &format!("/groups/{outer}/{rel}/graph.{cast}{query}")).await;
                let long = pages(
                    &env,
                    &format!("/groups/{outer}/{rel}/microsoft.graph.{cast}{query}"),
                )
                .await;
                assert_eq!(
                    short, long,
                    "{rel}/graph.{cast}{query} answers as {rel}/microsoft.graph.{cast}{query}"
                );
                let mut seen = 0u64;
                for (status, body) in &short {
                    assert_eq!(*status, StatusCode::OK, "{rel}/graph.{cast}: {body}");
                    for m in body["value"].as_array().expect("value") {
                        assert_eq!(m["@odata.type"], format!("#microsoft.graph.{cast}"));
                        assert!(m["id"].is_string());
                        seen += 1;
                    }
                }
                assert_eq!(seen, want, "{rel}/graph.{cast}{query}");
            }

            // $count after either form: the same number, with ConsistencyLevel: eventual.
            for form in ["graph", "microsoft.graph"] {
                let path = format!("/groups/{outer}/{rel}/{form}.{cast}/$count");
                let r = raw_count(&env, &path, true).await;
                assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
                assert_eq!(r.header("content-type"), Some("text/plain"));
                let n = r.body.as_u64().or_else(|| r.body.as_str()?.parse().ok());
                assert_eq!(n, Some(want), "{path}");
                let r = raw_count(&env, &path, false).await;
                assert_graph_error(
                    &r,
                    400,
                    "Request_UnsupportedQuery",
                    "Raw count (/$count) is not supported because the 'ConsistencyLevel:eventual' header is missing. Refer to https://aka.ms/graph-docs/advanced-queries for more information",
                );
            }
        }
        // The uncast count follows the same rule.
        let path = format!("/groups/{outer}/{rel}/$count");
        let r = raw_count(&env, &path, true).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
        let all: u64 = CASTS.iter().map(|c| expected(rel, c)).sum();
        assert_eq!(r.body.as_u64(), Some(all), "{path}");
        assert_eq!(
            raw_count(&env, &path, false).await.code(),
            "Request_UnsupportedQuery"
        );
    }

    // Nested groups answer for themselves: Inner's direct users through the short form.
    let direct = pages(&env, &format!("/groups/{inner}/members/graph.user")).await;
    assert_eq!(direct[0].1["value"].as_array().map(Vec::len), Some(20));
    let groups = pages(&env, &format!("/groups/{inner}/members/graph.group")).await;
    assert_eq!(groups[0].1["value"][0]["id"], core.as_str());

    // The SDKs batch the same URLs.
    let r = env
        .post(
            "/$batch",
            json!({"requests": [
                {"id": "1", "method": "GET", "url": format!("/groups/{outer}/members/graph.user?$top=999")},
                {"id": "2", "method": "GET", "url": format!("/groups/{outer}/transitiveMembers/graph.orgContact")},
                {"id": "3", "method": "GET", "url": format!("/groups/{outer}/members/graph.user/$count"),
                 "headers": {"ConsistencyLevel": "eventual"}},
            ]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let item = |id: &str| {
        r.body["responses"]
            .as_array()
            .expect("responses")
            .iter()
            .find(|x| x["id"] == id)
            .cloned()
            .expect("item")
    };
    assert_eq!(item("1")["status"], 200);
    assert_eq!(
        item("1")["body"]["value"].as_array().map(Vec::len),
        Some(30)
    );
    assert_eq!(item("2")["status"], 200);
    assert_eq!(item("2")["body"]["value"].as_array().map(Vec::len), Some(4));
    assert_eq!(item("3")["status"], 200, "{}", item("3"));
    assert_eq!(item("3")["body"], 30);
    env.emu.shutdown().await;
}

#[tokio::test]
async fn unknown_cast_segments_are_refused_in_either_form() {
    let env = start(scenario()).await;
    let outer = env.group_id("Outer").await;
    for rel in RELATIONS {
        for seg in [
            "graph.nothing",
            "microsoft.graph.nothing",
            "graph.",
            "graph",
            "microsoft.graph.graph.user",
            "ms.graph.user",
        ] {
            let r = env.get(&format!("/groups/{outer}/{rel}/{seg}")).await;
            assert_graph_error(
                &r,
                400,
                "BadRequest",
                &format!("Resource not found for the segment '{seg}'."),
            );
            let r = raw_count(&env, &format!("/groups/{outer}/{rel}/{seg}/$count"), true).await;
            assert_eq!(r.status.as_u16(), 400, "{rel}/{seg}/$count: {}", r.body);
            assert_eq!(
                r.message(),
                format!("Resource not found for the segment '{seg}'.")
            );
        }
        // An unknown group through the short form: 404 as through the long one.
        for form in ["graph.user", "microsoft.graph.user"] {
            let r = env
                .get(&format!(
                    "/groups/11111111-2222-3333-4444-555555555555/{rel}/{form}"
                ))
                .await;
            assert_eq!(r.status.as_u16(), 404, "{rel}/{form}");
            assert_eq!(r.code(), "Request_ResourceNotFound");
        }
    }
    env.emu.shutdown().await;
}
