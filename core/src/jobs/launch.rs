//! Launching a preview as the real job, carrying its members' predictions over when the preview is
//! too old and the groups are read again.

use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Statement};
use serde_json::json;
use uuid::Uuid;

use super::JobView;
use super::SetNull;
use super::state::{OnJob, begin_action, check_launchable, commit_action};
use super::view::JobFacts;
use crate::db::Db;
use crate::domain::JobStatus;
use crate::entities::{job, job_item, job_run};
use crate::error::{StoreError, StoreResult};

/// The table where a stale preview's predictions wait for its members to be read again.
const CARRIED: &str = "carried_predictions";

pub(crate) fn statement<C: ConnectionTrait>(
    conn: &C,
    sql: &str,
    values: Vec<sea_orm::Value>,
) -> Statement {
    let backend = conn.get_database_backend();
    let sql = if backend == sea_orm::DbBackend::Postgres {
        let mut out = String::with_capacity(sql.len());
        let mut n = 0;
        for c in sql.chars() {
            if c == '?' {
                n += 1;
                out.push_str(&format!("${n}"));
            } else {
                out.push(c);
            }
        }
        out
    } else {
        sql.to_owned()
    };
    Statement::from_sql_and_values(backend, sql, values)
}

/// Run one statement written with `?` placeholders ([`statement`]).
async fn exec<C: ConnectionTrait>(
    conn: &C,
    sql: &str,
    values: Vec<sea_orm::Value>,
) -> StoreResult<()> {
    conn.execute_raw(statement(conn, sql, values)).await?;
    Ok(())
}

/// Keep a preview's predictions, by member, while its items are dropped to read the groups
/// again (see [`carry_predictions`]).
async fn stash_predictions<C: ConnectionTrait>(conn: &C, job_id: Uuid) -> StoreResult<()> {
    conn_delete_carried(conn, job_id).await?;
    exec(
        conn,
        &format!(
            "INSERT INTO {CARRIED} (job_id, user_id, prediction) \
             SELECT job_id, user_id, prediction FROM job_items \
             WHERE job_id = ? AND prediction IS NOT NULL"
        ),
        vec![job_id.into()],
    )
    .await
}

pub(crate) async fn conn_delete_carried<C: ConnectionTrait>(
    conn: &C,
    job_id: Uuid,
) -> StoreResult<()> {
    exec(
        conn,
        &format!("DELETE FROM {CARRIED} WHERE job_id = ?"),
        vec![job_id.into()],
    )
    .await
}

/// A launched preview that read its groups again: each member still in them gets its
/// prediction back; members new to the groups have none. Nothing to do for other jobs (one
/// index probe).
pub(crate) async fn carry_predictions<C: ConnectionTrait>(
    conn: &C,
    job_id: Uuid,
) -> StoreResult<()> {
    let any = conn
        .query_one_raw(statement(
            conn,
            &format!("SELECT 1 AS one FROM {CARRIED} WHERE job_id = ? LIMIT 1"),
            vec![job_id.into()],
        ))
        .await?;
    if any.is_none() {
        return Ok(());
    }
    exec(
        conn,
        &format!(
            "UPDATE job_items SET prediction = (SELECT c.prediction FROM {CARRIED} c \
             WHERE c.job_id = job_items.job_id AND c.user_id = job_items.user_id) \
             WHERE job_id = ? AND user_id IN (SELECT user_id FROM {CARRIED} WHERE job_id = ?)"
        ),
        vec![job_id.into(), job_id.into()],
    )
    .await?;
    conn_delete_carried(conn, job_id).await
}

/// Launch a preview (admin): the job is queued as a real run of the same request. The members
/// the preview found are kept — the groups are not read again — unless the preview is older
/// than `max_age` (`jobs.preview_max_age_secs`), when they are dropped and the groups read
/// afresh. Either way each member is read again from the directory before it is decided and
/// written. Each item keeps its prediction and the job its preview summary, with `launched_at`.
/// The caller enqueues the job after this commits.
pub async fn launch(db: &Db, on: OnJob, max_age: std::time::Duration) -> StoreResult<JobView> {
    let (tenant_id, job_id, by) = (on.tenant_id, on.job_id, on.by);
    let (txn, job) = begin_action(db, tenant_id, job_id).await?;
    let status = job.status;
    let mut req = super::lease::request_of(&job)?;
    check_launchable(&job)?;
    req.preview = false;
    let request = serde_json::to_value(&req).map_err(StoreError::internal)?;
    let now = Utc::now();
    let mut facts = JobFacts::of(&job);
    let previewed_at = facts
        .preview
        .as_ref()
        .map(|p| p.previewed_at)
        .or(job.finished_at)
        .unwrap_or(job.created_at);
    let stale = now - previewed_at > chrono::Duration::from_std(max_age).unwrap_or_default();
    if let Some(p) = facts.preview.as_mut() {
        p.launched_at = Some(now);
        p.expanded_again = stale;
    }
    let result = serde_json::to_value(&facts).map_err(StoreError::internal)?;
    let total = if stale {
        // The members are read again; those still in the groups keep their predictions.
        stash_predictions(&txn, job_id).await?;
        super::history::forget_keys(&txn, job_id).await?;
        job_item::Entity::delete_many()
            .filter(job_item::Column::JobId.eq(job_id))
            .exec(&txn)
            .await?;
        0
    } else {
        // What each member holds is read again before it is decided and written.
        job_item::Entity::update_many()
            .set_null([
                job_item::Column::Licenses,
                job_item::Column::LeaseOwner,
                job_item::Column::LeaseUntil,
            ])
            .col_expr(job_item::Column::UpdatedAt, Expr::value(now))
            .filter(job_item::Column::JobId.eq(job_id))
            .exec(&txn)
            .await?;
        job.total
    };
    let mut update = super::state::transition(job_id, &[status], JobStatus::Queued)?
        .col_expr(job::Column::Request, Expr::value(request))
        .col_expr(job::Column::Result, Expr::value(result))
        .col_expr(job::Column::Total, Expr::value(total))
        .col_expr(job::Column::Succeeded, Expr::value(0i64))
        .col_expr(job::Column::Failed, Expr::value(0i64))
        .col_expr(job::Column::Skipped, Expr::value(0i64))
        .set_null([
            job::Column::ErrorCode,
            job::Column::ErrorDetail,
            job::Column::StartedAt,
            job::Column::FinishedAt,
        ])
        .col_expr(job::Column::UpdatedAt, Expr::value(now))
        .filter(job::Column::Id.eq(job_id));
    if stale {
        update = update.set_null([
            job::Column::ExpandedAt,
            job::Column::ExpandPosition,
            job::Column::ExpandOwner,
            job::Column::ExpandUntil,
        ]);
    }
    update.exec(&txn).await?;
    super::finish::run_update(job_id, job.runs)
        .col_expr(job_run::Column::Status, Expr::value(JobStatus::Queued))
        .col_expr(job_run::Column::Total, Expr::value(total))
        .col_expr(job_run::Column::StartedBy, Expr::value(by))
        .col_expr(job_run::Column::StartedAt, Expr::value(now))
        .set_null([job_run::Column::FinishedAt])
        .exec(&txn)
        .await?;
    commit_action(
        txn,
        tenant_id,
        job_id,
        by,
        "job.launched",
        Some(json!({"status": status.as_str(), "members": job.total})),
        json!({"status": "queued", "expanded_again": stale}),
    )
    .await
}

/// Whether a lane of `job` takes only the members its preview predicted to succeed: the first run
/// of a launched preview that predicted some member to fail for want of a unit
/// (`count_violation`), until the members predicted to succeed have all been worked
/// (`launch_order_done_at`, see [`end_predicted_first`]).
///
/// The preview gave the free units, in member order, to exactly the members it predicted to
/// succeed. The directory gives units in the order the writes reach it, so with several lanes
/// and `$batch`es at once a member predicted to fail could take the last unit of one predicted
/// to succeed. Writing those first, and the others only after, makes the launch end each member
/// as predicted however many lanes write (README, "Preview, then launch").
///
/// Every lane step asks, so a job that was never previewed answers from its row without reading
/// its facts (`result`), and a preview reads only its summary.
pub fn predicted_first(job: &job::Model) -> bool {
    if job.launch_order_done_at.is_some() || job.runs != 1 {
        return false;
    }
    let Some(summary) = job.result.as_ref().and_then(|r| r.get("preview")) else {
        return false;
    };
    serde_json::from_value::<super::preview::PreviewSummary>(summary.clone())
        .is_ok_and(|p| p.launched_at.is_some() && p.skus.iter().any(|k| k.short_members > 0))
}

/// End a launched preview's order ([`predicted_first`]) once none of the members predicted to
/// succeed is pending any more: from then on lanes take every member. Returns `true` when the
/// order is over (now or before); `false` while some of them are held by a lane or wait for a
/// retry, or while the groups are still being read (a stale preview reads them again).
pub async fn end_predicted_first(db: &Db, job: &job::Model) -> StoreResult<bool> {
    use sea_orm::QuerySelect;
    if job.expanded_at.is_none() {
        return Ok(false);
    }
    let job_id = job.id;
    let left = job_item::Entity::find()
        .select_only()
        .column(job_item::Column::Id)
        .filter(job_item::Column::JobId.eq(job_id))
        .filter(job_item::Column::Status.eq(crate::domain::ItemStatus::Pending))
        .filter(super::lease::predicted_to_succeed(
            db.get_database_backend(),
        ))
        .limit(1)
        .into_tuple::<i64>()
        .one(db)
        .await?;
    if left.is_some() {
        return Ok(false);
    }
    job::Entity::update_many()
        .col_expr(job::Column::LaunchOrderDoneAt, Expr::value(Utc::now()))
        .filter(job::Column::Id.eq(job_id))
        .filter(job::Column::LaunchOrderDoneAt.is_null())
        .exec(db)
        .await?;
    Ok(true)
}
