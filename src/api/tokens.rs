//! API tokens of the caller's tenant (admin only).

use axum::extract::State;
use axum::http::StatusCode;
use licensor_core::domain::Role;
use licensor_core::tokens::{self, TokenView};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::auth::AsAdmin;
use super::extract::{Json, NoBody, NoQuery, Path};
use super::problem::{ApiError, ApiResult};

#[derive(Serialize, ToSchema)]
pub struct TokenList {
    pub data: Vec<TokenView>,
}

/// The tenant's tokens (never their values).
#[utoipa::path(get, path = "/v1/tokens", tag = "tenant", security(("bearer" = [])), responses(
    (status = 200, body = TokenList),
    (status = 403, body = super::problem::Problem, content_type = "application/problem+json"),
))]
pub async fn list_tokens(
    State(state): State<AppState>,
    AsAdmin { me, .. }: AsAdmin,
    _: NoQuery,
) -> ApiResult<Json<TokenList>> {
    Ok(Json(TokenList {
        data: tokens::list(&state.db, me.tenant_id).await?,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// A label to recognise the token by (1–200 characters, trimmed; no control or bidirectional formatting character (a newline, a tab, ESC, a right-to-left override)).
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub name: String,
    pub role: Role,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub token: TokenView,
    /// The bearer token. Shown this once; only its hash is kept.
    pub secret: String,
}

/// Create a token for the caller's tenant.
#[utoipa::path(post, path = "/v1/tokens", tag = "tenant", security(("bearer" = [])), request_body = CreateToken, responses(
    (status = 201, body = CreatedToken),
))]
pub async fn create_token(
    State(state): State<AppState>,
    AsAdmin { me, .. }: AsAdmin,
    Json(body): Json<CreateToken>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    if let Err(why) = licensor_core::domain::name(&body.name) {
        return Err(ApiError::unprocessable(
            "invalid_name",
            format!("name {why}"),
        ));
    }
    let new = tokens::create(
        &state.db,
        me.tenant_id,
        body.role,
        &body.name,
        Some(me.token_id),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            token: new.view,
            secret: new.secret,
        }),
    ))
}

/// Revoke one of the tenant's tokens; it stops working at once.
#[utoipa::path(post, path = "/v1/tokens/{id}/revoke", tag = "tenant", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Token id")),
    responses(
        (status = 200, body = TokenView),
    ))]
pub async fn revoke_token(
    State(state): State<AppState>,
    AsAdmin { me, .. }: AsAdmin,
    Path(id): Path<Uuid>,
    _body: NoBody,
) -> ApiResult<Json<TokenView>> {
    Ok(Json(
        tokens::revoke(&state.db, me.tenant_id, id, Some(me.token_id)).await?,
    ))
}
