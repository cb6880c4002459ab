//! Bearer-token authentication and role checks.

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use licensor_core::domain::Role;
use licensor_core::tokens::{self, Principal};

use super::AppState;
use super::problem::ApiError;

/// The authenticated caller. Every tenant-scoped handler takes one and passes its tenant id to
/// the store.
#[derive(Debug, Clone, Copy)]
pub struct Auth(pub Principal);

impl Auth {
    /// 403 unless the caller's role includes `needed`.
    pub fn require(&self, needed: Role) -> Result<Principal, ApiError> {
        if self.0.role.allows(needed) {
            Ok(self.0)
        } else {
            Err(ApiError::forbidden(format!(
                "this needs the {needed} role; the token has {}",
                self.0.role
            )))
        }
    }

    pub fn tenant_id(&self) -> uuid::Uuid {
        self.0.tenant_id
    }
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("send `Authorization: Bearer <token>`"))?;
        let value = header
            .to_str()
            .map_err(|_| ApiError::unauthorized("the Authorization header is not readable"))?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header must be `Bearer <token>`")
            })?;
        match tokens::authenticate(&state.db, token).await {
            Ok(Some(principal)) => {
                if let Some(limiter) = &state.rate_limit {
                    limiter.check(principal.token_id)?;
                }
                parts.extensions.insert(principal);
                Ok(Auth(principal))
            }
            Ok(None) => Err(ApiError::unauthorized("the token is unknown or revoked")),
            Err(e) => Err(ApiError::from(e)),
        }
    }
}

impl utoipa::Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Declares the bearer scheme in `/openapi.json`.
pub struct SecurityAddon;

/// A role a route needs, checked by [`As`].
pub trait NeededRole {
    const ROLE: Role;
}

/// `admin`: tokens, webhooks, submitting, launching and undoing jobs, seats and checkout.
#[derive(Debug, Clone, Copy)]
pub enum Admin {}

impl NeededRole for Admin {
    const ROLE: Role = Role::Admin;
}

/// `operator`: rerunning, cancelling and resuming jobs (one or many), checkin.
#[derive(Debug, Clone, Copy)]
pub enum Operator {}

impl NeededRole for Operator {
    const ROLE: Role = Role::Operator;
}

/// The authenticated caller, whose role includes `R`'s (`me`: the principal the role was
/// checked on). Refused 403 `forbidden` from the headers alone, before the request's body is
/// read, so a caller without the role learns nothing of what a body would be refused for (a
/// handler that took [`Auth`] and checked its role after its body answered a viewer's malformed
/// body 400 or 422, not 403).
#[derive(Debug, Clone, Copy)]
pub struct As<R: NeededRole> {
    pub auth: Auth,
    pub me: Principal,
    role: PhantomData<R>,
}

/// A caller with the `admin` role (see [`As`]).
pub type AsAdmin = As<Admin>;

/// A caller with the `operator` role (see [`As`]).
pub type AsOperator = As<Operator>;

impl<R: NeededRole> FromRequestParts<AppState> for As<R> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let auth = Auth::from_request_parts(parts, state).await?;
        let me = auth.require(R::ROLE)?;
        Ok(As {
            auth,
            me,
            role: PhantomData,
        })
    }
}
