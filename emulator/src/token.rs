//! The Microsoft identity platform token endpoint (`/{tenant}/oauth2/v2.0/token`), client
//! credentials grant only, with AADSTS error bodies.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use serde_json::json;
use uuid::Uuid;

use crate::error::GraphError;
use crate::state::{AppState, Tenant, TokenInfo, bearer};

fn aad_error(status: StatusCode, error: &str, code: u32, description: String) -> Response {
    let trace = Uuid::new_v4();
    let corr = Uuid::new_v4();
    let now = chrono::Utc::now();
    let ts = now.format("%Y-%m-%d %H:%M:%SZ").to_string();
    let desc = format!(
        "AADSTS{code}: {description}\r\nTrace ID: {trace}\r\nCorrelation ID: {corr}\r\nTimestamp: {ts}"
    );
    let body = json!({
        "error": error,
        "error_description": desc,
        "error_codes": [code],
        "timestamp": ts,
        "trace_id": trace.to_string(),
        "correlation_id": corr.to_string(),
        "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
    });
    let mut res = (status, body.to_string()).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache"),
    );
    res
}

pub async fn token(
    State(st): State<Arc<AppState>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let tenants = st.tenants();
    let Some(t) = tenants.find(&tenant).cloned() else {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
            ),
        );
    };
    drop(tenants);
    let dir = t.dir();
    let mut form: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    // client_secret_basic: credentials in the Authorization header.
    if let Some((id, secret)) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            s.split_once(':').map(|(a, b)| {
                let dec = |x: &str| {
                    percent_encoding::percent_decode_str(x)
                        .decode_utf8_lossy()
                        .into_owned()
                };
                (dec(a), dec(b))
            })
        })
    {
        form.retain(|(k, _)| k != "client_id" && k != "client_secret");
        form.push(("client_id".into(), id));
        form.push(("client_secret".into(), secret));
    }
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());

    let Some(grant) = get("grant_type") else {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'grant_type'.".into(),
        );
    };
    if grant != "client_credentials" {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            format!("The app requested an unsupported grant type '{grant}'."),
        );
    }
    let Some(client_id) = get("client_id") else {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.".into(),
        );
    };
    if !client_id.eq_ignore_ascii_case(&dir.client_id) {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory '{}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
                dir.domain.split('.').next().unwrap_or("contoso")
            ),
        );
    }
    let Some(scope) = get("scope") else {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90014,
            "The required field 'scope' is missing from the credential. Ensure that you have all the necessary parameters for the login request.".into(),
        );
    };
    if !scope.ends_with("/.default") {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            format!(
                "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            ),
        );
    }
    let Some(secret) = get("client_secret") else {
        return aad_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000216,
            "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.".into(),
        );
    };
    if secret != dir.client_secret {
        return aad_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.",
                dir.client_id
            ),
        );
    }

    let lifetime = t.faults.read().token_lifetime_secs;
    let now = chrono::Utc::now().timestamp();
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"RS256","kid":"emulator"}"#);
    let claims = json!({
        "aud": "https://graph.microsoft.com",
        "iss": format!("https://sts.windows.net/{}/", dir.tenant_id),
        "iat": now, "nbf": now, "exp": now + lifetime as i64,
        "appid": dir.client_id, "app_displayname": "licensor",
        "idtyp": "app", "oid": Uuid::new_v4().to_string(),
        "roles": ["Directory.Read.All", "Group.Read.All", "User.ReadWrite.All", "LicenseAssignment.ReadWrite.All"],
        "tid": dir.tenant_id.to_string(), "ver": "1.0",
    });
    let mut sig = [0u8; 32];
    rand::rng().fill_bytes(&mut sig);
    let token = format!(
        "{header}.{}.{}",
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(sig)
    );
    {
        let mut tokens = st.tokens.write();
        let now_i = Instant::now();
        if tokens.len() > 10_000 {
            tokens.retain(|_, t| t.expires > now_i);
        }
        tokens.insert(
            token.clone(),
            TokenInfo {
                expires: now_i + Duration::from_secs(lifetime),
                app_id: dir.client_id.clone(),
                tenant_id: t.id.clone(),
            },
        );
    }
    let body = json!({
        "token_type": "Bearer",
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": token,
    });
    let mut res = (StatusCode::OK, body.to_string()).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache"),
    );
    res
}

/// An authenticated Graph request: the calling app (its application id).
pub struct Caller {
    pub app_id: String,
}

/// Validate `Authorization: Bearer …`. Graph routes by the token: the tenant is the one the
/// token was issued for. Besides the outcome, the tenant the request is counted on (the token's
/// tenant when the token is known, else the default tenant).
pub fn authenticate(
    st: &AppState,
    auth: Option<&str>,
) -> (Arc<Tenant>, Result<Caller, GraphError>) {
    let tenants = st.tenants();
    let fallback = || tenants.default_tenant().clone();
    let Some(raw) = auth.map(str::trim).filter(|s| !s.is_empty()) else {
        return (
            fallback(),
            Err(GraphError::unauthenticated("Access token is empty.")),
        );
    };
    let Some(token) = bearer(raw) else {
        return (
            fallback(),
            Err(GraphError::unauthenticated("Access token is empty.")),
        );
    };
    if token.matches('.').count() != 2 {
        return (
            fallback(),
            Err(GraphError::unauthenticated(
                "IDX14100: JWT is not well formed, there are no dots (.).\nThe token needs to be in JWS or JWE Compact Serialization Format. (JWS): 'EncodedHeader.EndcodedPayload.EncodedSignature'. (JWE): 'EncodedProtectedHeader.EncodedEncryptedKey.EncodedInitializationVector.EncodedCiphertext.EncodedAuthenticationTag'.",
            )),
        );
    }
    let tokens = st.tokens.read();
    let Some(info) = tokens.get(token) else {
        return (
            fallback(),
            Err(GraphError::unauthenticated("Invalid signature")),
        );
    };
    // A token of a tenant no longer served (another scenario was loaded) is not valid here.
    let Some(tenant) = tenants.find(&info.tenant_id).cloned() else {
        return (
            fallback(),
            Err(GraphError::unauthenticated("Invalid audience")),
        );
    };
    if info.expires <= Instant::now() {
        return (
            tenant,
            Err(GraphError::unauthenticated(
                "Lifetime validation failed, the token is expired.",
            )),
        );
    }
    if info.app_id != tenant.dir.read().client_id {
        return (tenant, Err(GraphError::unauthenticated("Invalid audience")));
    }
    let app_id = info.app_id.clone();
    drop(tokens);
    (tenant, Ok(Caller { app_id }))
}
