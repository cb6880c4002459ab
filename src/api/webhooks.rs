//! Webhook endpoints of the caller's tenant and their delivery log (admin only): create, list,
//! read, update (or disable), delete, rotate the signing secret, list deliveries, redeliver.

use axum::extract::State;
use axum::http::StatusCode;
use licensor_core::page::PageRequest;
use licensor_core::queue::Message;
use licensor_core::webhooks::EventType;
use licensor_core::webhooks::deliveries::{self, DeliveryStatus, DeliveryView};
use licensor_core::webhooks::endpoints::{self, EndpointUpdate, EndpointView, NewEndpoint};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AppState;
use super::auth::AsAdmin;
use super::extract::{Created, Filters, Json, NoBody, NoQuery, Path, Query, created};
use super::problem::{ApiResult, Problem};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page size, 1–500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookList {
    pub data: Vec<EndpointView>,
    pub next_cursor: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// Where deliveries are POSTed: `https://…`, or `http://…` to a host listed in the
    /// `webhooks.allow_http_hosts` setting (at most 2,048 characters, no user or password); a
    /// host written as an internal address (loopback, private, link-local such as
    /// 169.254.169.254, reserved) only if listed there too; anything else → 422
    /// `webhook_url_not_allowed`. A host name that resolves only to internal addresses is not
    /// reached when a delivery is made (the attempt fails as one that could not connect).
    #[schema(max_length = 2048, example = "https://hooks.example.com/licensor")]
    pub url: String,
    /// The events to receive (at least one).
    #[schema(min_items = 1)]
    pub events: Vec<EventType>,
    /// At most 500 characters.
    #[serde(default)]
    #[schema(max_length = 500)]
    pub description: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    pub webhook: EndpointView,
    /// The signing secret (`whsec_` + base64 of 32 random bytes). Shown this once; licensor
    /// keeps it encrypted. Verify `webhook-signature` with it (Standard Webhooks).
    pub secret: String,
}

/// Distinguishes a field that is absent (`None`) from one set to `null` (`Some(None)`).
fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhook {
    /// As at creation.
    #[schema(max_length = 2048)]
    pub url: Option<String>,
    #[schema(min_items = 1)]
    pub events: Option<Vec<EventType>>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, nullable, max_length = 500)]
    pub description: Option<Option<String>>,
    /// `false` stops deliveries to it: no new ones, and pending ones fail at their next try.
    pub enabled: Option<bool>,
}

/// The tenant's webhook endpoints, newest first (admin).
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks", security(("bearer" = [])), params(PageQuery), responses(
    (status = 200, body = WebhookList),
    (status = 403, body = Problem, content_type = "application/problem+json"),
))]
pub async fn list_webhooks(
    State(state): State<AppState>,
    AsAdmin { me, .. }: AsAdmin,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<WebhookList>> {
    let page = PageRequest::<Uuid>::parse_in("webhooks", q.limit, q.cursor.as_deref())?;
    let page = endpoints::list(&state.db, me.tenant_id, &page).await?;
    Ok(Json(WebhookList {
        data: page.data,
        next_cursor: page.next_cursor,
    }))
}

/// Create an endpoint (admin). The answer holds its signing secret, shown this once (so an
/// `Idempotency-Key` is not kept for it). A URL that is not `https://`, or `http://` to an
/// allowed host, or that names an internal address of a host not allowed → 422
/// `webhook_url_not_allowed`; no events → 422 `invalid_events`; more than
/// 50 endpoints → 409 `too_many_webhooks`.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", security(("bearer" = [])), request_body = CreateWebhook, responses(
    (status = 201, body = CreatedWebhook, headers(("Location" = String, description = "The endpoint's URL"))),
    (status = 409, body = Problem, content_type = "application/problem+json"),
))]
pub async fn create_webhook(
    State(state): State<AppState>,
    AsAdmin { me, .. }: AsAdmin,
    Json(body): Json<CreateWebhook>,
) -> ApiResult<Created<CreatedWebhook>> {
    let (webhook, secret) = endpoints::create(
        &state.db,
        &state.webhooks,
        me.tenant_id,
        NewEndpoint {
            url: body.url,
            events: body.events,
            description: body.description,
        },
        Some(me.token_id),
    )
    .await?;
    Ok(created(
        format!("/v1/webhooks/{}", webhook.id),
        CreatedWebhook { webhook, secret },
    ))
}

/// One endpoint (admin).
#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Webhook endpoint id")),
    responses(
        (status = 200, body = EndpointView),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_webhook(
    State(state): State<AppState>,
    AsAdmin { me, .. }: AsAdmin,
    _: NoQuery,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<EndpointView>> {
    Ok(Json(endpoints::get(&state.db, me.tenant_id, id).await?))
}

/// Change an endpoint's URL, events, description, or disable it (admin); checked as at
/// creation.
#[utoipa::path(patch, path = "/v1/webhooks/{id}", tag = "webhooks", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Webhook endpoint id")),
    request_body = UpdateWebhook,
    responses(
        (status = 200, body = EndpointView),
    ))]
pub async fn update_webhook(
    State(state): State<AppState>,
    AsAdmin { me, .. }: AsAdmin,
    Path(id): Path<Uuid>,
    Json(body): Json<UpdateWebhook>,
) -> ApiResult<Json<EndpointView>> {
    Ok(Json(
        endpoints::update(
            &state.db,
            &state.webhooks,
            me.tenant_id,
            id,
            EndpointUpdate {
                url: body.url,
                events: body.events,
                description: body.description,
                enabled: body.enabled,
            },
            Some(me.token_id),
        )
        .await?,
    ))
}

/// Delete an endpoint with its delivery log (admin); deliveries not yet made are dropped.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Webhook endpoint id")),
    responses(
        (status = 204, description = "Deleted"),
    ))]
pub async fn delete_webhook(
    State(state): State<AppState>,
    AsAdmin { me, .. }: AsAdmin,
    Path(id): Path<Uuid>,
    _body: NoBody,
) -> ApiResult<StatusCode> {
    endpoints::delete(&state.db, me.tenant_id, id, Some(me.token_id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Give an endpoint a new signing secret, shown this once (admin); attempts from now on are
/// signed with it.
#[utoipa::path(post, path = "/v1/webhooks/{id}/rotate-secret", tag = "webhooks", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Webhook endpoint id")),
    responses(
        (status = 200, body = CreatedWebhook),
    ))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    AsAdmin { me, .. }: AsAdmin,
    Path(id): Path<Uuid>,
    _body: NoBody,
) -> ApiResult<Json<CreatedWebhook>> {
    let (webhook, secret) = endpoints::rotate_secret(
        &state.db,
        &state.webhooks,
        me.tenant_id,
        id,
        Some(me.token_id),
    )
    .await?;
    Ok(Json(CreatedWebhook { webhook, secret }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// Comma-separated statuses: pending, delivered, failed.
    pub status: Option<String>,
    /// Page size, 1–500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryList {
    pub data: Vec<DeliveryView>,
    pub next_cursor: Option<String>,
}

/// An endpoint's deliveries, newest first (admin): event, job, status (`pending`, `delivered`,
/// `failed`), attempts, the last answer's code, the next try, and the last attempts.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Webhook endpoint id"), DeliveriesQuery),
    responses(
        (status = 200, body = DeliveryList),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    AsAdmin { me, .. }: AsAdmin,
    Path(id): Path<Uuid>,
    Query(q): Query<DeliveriesQuery>,
    filters: Filters,
) -> ApiResult<Json<DeliveryList>> {
    let statuses: Vec<DeliveryStatus> = super::jobs::csv_param("status", q.status.as_deref())?;
    let page = PageRequest::<Uuid>::parse_in(
        filters.scope(format_args!("deliveries:{id}")),
        q.limit,
        q.cursor.as_deref(),
    )?;
    let page = deliveries::list(&state.db, me.tenant_id, id, &statuses, &page).await?;
    Ok(Json(DeliveryList {
        data: page.data,
        next_cursor: page.next_cursor,
    }))
}

/// Send a delivered or failed delivery again, with the same `webhook-id` and a fresh retry
/// window (admin) → 202. A pending one → 409 `delivery_pending`.
#[utoipa::path(post, path = "/v1/webhooks/{id}/deliveries/{delivery_id}/redeliver", tag = "webhooks", security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "Webhook endpoint id"),
        ("delivery_id" = Uuid, Path, description = "Delivery id"),
    ),
    responses(
        (status = 202, body = DeliveryView),
        (status = 409, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn redeliver(
    State(state): State<AppState>,
    AsAdmin { me, .. }: AsAdmin,
    Path((id, delivery_id)): Path<(Uuid, Uuid)>,
    _body: NoBody,
) -> ApiResult<(StatusCode, Json<DeliveryView>)> {
    let delivery =
        deliveries::redeliver(&state.db, me.tenant_id, id, delivery_id, Some(me.token_id)).await?;
    let message = Message::Deliver {
        tenant_id: me.tenant_id,
        delivery_id,
    };
    if let Err(e) = state.queue.push(message).await {
        // The delivery is pending and due: the reconciler queues it.
        tracing::warn!(delivery = %delivery_id, error = %e, "queueing a redelivery failed; the reconciler will");
    }
    Ok((StatusCode::ACCEPTED, Json(delivery)))
}

/// Queue the webhook deliveries a job's end just recorded (after a cancel). Never fails the
/// request: what is not queued now, the reconciler queues.
pub(crate) async fn queue_job_events(state: &AppState, job_id: Uuid) {
    if let Err(e) = deliveries::queue_for_job(&state.db, &state.queue, job_id).await {
        tracing::warn!(job = %job_id, error = %e, "queueing webhook deliveries failed; the reconciler will");
    }
}
