//! Tenants and their directory connection settings.
//!
//! A tenant's directory connection is the app registration licensor calls the tenant's
//! directory (Microsoft Graph) with: the directory (Entra ID) tenant id, the application
//! (client) id and its client secret, and, for an emulator, a base URL other than Microsoft's.
//! It is given when the tenant is created ([`create`]) and set again later
//! ([`set_directory`]: client secrets expire, so an admin rotates them); [`validate_connection`]
//! is the one rule every way in keeps.

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};
use serde::Serialize;
use uuid::Uuid;

use crate::crypto::SecretBox;
use crate::db::Db;
use crate::entities::tenant;
use crate::error::{StoreError, StoreResult};

/// Microsoft's public endpoints, used when a tenant names no directory URL.
pub const MICROSOFT_LOGIN_URL: &str = "https://login.microsoftonline.com";
pub const MICROSOFT_GRAPH_URL: &str = "https://graph.microsoft.com/v1.0";

/// How licensor reaches a tenant's directory. The secret is given in clear only here, on its
/// way in; it is sealed before it is stored.
#[derive(Default, Clone)]
pub struct DirectorySettings {
    /// Base URL serving both `/{tenant}/oauth2/v2.0/token` and `/v1.0` (an emulator, say).
    /// `None` = Microsoft's public endpoints.
    pub directory_url: Option<String>,
    pub directory_tenant_id: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
}

impl std::fmt::Debug for DirectorySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectorySettings")
            .field("directory_url", &self.directory_url)
            .field("directory_tenant_id", &self.directory_tenant_id)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<set>"),
            )
            .finish()
    }
}

/// A client secret as [`validate_connection`] sees it. (No `Debug`: it may hold the secret.)
#[derive(Clone, Copy)]
pub enum SecretToCheck<'a> {
    /// A secret given now, in clear: it must hold something other than white space.
    Given(&'a str),
    /// The secret the tenant holds already (sealed): only that there is one counts.
    Kept,
}

/// Whether a directory connection, as it is about to be stored, is one licensor can obtain a
/// token with; the one rule of [`create`], [`update_directory`] and [`set_directory`] (which
/// checks the connection that results from its change, the kept fields with the new ones).
///
/// - `directory_tenant_id` (`--directory-tenant-id`): a GUID such as
///   `8b2f4c6e-1d3a-4e5f-9a7b-0c1d2e3f4a5b`, or a domain name such as
///   `contoso.onmicrosoft.com` — "the directory tenant the application plans to operate
///   against, in GUID or domain-name format", the `{tenant}` of the token endpoint
///   `https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token` in Microsoft's client
///   credentials flow
///   (<https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow>).
///   Anything else (empty, spaces, slashes, `common`) is refused: it would end up in that URL.
/// - `client_id` (`--client-id`): a GUID, as every Entra ID application (client) id is.
/// - `client_secret` (`--client-secret-env`): a secret given now must not be empty or only
///   white space.
/// - All or none: the three together make a connection; a tenant with none of them has no
///   connection (its directory routes and jobs answer `directory_not_configured`), which is
///   allowed. Any one without the others is refused, naming what is missing.
///
/// A GUID is the 8-4-4-4-12 hexadecimal form (any case); a domain name is two or more labels
/// of letters, digits and inner hyphens (1–63 characters each, at most 253 in all) whose last
/// label is not all digits.
///
/// Errors: [`StoreError::Invalid`] with one line naming the `licensor tenant` flag at fault
/// (with the directory tenant id given; never a client id or secret given).
pub fn validate_connection(
    directory_tenant_id: Option<&str>,
    client_id: Option<&str>,
    client_secret: Option<SecretToCheck<'_>>,
) -> StoreResult<()> {
    if let Some(t) = directory_tenant_id
        && !(is_guid(t) || is_domain_name(t))
    {
        return Err(StoreError::Invalid(format!(
            "--directory-tenant-id: `{t}` is neither a GUID nor a domain name such as contoso.onmicrosoft.com"
        )));
    }
    if client_id.is_some_and(|c| !is_guid(c)) {
        // The value is not repeated: a client secret pasted here by mistake stays out of logs.
        return Err(StoreError::Invalid(
            "--client-id: not a GUID; an application (client) id looks like 3f0c9a7e-5b2d-4c1e-8f6a-9d8e7c6b5a40".into(),
        ));
    }
    if let Some(SecretToCheck::Given(s)) = client_secret
        && s.trim().is_empty()
    {
        return Err(StoreError::Invalid(
            "--client-secret-env: the client secret is empty or only white space".into(),
        ));
    }
    let missing: Vec<&str> = [
        (
            directory_tenant_id.is_none(),
            "directory tenant id (--directory-tenant-id)",
        ),
        (client_id.is_none(), "client id (--client-id)"),
        (
            client_secret.is_none(),
            "client secret (--client-secret-env)",
        ),
    ]
    .into_iter()
    .filter_map(|(absent, what)| absent.then_some(what))
    .collect();
    if !missing.is_empty() && missing.len() < 3 {
        return Err(StoreError::Invalid(format!(
            "incomplete directory connection: no {}; give the directory tenant id, client id and client secret together, or none of them",
            missing.join(" and no ")
        )));
    }
    Ok(())
}

/// The hyphenated 8-4-4-4-12 form of a GUID, in any case.
fn is_guid(s: &str) -> bool {
    s.len() == 36 && Uuid::try_parse(s).is_ok()
}

/// A DNS name of two or more labels (`contoso.onmicrosoft.com`), not an IP address.
fn is_domain_name(s: &str) -> bool {
    let labels: Vec<&str> = s.split('.').collect();
    s.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            (1..=63).contains(&l.len())
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
        && labels
            .last()
            .is_some_and(|top| !top.bytes().all(|b| b.is_ascii_digit()))
}

impl DirectorySettings {
    /// Whether no setting is given: as a change ([`set_directory`]), one that changes nothing.
    pub fn is_empty(&self) -> bool {
        self.directory_url.is_none()
            && self.directory_tenant_id.is_none()
            && self.client_id.is_none()
            && self.client_secret.is_none()
    }

    /// The connection these settings give, checked by [`validate_connection`].
    fn validate(&self) -> StoreResult<()> {
        validate_connection(
            self.directory_tenant_id.as_deref(),
            self.client_id.as_deref(),
            self.client_secret.as_deref().map(SecretToCheck::Given),
        )
    }

    fn urls(&self) -> StoreResult<(Option<String>, Option<String>)> {
        let tenant = self.directory_tenant_id.as_deref();
        let base = match &self.directory_url {
            Some(url) => {
                let url = url.trim_end_matches('/');
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(StoreError::Invalid(format!(
                        "directory URL `{url}` must start with http:// or https://"
                    )));
                }
                Some(url.to_owned())
            }
            None => None,
        };
        let token_url = tenant.map(|t| {
            let login = base.as_deref().unwrap_or(MICROSOFT_LOGIN_URL);
            format!("{login}/{t}/oauth2/v2.0/token")
        });
        let graph_url = Some(match &base {
            Some(b) => format!("{b}/v1.0"),
            None => MICROSOFT_GRAPH_URL.to_owned(),
        });
        Ok((token_url, graph_url))
    }
}

/// A tenant as shown to operators: never the secret.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TenantView {
    pub id: Uuid,
    pub name: String,
    pub directory_tenant_id: Option<String>,
    pub token_url: Option<String>,
    pub graph_url: Option<String>,
    pub client_id: Option<String>,
    pub client_secret_set: bool,
    pub created_at: chrono::DateTime<Utc>,
}

impl From<tenant::Model> for TenantView {
    fn from(m: tenant::Model) -> Self {
        TenantView {
            id: m.id,
            name: m.name,
            directory_tenant_id: m.directory_tenant_id,
            token_url: m.token_url,
            graph_url: m.graph_url,
            client_id: m.client_id,
            client_secret_set: m.client_secret_enc.is_some(),
            created_at: m.created_at,
        }
    }
}

/// A tenant's name as given, trimmed ([`crate::domain::name`]).
fn validate_name(name: &str) -> StoreResult<&str> {
    crate::domain::name(name).map_err(|why| StoreError::Invalid(format!("tenant name {why}")))
}

/// Create a tenant named `name` (1 to 200 characters), with its directory connection if
/// `directory` gives one. Errors: [`StoreError::Conflict`] when the name is taken;
/// [`StoreError::Invalid`] for a bad name, a directory URL that is not http(s), or a
/// connection [`validate_connection`] refuses. Nothing is created then.
pub async fn create(
    db: &Db,
    secrets: &SecretBox,
    name: &str,
    directory: &DirectorySettings,
) -> StoreResult<tenant::Model> {
    let name = validate_name(name)?;
    directory.validate()?;
    if find_by_name(db, name).await?.is_some() {
        return Err(StoreError::Conflict(format!(
            "a tenant named `{name}` exists already"
        )));
    }
    let (token_url, graph_url) = directory.urls()?;
    let now = Utc::now();
    let model = tenant::ActiveModel {
        id: Set(Uuid::now_v7()),
        name: Set(name.to_owned()),
        directory_tenant_id: Set(directory.directory_tenant_id.clone()),
        token_url: Set(token_url),
        graph_url: Set(graph_url),
        client_id: Set(directory.client_id.clone()),
        client_secret_enc: Set(directory.client_secret.as_deref().map(|s| secrets.seal(s))),
        created_at: Set(now),
        updated_at: Set(now),
    };
    Ok(model.insert(db).await?)
}

/// Replace an existing tenant's whole directory connection with `directory` (a field `None`
/// is cleared), e.g. to point the demo tenant at its emulator on a fresh port. To change some
/// fields and keep the others, see [`set_directory`]. Errors as [`create`]'s, and
/// [`StoreError::NotFound`] for an unknown tenant; nothing is changed then.
pub async fn update_directory(
    db: &Db,
    secrets: &SecretBox,
    tenant_id: Uuid,
    directory: &DirectorySettings,
) -> StoreResult<tenant::Model> {
    directory.validate()?;
    let existing = get(db, tenant_id).await?;
    let (token_url, graph_url) = directory.urls()?;
    let mut model: tenant::ActiveModel = existing.into();
    model.directory_tenant_id = Set(directory.directory_tenant_id.clone());
    model.token_url = Set(token_url);
    model.graph_url = Set(graph_url);
    model.client_id = Set(directory.client_id.clone());
    model.client_secret_enc = Set(directory.client_secret.as_deref().map(|s| secrets.seal(s)));
    model.updated_at = Set(Utc::now());
    Ok(model.update(db).await?)
}

/// What [`set_directory`] or [`clear_directory`] did: the tenant before and after (the same
/// row when nothing changed).
#[derive(Debug, Clone)]
pub struct DirectoryUpdate {
    pub before: tenant::Model,
    pub after: tenant::Model,
    /// Whether a new client secret was stored (never which).
    pub secret_replaced: bool,
}

impl DirectoryUpdate {
    /// Whether the tenant's row was written.
    pub fn changed(&self) -> bool {
        self.before.updated_at != self.after.updated_at
    }
}

/// Set some of a tenant's directory connection again and keep the rest: each field `change`
/// gives (`Some`) replaces the tenant's, each `None` keeps it (a `client_secret` alone rotates
/// the secret, with the same app registration). The row is read (locked against another change), merged with `change`, the
/// resulting connection checked by [`validate_connection`] — so a client id given to a tenant
/// that has no secret is refused — and only then written, bumping `updated_at`. A change that
/// gives only the values the tenant holds already writes nothing.
///
/// The token URL is made again from the directory URL and tenant id when either is given; the
/// directory URL kept is the one the tenant's Graph URL was made from ([`directory_url`]).
///
/// A running licensor picks the change up by itself: the API reads the tenant's row at each
/// directory request, and the workers' directory client is checked against the row at most
/// [`crate::directory::DirectoryClients::RECHECK`] (a second) after it was last checked, and
/// made again from the new settings.
///
/// Errors, with nothing changed: [`StoreError::Invalid`] for an empty change, a directory URL
/// that is not http(s) or a connection [`validate_connection`] refuses;
/// [`StoreError::NotFound`] for an unknown tenant.
pub async fn set_directory(
    db: &Db,
    secrets: &SecretBox,
    tenant_id: Uuid,
    change: &DirectorySettings,
) -> StoreResult<DirectoryUpdate> {
    if change.is_empty() {
        return Err(StoreError::Invalid(
            "nothing to change: give --directory-url, --directory-tenant-id, --client-id or --client-secret-env".into(),
        ));
    }
    let txn = crate::db::begin(db).await?;
    let before = tenant::Entity::find_by_id(tenant_id)
        .lock_exclusive()
        .one(&txn)
        .await?
        .ok_or(StoreError::NotFound("tenant"))?;
    let directory_tenant_id = change
        .directory_tenant_id
        .clone()
        .or_else(|| before.directory_tenant_id.clone());
    let client_id = change
        .client_id
        .clone()
        .or_else(|| before.client_id.clone());
    let secret = match &change.client_secret {
        Some(s) => Some(SecretToCheck::Given(s)),
        None => before
            .client_secret_enc
            .as_ref()
            .map(|_| SecretToCheck::Kept),
    };
    validate_connection(directory_tenant_id.as_deref(), client_id.as_deref(), secret)?;
    let (token_url, graph_url) =
        if change.directory_url.is_some() || change.directory_tenant_id.is_some() {
            DirectorySettings {
                directory_url: change
                    .directory_url
                    .clone()
                    .or_else(|| directory_url(&before)),
                directory_tenant_id: directory_tenant_id.clone(),
                ..DirectorySettings::default()
            }
            .urls()?
        } else {
            (before.token_url.clone(), before.graph_url.clone())
        };
    let same = directory_tenant_id == before.directory_tenant_id
        && client_id == before.client_id
        && token_url == before.token_url
        && graph_url == before.graph_url
        && change.client_secret.is_none();
    if same {
        txn.commit().await?;
        return Ok(DirectoryUpdate {
            after: before.clone(),
            before,
            secret_replaced: false,
        });
    }
    let mut model: tenant::ActiveModel = before.clone().into();
    model.directory_tenant_id = Set(directory_tenant_id);
    model.token_url = Set(token_url);
    model.graph_url = Set(graph_url);
    model.client_id = Set(client_id);
    if let Some(s) = &change.client_secret {
        model.client_secret_enc = Set(Some(secrets.seal(s)));
    }
    model.updated_at = Set(Utc::now());
    let after = model.update(&txn).await?;
    txn.commit().await?;
    Ok(DirectoryUpdate {
        before,
        after,
        secret_replaced: change.client_secret.is_some(),
    })
}

/// Remove a tenant's directory connection: no directory tenant id, client id or secret, and
/// Microsoft's public endpoints, as a tenant created without one. Its directory routes and
/// jobs then answer `directory_not_configured` until [`set_directory`] gives all three again.
/// A tenant without a connection is left as it is. Errors: [`StoreError::NotFound`].
pub async fn clear_directory(db: &Db, tenant_id: Uuid) -> StoreResult<DirectoryUpdate> {
    let txn = crate::db::begin(db).await?;
    let before = tenant::Entity::find_by_id(tenant_id)
        .lock_exclusive()
        .one(&txn)
        .await?
        .ok_or(StoreError::NotFound("tenant"))?;
    let (token_url, graph_url) = DirectorySettings::default().urls()?;
    let after = if before.directory_tenant_id.is_none()
        && before.client_id.is_none()
        && before.client_secret_enc.is_none()
        && before.token_url == token_url
        && before.graph_url == graph_url
    {
        before.clone()
    } else {
        let mut model: tenant::ActiveModel = before.clone().into();
        model.directory_tenant_id = Set(None);
        model.token_url = Set(token_url);
        model.graph_url = Set(graph_url);
        model.client_id = Set(None);
        model.client_secret_enc = Set(None);
        model.updated_at = Set(Utc::now());
        model.update(&txn).await?
    };
    txn.commit().await?;
    Ok(DirectoryUpdate {
        before,
        after,
        secret_replaced: false,
    })
}

/// The directory URL a tenant's row was made from ([`DirectorySettings::directory_url`]): its
/// Graph URL without `/v1.0`; `None` for Microsoft's public endpoints.
pub fn directory_url(tenant: &tenant::Model) -> Option<String> {
    match tenant.graph_url.as_deref() {
        None | Some(MICROSOFT_GRAPH_URL) => None,
        Some(g) => Some(g.strip_suffix("/v1.0").unwrap_or(g).to_owned()),
    }
}

pub async fn get(db: &Db, tenant_id: Uuid) -> StoreResult<tenant::Model> {
    tenant::Entity::find_by_id(tenant_id)
        .one(db)
        .await?
        .ok_or(StoreError::NotFound("tenant"))
}

pub async fn find_by_name(db: &Db, name: &str) -> StoreResult<Option<tenant::Model>> {
    Ok(tenant::Entity::find()
        .filter(tenant::Column::Name.eq(name.trim()))
        .one(db)
        .await?)
}

/// A tenant by id or by name, as the CLI accepts either.
pub async fn find_by_ref(db: &Db, reference: &str) -> StoreResult<tenant::Model> {
    if let Ok(id) = reference.parse::<Uuid>()
        && let Ok(t) = get(db, id).await
    {
        return Ok(t);
    }
    find_by_name(db, reference)
        .await?
        .ok_or(StoreError::NotFound("tenant"))
}

pub async fn list(db: &Db) -> StoreResult<Vec<tenant::Model>> {
    Ok(tenant::Entity::find()
        .order_by_asc(tenant::Column::Name)
        .all(db)
        .await?)
}

/// The tenant's client secret in clear, for the directory client only.
pub fn client_secret(secrets: &SecretBox, tenant: &tenant::Model) -> StoreResult<Option<String>> {
    match &tenant.client_secret_enc {
        Some(sealed) => Ok(Some(secrets.open(sealed)?)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DatabaseUrl;

    const TENANT: &str = "8b2f4c6e-1d3a-4e5f-9a7b-0c1d2e3f4a5b";
    const CLIENT: &str = "3f0c9a7e-5b2d-4c1e-8f6a-9d8e7c6b5a40";

    fn refused(r: StoreResult<()>) -> String {
        match r {
            Err(StoreError::Invalid(m)) => {
                assert_eq!(m.lines().count(), 1, "one line: {m:?}");
                m
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn directory_tenant_ids_are_guids_or_domain_names() {
        let given = Some(SecretToCheck::Given("s3cret"));
        for ok in [
            TENANT,
            "8B2F4C6E-1D3A-4E5F-9A7B-0C1D2E3F4A5B",
            "contoso.onmicrosoft.com",
            "contoso.com",
            "xn--bcher-kva.example",
            "fabrikam-1.co.uk",
        ] {
            validate_connection(Some(ok), Some(CLIENT), given).unwrap();
        }
        for bad in [
            "",
            " ",
            "contoso onmicrosoft.com",
            "contoso.onmicrosoft.com/oauth2",
            "../admin",
            "common",
            "organizations",
            "contoso",
            "contoso.",
            ".contoso.com",
            "-contoso.com",
            "contoso-.com",
            "10.0.0.1",
            "8b2f4c6e1d3a4e5f9a7b0c1d2e3f4a5b",
            "{8b2f4c6e-1d3a-4e5f-9a7b-0c1d2e3f4a5b}",
            "tid",
        ] {
            let m = refused(validate_connection(Some(bad), Some(CLIENT), given));
            assert!(m.starts_with("--directory-tenant-id:"), "{bad:?}: {m}");
        }
        let long = format!("{}.com", ["a".repeat(63).as_str(); 4].join("."));
        refused(validate_connection(Some(&long), Some(CLIENT), given));
        let label = format!("{}.com", "a".repeat(64));
        refused(validate_connection(Some(&label), Some(CLIENT), given));
    }

    #[test]
    fn client_ids_are_guids() {
        let given = Some(SecretToCheck::Given("s3cret"));
        for bad in [
            "",
            "cid",
            "contoso.onmicrosoft.com",
            "3f0c9a7e5b2d4c1e8f6a9d8e7c6b5a40",
        ] {
            let m = refused(validate_connection(Some(TENANT), Some(bad), given));
            assert!(m.starts_with("--client-id:"), "{bad:?}: {m}");
        }
    }

    #[test]
    fn a_secret_given_holds_something() {
        for bad in ["", " ", "\t\n"] {
            let m = refused(validate_connection(
                Some(TENANT),
                Some(CLIENT),
                Some(SecretToCheck::Given(bad)),
            ));
            assert!(m.starts_with("--client-secret-env:"), "{bad:?}: {m}");
        }
        // A kept (sealed) secret is not read.
        validate_connection(Some(TENANT), Some(CLIENT), Some(SecretToCheck::Kept)).unwrap();
    }

    #[test]
    fn all_three_or_none() {
        let s = Some(SecretToCheck::Given("s3cret"));
        validate_connection(None, None, None).unwrap();
        for (tenant, client, secret, missing) in [
            (
                Some(TENANT),
                None,
                None,
                &["--client-id", "--client-secret-env"][..],
            ),
            (
                None,
                Some(CLIENT),
                None,
                &["--directory-tenant-id", "--client-secret-env"],
            ),
            (None, None, s, &["--directory-tenant-id", "--client-id"]),
            (Some(TENANT), Some(CLIENT), None, &["--client-secret-env"]),
            (Some(TENANT), None, s, &["--client-id"]),
            (None, Some(CLIENT), s, &["--directory-tenant-id"]),
        ] {
            let m = refused(validate_connection(tenant, client, secret));
            assert!(m.starts_with("incomplete directory connection"), "{m}");
            for flag in [
                "--directory-tenant-id",
                "--client-id",
                "--client-secret-env",
            ] {
                let named = m.contains(&format!("({flag})"));
                assert_eq!(named, missing.contains(&flag), "{flag} in {m}");
            }
        }
    }

    fn secrets() -> SecretBox {
        SecretBox::from_base64(&format!("{}=", "A".repeat(43))).unwrap()
    }

    async fn database() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::db::connect(&DatabaseUrl::Sqlite(dir.path().join("licensor.db")))
            .await
            .unwrap();
        crate::db::migrate(&db).await.unwrap();
        (dir, db)
    }

    fn connected() -> DirectorySettings {
        DirectorySettings {
            directory_url: Some("http://127.0.0.1:9000".into()),
            directory_tenant_id: Some(TENANT.into()),
            client_id: Some(CLIENT.into()),
            client_secret: Some("old-secret".into()),
        }
    }

    #[tokio::test]
    async fn create_refuses_a_bad_connection_and_creates_nothing() {
        let (_dir, db) = database().await;
        let secrets = secrets();
        for bad in [
            DirectorySettings {
                client_secret: None,
                ..connected()
            },
            DirectorySettings {
                client_secret: Some(String::new()),
                ..connected()
            },
            DirectorySettings {
                client_id: None,
                ..connected()
            },
            DirectorySettings {
                directory_tenant_id: Some("not a tenant".into()),
                ..connected()
            },
        ] {
            let e = create(&db, &secrets, "contoso", &bad).await.unwrap_err();
            assert!(matches!(e, StoreError::Invalid(_)), "{bad:?}: {e}");
        }
        assert!(list(&db).await.unwrap().is_empty());
        create(&db, &secrets, "contoso", &connected())
            .await
            .unwrap();
        create(&db, &secrets, "fabrikam", &DirectorySettings::default())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn set_directory_changes_what_it_is_given_and_keeps_the_rest() {
        let (_dir, db) = database().await;
        let secrets = secrets();
        let t = create(&db, &secrets, "contoso", &connected())
            .await
            .unwrap();

        // The secret alone.
        let done = set_directory(
            &db,
            &secrets,
            t.id,
            &DirectorySettings {
                client_secret: Some("new-secret".into()),
                ..DirectorySettings::default()
            },
        )
        .await
        .unwrap();
        assert!(done.changed() && done.secret_replaced);
        let after = get(&db, t.id).await.unwrap();
        assert_eq!(
            client_secret(&secrets, &after).unwrap().unwrap(),
            "new-secret"
        );
        assert_eq!(
            (
                &after.directory_tenant_id,
                &after.client_id,
                &after.token_url,
                &after.graph_url
            ),
            (
                &t.directory_tenant_id,
                &t.client_id,
                &t.token_url,
                &t.graph_url
            )
        );
        assert!(after.updated_at > t.updated_at);

        // The tenant id: the token URL follows, on the same directory URL.
        set_directory(
            &db,
            &secrets,
            t.id,
            &DirectorySettings {
                directory_tenant_id: Some("contoso.onmicrosoft.com".into()),
                ..DirectorySettings::default()
            },
        )
        .await
        .unwrap();
        let after = get(&db, t.id).await.unwrap();
        assert_eq!(
            after.token_url.as_deref(),
            Some("http://127.0.0.1:9000/contoso.onmicrosoft.com/oauth2/v2.0/token")
        );
        assert_eq!(
            after.graph_url.as_deref(),
            Some("http://127.0.0.1:9000/v1.0")
        );
        assert_eq!(
            client_secret(&secrets, &after).unwrap().unwrap(),
            "new-secret"
        );

        // The directory URL: both URLs follow, with the tenant id kept.
        set_directory(
            &db,
            &secrets,
            t.id,
            &DirectorySettings {
                directory_url: Some("http://127.0.0.1:9001/".into()),
                ..DirectorySettings::default()
            },
        )
        .await
        .unwrap();
        let after = get(&db, t.id).await.unwrap();
        assert_eq!(
            after.token_url.as_deref(),
            Some("http://127.0.0.1:9001/contoso.onmicrosoft.com/oauth2/v2.0/token")
        );
        assert_eq!(
            directory_url(&after).as_deref(),
            Some("http://127.0.0.1:9001")
        );

        // The values it has already: nothing is written.
        let same = set_directory(
            &db,
            &secrets,
            t.id,
            &DirectorySettings {
                client_id: Some(CLIENT.into()),
                ..DirectorySettings::default()
            },
        )
        .await
        .unwrap();
        assert!(!same.changed());
        assert_eq!(get(&db, t.id).await.unwrap(), after);
    }

    #[tokio::test]
    async fn set_directory_refuses_bad_input_and_changes_nothing() {
        let (_dir, db) = database().await;
        let secrets = secrets();
        let t = create(&db, &secrets, "contoso", &connected())
            .await
            .unwrap();
        let bare = create(&db, &secrets, "fabrikam", &DirectorySettings::default())
            .await
            .unwrap();
        let change = |f: fn(&mut DirectorySettings)| {
            let mut c = DirectorySettings::default();
            f(&mut c);
            c
        };
        for (tenant, bad) in [
            (&t, DirectorySettings::default()),
            (&t, change(|c| c.client_secret = Some(String::new()))),
            (&t, change(|c| c.client_secret = Some("  ".into()))),
            (&t, change(|c| c.client_id = Some("cid".into()))),
            (&t, change(|c| c.directory_tenant_id = Some("a/b".into()))),
            (&t, change(|c| c.directory_url = Some("ftp://x".into()))),
            // The merged row must be whole: a client id for a tenant without a secret.
            (&bare, change(|c| c.client_id = Some(CLIENT.into()))),
            (&bare, change(|c| c.client_secret = Some("s3cret".into()))),
            (
                &bare,
                change(|c| {
                    c.directory_tenant_id = Some(TENANT.into());
                    c.client_id = Some(CLIENT.into());
                }),
            ),
        ] {
            let e = set_directory(&db, &secrets, tenant.id, &bad)
                .await
                .unwrap_err();
            assert!(matches!(e, StoreError::Invalid(_)), "{bad:?}: {e}");
            assert_eq!(&get(&db, tenant.id).await.unwrap(), tenant, "{bad:?}");
        }
        let e = set_directory(
            &db,
            &secrets,
            Uuid::now_v7(),
            &change(|c| c.client_secret = Some("s3cret".into())),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, StoreError::NotFound(_)), "{e}");

        // All three at once connect the bare tenant, on Microsoft's endpoints.
        set_directory(
            &db,
            &secrets,
            bare.id,
            &DirectorySettings {
                directory_tenant_id: Some(TENANT.into()),
                client_id: Some(CLIENT.into()),
                client_secret: Some("s3cret".into()),
                ..DirectorySettings::default()
            },
        )
        .await
        .unwrap();
        let after = get(&db, bare.id).await.unwrap();
        assert_eq!(
            after.token_url,
            Some(format!("{MICROSOFT_LOGIN_URL}/{TENANT}/oauth2/v2.0/token"))
        );
        assert_eq!(after.graph_url.as_deref(), Some(MICROSOFT_GRAPH_URL));
    }

    #[tokio::test]
    async fn clear_directory_removes_the_connection() {
        let (_dir, db) = database().await;
        let secrets = secrets();
        let t = create(&db, &secrets, "contoso", &connected())
            .await
            .unwrap();
        let done = clear_directory(&db, t.id).await.unwrap();
        assert!(done.changed());
        let bare = create(&db, &secrets, "fabrikam", &DirectorySettings::default())
            .await
            .unwrap();
        let cleared = get(&db, t.id).await.unwrap();
        assert_eq!(
            (
                &cleared.directory_tenant_id,
                &cleared.client_id,
                &cleared.client_secret_enc,
                &cleared.token_url,
                &cleared.graph_url
            ),
            (
                &bare.directory_tenant_id,
                &bare.client_id,
                &bare.client_secret_enc,
                &bare.token_url,
                &bare.graph_url
            )
        );
        assert!(!clear_directory(&db, t.id).await.unwrap().changed());
    }
}
