//! Files a job produces: the report (every item with its outcome) and, for an export job, the
//! export (written by [`super::export`]). CSV with the `csv` crate, XLSX with `rust_xlsxwriter`,
//! JSON as an array of objects. Rows are read from the database page by page.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;
use uuid::Uuid;

use super::export::{HOLDS_NONE, Rendered};
use super::{FileFormat, JobFacts, JobSpec, model};
use crate::db::Db;
use crate::entities::job_item;
use crate::error::{StoreError, StoreResult};

/// A rendered file.
#[derive(Debug, Clone)]
pub struct File {
    pub name: String,
    pub content_type: &'static str,
    pub bytes: Vec<u8>,
}

/// A table to render: column names and rows of text cells.
struct Table {
    columns: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

fn render(table: &Table, format: FileFormat, sheet: &str) -> StoreResult<Vec<u8>> {
    match format {
        FileFormat::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            let bad = |e: csv::Error| StoreError::Internal(format!("csv: {e}"));
            w.write_record(&table.columns).map_err(bad)?;
            for row in &table.rows {
                w.write_record(row).map_err(bad)?;
            }
            w.into_inner()
                .map_err(|e| StoreError::Internal(format!("csv: {e}")))
        }
        FileFormat::Json => {
            let rows: Vec<JsonRow<'_>> = table
                .rows
                .iter()
                .map(|row| JsonRow {
                    columns: &table.columns,
                    cells: row,
                })
                .collect();
            serde_json::to_vec_pretty(&rows).map_err(StoreError::internal)
        }
        FileFormat::Xlsx => {
            let bad = |e: rust_xlsxwriter::XlsxError| StoreError::Internal(format!("xlsx: {e}"));
            let mut book = rust_xlsxwriter::Workbook::new();
            let ws = book.add_worksheet();
            ws.set_name(sheet).map_err(bad)?;
            let bold = rust_xlsxwriter::Format::new().set_bold();
            for (c, name) in table.columns.iter().enumerate() {
                ws.write_string_with_format(0, c as u16, *name, &bold)
                    .map_err(bad)?;
            }
            for (r, row) in table.rows.iter().enumerate() {
                for (c, v) in row.iter().enumerate() {
                    match number_cell(table.columns[c], v) {
                        Some(n) => {
                            ws.write_number(r as u32 + 1, c as u16, n as f64)
                                .map_err(bad)?;
                        }
                        None if !v.is_empty() => {
                            ws.write_string(r as u32 + 1, c as u16, v).map_err(bad)?;
                        }
                        None => {}
                    }
                }
            }
            ws.set_freeze_panes(1, 0).map_err(bad)?;
            book.save_to_buffer().map_err(bad)
        }
    }
}

/// The columns of a job's files that hold a count (a report's `attempts` and `run`).
const NUMBER_COLUMNS: &[&str] = &["attempts", "run"];

/// A cell of a count column as its number; `None` for any other cell.
fn number_cell(column: &str, v: &str) -> Option<i64> {
    NUMBER_COLUMNS
        .contains(&column)
        .then(|| v.parse().ok())
        .flatten()
}

/// A time in a job's file as the API writes it in JSON (RFC 3339, UTC as `Z`, the fraction of
/// a second only as long as it needs): a report's `updated_at` reads the same as the item's.
fn timestamp_cell(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// One row of a job's JSON file: an object with a key for every column, in the columns' order
/// — the CSV header's and the XLSX sheet's — each cell as [`json_cell`] writes it.
pub(super) struct JsonRow<'a> {
    pub(super) columns: &'a [&'a str],
    pub(super) cells: &'a [String],
}

impl Serialize for JsonRow<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.columns.len()))?;
        for (column, cell) in self.columns.iter().zip(self.cells) {
            map.serialize_entry(column, &json_cell(column, cell))?;
        }
        map.end()
    }
}

/// A JSON cell of a job's file: empty → null, a count column → a number, `account_enabled` →
/// a boolean, anything else → a string.
pub(super) fn json_cell(column: &str, v: &str) -> Value {
    if let Some(n) = number_cell(column, v) {
        return Value::from(n);
    }
    match (column, v) {
        (_, "") => Value::Null,
        ("account_enabled", "true") => Value::Bool(true),
        ("account_enabled", "false") => Value::Bool(false),
        _ => Value::String(v.to_owned()),
    }
}

/// Every item of the job, in member order, page by page.
async fn all_items(
    db: &Db,
    job_id: Uuid,
    mut each: impl FnMut(job_item::Model),
) -> StoreResult<()> {
    let mut after = 0i64;
    loop {
        let page = job_item::Entity::find()
            .filter(job_item::Column::JobId.eq(job_id))
            .filter(job_item::Column::Id.gt(after))
            .order_by_asc(job_item::Column::Id)
            .limit(5000)
            .all(db)
            .await?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = last.id;
        page.into_iter().for_each(&mut each);
    }
}

const REPORT_COLUMNS: &[&str] = &[
    "user_id",
    "user_principal_name",
    "display_name",
    "group_id",
    "status",
    "error_code",
    "error_detail",
    "attempts",
    "run",
    "updated_at",
    "licenses_before",
    "licenses_after",
    "verified",
    "usage_location_set",
];

/// The change ledger columns of a report row: licenses held directly before and after the
/// job's write (`skuId` or `skuId[without plan;plan]`, space-separated; [`HOLDS_NONE`] —
/// `none` — when the member held no direct license, as the export file says it), `verified` /
/// `drifted` / empty, and the usage location the job set before the license write (empty:
/// none set). A member without a ledger entry (the job wrote nothing for it) has all four
/// empty (JSON: `null`), so "held nothing" and "nothing recorded" read apart in every format.
fn ledger_cells(change: Option<&serde_json::Value>) -> [String; 4] {
    let Some(change) =
        change.and_then(|v| serde_json::from_value::<super::plan::Change>(v.clone()).ok())
    else {
        return Default::default();
    };
    let list = |ls: &[crate::directory::AssignedLicense]| {
        if ls.is_empty() {
            return HOLDS_NONE.to_owned();
        }
        ls.iter()
            .map(|l| {
                if l.disabled_plans.is_empty() {
                    l.sku_id.to_string()
                } else {
                    let plans: Vec<String> =
                        l.disabled_plans.iter().map(|p| p.to_string()).collect();
                    format!("{}[without {}]", l.sku_id, plans.join(";"))
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let verified = match change.verified {
        Some(true) => "verified",
        Some(false) => "drifted",
        None => "",
    };
    [
        list(&change.before),
        list(&change.after),
        verified.to_owned(),
        change.usage_location.map(|l| l.after).unwrap_or_default(),
    ]
}

/// A preview's report columns: each member's predicted outcome and the code it would carry.
const PREDICTION_COLUMNS: &[&str] = &["predicted", "predicted_code"];

/// The prediction cells of a report row: `would_succeed` / `would_skip` / `would_fail` and the
/// code, empty when the member has none (e.g. it joined the groups after the preview).
fn prediction_cells(prediction: Option<&serde_json::Value>) -> [String; 2] {
    let Some(p) = prediction
        .and_then(|v| serde_json::from_value::<super::preview::Prediction>(v.clone()).ok())
    else {
        return Default::default();
    };
    let outcome = serde_json::to_value(p.outcome)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    [outcome, p.code.unwrap_or_default()]
}

/// The job's items with their outcomes and change ledger ([`ledger_cells`]: a member that held
/// no direct license before or after the write is `none` there, one the job wrote nothing for
/// is empty); a job that was a preview (also once launched) has two more columns, each
/// member's predicted outcome and code.
pub async fn report(
    db: &Db,
    tenant_id: Uuid,
    job_id: Uuid,
    format: FileFormat,
) -> StoreResult<File> {
    let job = model(db, tenant_id, job_id).await?;
    let predicted = JobFacts::of(&job).preview.is_some()
        || super::lease::request_of(&job).is_ok_and(|r| r.preview);
    let mut rows = Vec::new();
    all_items(db, job_id, |i| {
        let [before, after, verified, location] = ledger_cells(i.change.as_ref());
        let [outcome, code] = prediction_cells(i.prediction.as_ref());
        let mut row = vec![
            i.user_id,
            i.user_principal_name.unwrap_or_default(),
            i.display_name.unwrap_or_default(),
            i.group_id.unwrap_or_default(),
            i.status.to_string(),
            i.error_code.unwrap_or_default(),
            i.error_detail.unwrap_or_default(),
            i.attempts.to_string(),
            i.run_no.to_string(),
            timestamp_cell(i.updated_at),
            before,
            after,
            verified,
            location,
        ];
        if predicted {
            row.push(outcome);
            row.push(code);
        }
        rows.push(row);
    })
    .await?;
    let mut columns = REPORT_COLUMNS.to_vec();
    if predicted {
        columns.extend_from_slice(PREDICTION_COLUMNS);
    }
    let table = Table { columns, rows };
    Ok(File {
        name: format!("job-{job_id}-report.{}", format.extension()),
        content_type: format.content_type(),
        bytes: render(&table, format, "Report")?,
    })
}

/// The export file of a finished export job (see [`super::export`]): one row per member ×
/// license and one per member holding none (`assigned_by` [`HOLDS_NONE`]), with the time it was produced in every row — the
/// same file that was delivered. Written to a temporary file, never held in memory whole.
pub async fn export(db: &Db, tenant_id: Uuid, job_id: Uuid) -> StoreResult<Rendered> {
    let job = model(db, tenant_id, job_id).await?;
    let JobSpec::Export { export } = super::lease::request_of(&job)?.spec else {
        return Err(StoreError::conflict(
            "not_an_export",
            "only export jobs produce an export file; this job's outcomes are its report (GET /v1/jobs/{id}/report, `licensor jobs report`)",
        ));
    };
    if !matches!(
        job.status,
        crate::domain::JobStatus::Finished | crate::domain::JobStatus::FinishedWithException
    ) {
        let detail = if job.status.is_terminal() {
            format!(
                "the export job ended {} without a file; rerun it to make one",
                job.status
            )
        } else {
            format!("the export is not ready yet: the job is {}", job.status)
        };
        return Err(StoreError::conflict("export_not_ready", detail));
    }
    let exported_at = JobFacts::of(&job)
        .export
        .and_then(|e| e.exported_at)
        .or(job.finished_at)
        .unwrap_or(job.created_at);
    super::export::render(db, &job, export.format, exported_at).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A JSON row's keys come in the columns' order, as the CSV header and the XLSX sheet
    /// have them, not sorted.
    #[test]
    fn a_json_row_keeps_the_columns_order() {
        let columns = super::super::export::COLUMNS;
        let cells: Vec<String> = columns.iter().map(|c| format!("{c}-value")).collect();
        let text = serde_json::to_string(&JsonRow {
            columns,
            cells: &cells,
        })
        .unwrap();
        // Where each column's key stands in the text: every key once, in the columns' order.
        let at: Vec<usize> = columns
            .iter()
            .map(|c| {
                let key = format!("\"{c}\":");
                assert_eq!(text.matches(key.as_str()).count(), 1, "{key} in {text}");
                text.find(key.as_str()).unwrap()
            })
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert_ne!(
            columns.to_vec(),
            {
                let mut sorted = columns.to_vec();
                sorted.sort();
                sorted
            },
            "the columns are not in sorted order, so the check above can fail"
        );
    }

    /// A report's time is written as the API answers the same time, `Z` and all.
    #[test]
    fn a_timestamp_cell_is_the_apis_form() {
        use chrono::TimeZone;
        let base = chrono::Utc.with_ymd_and_hms(2026, 12, 7, 4, 8, 31).unwrap();
        for nanos in [0, 343_000_000, 343_683_000, 343_683_343] {
            let t = base + chrono::Duration::nanoseconds(nanos);
            assert_eq!(
                Value::from(timestamp_cell(t)),
                serde_json::to_value(t).unwrap(),
                "{t:?}"
            );
        }
        assert!(timestamp_cell(base).ends_with('Z'));
    }

    #[test]
    fn a_ledger_that_held_nothing_says_none() {
        let e3 = Uuid::from_u128(3);
        let plan = Uuid::from_u128(10);
        let change = serde_json::json!({
            "before": [],
            "after": [{"skuId": e3, "disabledPlans": [plan]}],
            "verified": true,
            "usage_location": {"before": null, "after": "SE"},
        });
        assert_eq!(
            ledger_cells(Some(&change)),
            [
                "none".to_owned(),
                format!("{e3}[without {plan}]"),
                "verified".to_owned(),
                "SE".to_owned(),
            ]
        );
        assert_eq!(json_cell("licenses_before", "none"), Value::from("none"));
        // No ledger entry: nothing recorded, every cell empty (JSON: null).
        assert_eq!(ledger_cells(None), <[String; 4]>::default());
        assert_eq!(json_cell("licenses_before", ""), Value::Null);
    }
}
