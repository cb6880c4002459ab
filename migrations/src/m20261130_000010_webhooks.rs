//! Webhooks: a tenant's endpoints (URL, events, sealed signing secret) and one delivery per
//! (job end, endpoint), with its attempts.
//!
//! A delivery is unique per endpoint, job, run and event, so the end of a job's run fires each
//! event once per endpoint however often the step that records it is repeated. Deliveries go with
//! their endpoint (and the endpoint with its tenant).

use sea_orm_migration::{prelude::*, schema::*};

use crate::indexes::{index, unique_index};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(WebhookEndpoints::Table)
                .if_not_exists()
                .col(uuid(WebhookEndpoints::Id).primary_key())
                .col(uuid(WebhookEndpoints::TenantId))
                .col(string_len(WebhookEndpoints::Url, 2048))
                .col(string_len_null(WebhookEndpoints::Description, 500))
                // The event types, a JSON array of strings.
                .col(json_binary(WebhookEndpoints::Events))
                .col(boolean(WebhookEndpoints::Enabled).default(true))
                // `whsec_…` sealed with the instance's secret key.
                .col(blob(WebhookEndpoints::SecretEnc))
                .col(timestamp_with_time_zone(WebhookEndpoints::CreatedAt))
                .col(timestamp_with_time_zone(WebhookEndpoints::UpdatedAt))
                .foreign_key(
                    ForeignKey::create()
                        .from(WebhookEndpoints::Table, WebhookEndpoints::TenantId)
                        .to(Tenants::Table, Tenants::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        index(
            m,
            "ix_webhook_endpoints_tenant_id",
            WebhookEndpoints::Table,
            &[WebhookEndpoints::TenantId, WebhookEndpoints::Id],
        )
        .await?;

        m.create_table(
            Table::create()
                .table(WebhookDeliveries::Table)
                .if_not_exists()
                .col(uuid(WebhookDeliveries::Id).primary_key())
                .col(uuid(WebhookDeliveries::TenantId))
                .col(uuid(WebhookDeliveries::EndpointId))
                .col(uuid(WebhookDeliveries::JobId))
                .col(integer(WebhookDeliveries::RunNo))
                .col(string_len(WebhookDeliveries::Event, 64))
                // The message as sent (built when the job's run ended).
                .col(json_binary(WebhookDeliveries::Payload))
                // pending | delivered | failed
                .col(string_len(WebhookDeliveries::Status, 16))
                .col(integer(WebhookDeliveries::Attempts).default(0))
                // Attempts since the delivery was created or last redelivered, and since when:
                // the retry schedule and its one-day window count from there.
                .col(integer(WebhookDeliveries::SeriesAttempts).default(0))
                .col(timestamp_with_time_zone(WebhookDeliveries::SeriesStartedAt))
                .col(timestamp_with_time_zone_null(
                    WebhookDeliveries::NextAttemptAt,
                ))
                .col(timestamp_with_time_zone_null(
                    WebhookDeliveries::LastAttemptAt,
                ))
                .col(integer_null(WebhookDeliveries::LastStatusCode))
                .col(string_len_null(WebhookDeliveries::LastError, 300))
                // The last attempts (time, answer code, error, duration, answer snippet).
                .col(json_binary_null(WebhookDeliveries::AttemptLog))
                // The worker step sending it now, and until when it holds it.
                .col(string_len_null(WebhookDeliveries::LeaseOwner, 64))
                .col(timestamp_with_time_zone_null(WebhookDeliveries::LeaseUntil))
                .col(timestamp_with_time_zone(WebhookDeliveries::CreatedAt))
                .col(timestamp_with_time_zone_null(
                    WebhookDeliveries::DeliveredAt,
                ))
                .foreign_key(
                    ForeignKey::create()
                        .from(WebhookDeliveries::Table, WebhookDeliveries::EndpointId)
                        .to(WebhookEndpoints::Table, WebhookEndpoints::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .foreign_key(
                    ForeignKey::create()
                        .from(WebhookDeliveries::Table, WebhookDeliveries::TenantId)
                        .to(Tenants::Table, Tenants::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        // One delivery per endpoint and end of a job's run.
        unique_index(
            m,
            "ux_webhook_deliveries_event",
            WebhookDeliveries::Table,
            &[
                WebhookDeliveries::EndpointId,
                WebhookDeliveries::JobId,
                WebhookDeliveries::RunNo,
                WebhookDeliveries::Event,
            ],
        )
        .await?;
        // An endpoint's delivery log, newest first.
        index(
            m,
            "ix_webhook_deliveries_endpoint_id",
            WebhookDeliveries::Table,
            &[WebhookDeliveries::EndpointId, WebhookDeliveries::Id],
        )
        .await?;
        // The reconciler's "pending and overdue", and the pending gauge.
        index(
            m,
            "ix_webhook_deliveries_status_next",
            WebhookDeliveries::Table,
            &[WebhookDeliveries::Status, WebhookDeliveries::NextAttemptAt],
        )
        .await?;
        // A job's deliveries, to queue them when its run ends.
        index(
            m,
            "ix_webhook_deliveries_job",
            WebhookDeliveries::Table,
            &[WebhookDeliveries::JobId],
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(
            Table::drop()
                .table(WebhookDeliveries::Table)
                .if_exists()
                .to_owned(),
        )
        .await?;
        m.drop_table(
            Table::drop()
                .table(WebhookEndpoints::Table)
                .if_exists()
                .to_owned(),
        )
        .await
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum Tenants {
    Table,
    Id,
}

#[derive(DeriveIden, Clone, Copy)]
enum WebhookEndpoints {
    Table,
    Id,
    TenantId,
    Url,
    Description,
    Events,
    Enabled,
    SecretEnc,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum WebhookDeliveries {
    Table,
    Id,
    TenantId,
    EndpointId,
    JobId,
    RunNo,
    Event,
    Payload,
    Status,
    Attempts,
    SeriesAttempts,
    SeriesStartedAt,
    NextAttemptAt,
    LastAttemptAt,
    LastStatusCode,
    LastError,
    AttemptLog,
    LeaseOwner,
    LeaseUntil,
    CreatedAt,
    DeliveredAt,
}
