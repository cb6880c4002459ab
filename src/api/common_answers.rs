//! The answers every route can give besides its own, written into `/openapi.json` once here so
//! that no route's description misses one: 401 and 429 (`Retry-After`) for a route that takes a
//! token, 403 for one that changes something, 400/413/415/422 for a JSON body (and for a body sent
//! to an action that takes none), 404 (and 400 for a
//! control character) for a path id, 400 for query parameters, 409 for a route that reads the tenant's directory
//! (`/v1/directory/…`), and the `Idempotency-Key` header with its answers on mutating POSTs.
//! A route's own description of a status wins.

use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{OpenApi, Ref, RefOr, Required};

use super::idempotency::not_kept;

pub fn document(doc: &mut OpenApi) {
    for (path, item) in doc.paths.paths.iter_mut() {
        let idempotent = !not_kept(path);
        let directory = path.starts_with("/v1/directory/");
        if let Some(op) = item.get.as_mut() {
            complete(op, false, false, directory);
        }
        if let Some(op) = item.post.as_mut() {
            complete(op, true, idempotent, directory);
        }
        for op in [&mut item.put, &mut item.patch, &mut item.delete]
            .into_iter()
            .flatten()
        {
            complete(op, true, false, directory);
        }
    }
}

fn complete(op: &mut Operation, mutating: bool, idempotent: bool, directory: bool) {
    let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
    let has = |place: ParameterIn| {
        op.parameters
            .iter()
            .flatten()
            .any(|p| matches!(p, RefOr::T(p) if p.parameter_in == place))
    };
    let (in_path, in_query) = (has(ParameterIn::Path), has(ParameterIn::Query));
    let has_body = op.request_body.is_some();
    let mut answers: Vec<(&str, Response)> = Vec::new();
    if secured {
        answers.push(("401", problem("No, malformed, unknown or revoked token")));
        answers.push(("429", rate_limited()));
        if mutating {
            answers.push(("403", problem("The token's role does not allow this")));
        }
    }
    if in_path {
        answers.push(("404", problem("No such object in the caller's tenant")));
        answers.push((
            "400",
            problem("A control character (such as NUL) in the path: `invalid_path`"),
        ));
    }
    if in_query {
        answers.push(("400", problem("A query parameter is not valid")));
    }
    if has_body {
        answers.push(("400", problem("The body is not JSON")));
        answers.push(("413", problem("The body is larger than the server accepts")));
        answers.push(("415", problem("The body is not sent as application/json")));
        answers.push((
            "422",
            problem("The body is JSON of the wrong shape, or its values are not acceptable"),
        ));
    }
    if mutating && !has_body {
        // The actions that take no body (`extract::NoBody`: a job's launch, rerun, cancel, undo
        // and resume, a token's revoke, a webhook endpoint's delete, rotate-secret and a
        // delivery's redeliver) refuse one before they act.
        answers.push(("400", problem("A body that is not JSON: `malformed_json`")));
        answers.push(("413", problem("The body is larger than the server accepts")));
        answers.push((
            "415",
            problem("A body sent as anything but application/json"),
        ));
        answers.push((
            "422",
            problem("A body other than nothing or `{}`: `invalid_body`"),
        ));
    }
    if secured && directory {
        answers.push((
            "409",
            problem("The tenant has no directory connection: `directory_not_configured`"),
        ));
    }
    if secured && idempotent {
        op.parameters.get_or_insert_with(Vec::new).push(RefOr::T(
            ParameterBuilder::new()
                .name("Idempotency-Key")
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(
                    "Makes a retry safe: a repeat with the same key and request returns the first \
                     answer and does nothing again (1–200 visible ASCII characters, kept 24 h)",
                ))
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .min_length(Some(1))
                        .max_length(Some(200))
                        .pattern(Some("^[!-~]+$")),
                ))
                .build(),
        ));
        answers.push(("400", problem("A malformed Idempotency-Key")));
        answers.push((
            "409",
            problem("The first request with this Idempotency-Key is still being answered"),
        ));
        answers.push((
            "422",
            problem("This Idempotency-Key was used for a different request"),
        ));
    }
    // One answer per status, saying each of its reasons.
    let mut merged: Vec<(&str, Response)> = Vec::new();
    for (status, answer) in answers {
        match merged.iter_mut().find(|(s, _)| *s == status) {
            Some((_, first)) => {
                first.description = format!("{}; {}", first.description, answer.description);
            }
            None => merged.push((status, answer)),
        }
    }
    for (status, answer) in merged {
        op.responses
            .responses
            .entry(status.to_owned())
            .or_insert(RefOr::T(answer));
    }
}

fn problem(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/problem+json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
}

fn rate_limited() -> Response {
    let mut response = problem("The token made too many requests: `rate_limited`");
    response.headers.insert(
        "Retry-After".to_owned(),
        RefOr::T(
            HeaderBuilder::new()
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(1)),
                ))
                .description(Some("Seconds to wait before the next request"))
                .build(),
        ),
    );
    response
}
