//! Export Results: "the detailed information of the selected groups on all of the pages".
//!
//! Expansion reads every member of the selected groups (and, with `transitive`, of the groups
//! nested in them, remembering through which group each was reached) with whether the account
//! is enabled, and stores one item per member with what it holds. The file has one row per
//! member × license and one row per member holding none, its `assigned_by` [`HOLDS_NONE`]
//! (`none`) and its other license columns empty (JSON: `null`); it is written
//! page by page from the database to a temporary file — CSV with `csv`, JSON as an array of
//! objects, XLSX with `rust_xlsxwriter` in constant-memory mode — so a 100,000-member export
//! never sits in memory. [`super::deliver`] sends that file where the request asked.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io::{BufWriter, Seek, Write};

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::expand::{self, NewItem};
use super::plan::Snapshot;
use super::{FileFormat, JobFacts, ParsedRequest};
use crate::db::Db;
use crate::directory::{DirectoryClient, DirectoryError, User};
use crate::domain::ItemStatus;
use crate::entities::{job, job_item};
use crate::error::{StoreError, StoreResult};
use crate::tasks::unless_stopped;

/// The export's columns, in order. `assigned_by` is how the member holds the row's SKU —
/// `direct`, `group` or `both` — or [`HOLDS_NONE`] on the one row of a member holding none.
pub const COLUMNS: &[&str] = &[
    "group_name",
    "group_id",
    "user_id",
    "user_principal_name",
    "display_name",
    "account_enabled",
    "usage_location",
    "sku_part_number",
    "sku_id",
    "assigned_by",
    "assigned_by_groups",
    "disabled_plans",
    "member_through",
    "member_through_id",
    "exported_at",
];

/// The `assigned_by` cell of the row of a member holding no license, in every format (CSV and
/// XLSX text, a JSON string): said, not left empty, so that it does not read as data missing.
/// Its SKU, group and plan cells stay empty (JSON: `null`) — there is no SKU to name. The
/// report's `licenses_before` / `licenses_after` say the same word for a member whose change
/// ledger recorded no direct license ([`super::files::report`]).
pub const HOLDS_NONE: &str = "none";

/// What an export stores on a member's item: its [`Snapshot`], whether its account is enabled,
/// and, for a member reached only through a nested group, that group's id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportMember {
    #[serde(flatten)]
    pub snapshot: Snapshot,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub through: Option<String>,
}

/// Where an export's file went, with its size and row count (`GET /v1/jobs/{id}` → `export`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Delivery {
    /// `download`, `sharepoint` or `s3`.
    pub location: String,
    /// `job-{id}-export.{csv|json|xlsx}`.
    pub file_name: String,
    /// Where to find the file: the drive item's web URL, `s3://bucket/key`, or licensor's
    /// download path.
    pub url: String,
    /// S3: the object's key in `bucket`; SharePoint: the path in the drive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drive_id: Option<String>,
    /// Bytes.
    pub size: u64,
    /// Rows below the header.
    pub rows: u64,
    /// SharePoint: chunks sent to an upload session (0 for a one-request upload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<u32>,
    pub delivered_at: DateTime<Utc>,
}

/// What an export job learnt besides the selected groups and SKUs (`jobs.result.export`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportFacts {
    /// Service plan id → name, for the disabled plans column.
    #[serde(default)]
    pub plan_names: BTreeMap<Uuid, String>,
    /// Names of nested groups and of groups that assign licenses.
    #[serde(default)]
    pub group_names: BTreeMap<String, String>,
    /// The time written in every row: when the file was last produced.
    #[serde(default)]
    pub exported_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub delivery: Option<Delivery>,
}

/// What [`expand`] returns: the members stored, or `None` (see there), or the directory error
/// with what was being done.
type Expanded = StoreResult<Result<Option<u64>, (DirectoryError, &'static str)>>;

/// Read every member of the selected groups into the job's items (status `succeeded`), page by
/// page, and record the names the file needs. Returns the number of members this step stored
/// (`None` when the job was cancelled meanwhile, or `owner`, the step reading, no longer holds
/// the expansion — see [`expand::insert_items`] — or `stop` was raised: the process is
/// stopping), or the directory error with what was being done.
///
/// `stop` is looked at after each page stored and while a read waits for the directory (see
/// [`unless_stopped`]): a stopping worker leaves the export to the next step within its grace
/// period rather than reading on to the last page or waiting for a slow one. That step reads the
/// groups again from their first page (the names the file needs are gathered while reading,
/// and nested groups are read in the order they are found); the members stored already are
/// not stored again (one item per member and job).
pub async fn expand(
    db: &Db,
    owner: &str,
    client: &DirectoryClient,
    job: &job::Model,
    req: &ParsedRequest,
    mut facts: JobFacts,
    stop: &std::sync::atomic::AtomicBool,
) -> Expanded {
    let mut export = facts.export.take().unwrap_or_default();
    let left = || -> Expanded {
        tracing::info!(job = %job.id, "process stopping: export left during a read");
        Ok(Ok(None))
    };
    let Some(skus) = unless_stopped(stop, client.subscribed_skus()).await else {
        return left();
    };
    match skus {
        Ok(skus) => {
            for plan in skus.into_iter().flat_map(|s| s.service_plans) {
                if let Some(name) = plan.service_plan_name {
                    export.plan_names.insert(plan.service_plan_id, name);
                }
            }
        }
        Err(e) => return Ok(Err((e, "reading subscribed SKUs"))),
    }
    let mut assigning: HashSet<String> = HashSet::new();
    let mut members = 0u64;
    for group in req.groups.iter().map(|g| g.to_string()) {
        let mut seen: HashSet<String> = HashSet::from([group.clone()]);
        let mut queue: VecDeque<(String, Option<String>)> = VecDeque::from([(group.clone(), None)]);
        while let Some((current, through)) = queue.pop_front() {
            let mut pages = client.export_members(&current).try_chunks(999);
            loop {
                let Some(page) = unless_stopped(stop, pages.try_next()).await else {
                    return left();
                };
                let page = match page {
                    Ok(Some(page)) => page,
                    Ok(None) => break,
                    Err(e) => return Ok(Err((e.1, "reading group members"))),
                };
                let items: Vec<NewItem> = page
                    .into_iter()
                    .map(|user| {
                        let item = member_item(user, &group, through.clone());
                        assigning.extend(item.1);
                        item.0
                    })
                    .collect();
                match expand::insert_items(
                    db,
                    job.id,
                    job.runs,
                    owner,
                    items,
                    ItemStatus::Succeeded,
                    None,
                )
                .await?
                {
                    Some(n) => members += n,
                    // Cancelled while the groups were read, or the expansion lost: stop reading.
                    None => return Ok(Ok(None)),
                }
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    tracing::info!(job = %job.id, members, "process stopping: export stopped after the page stored");
                    return Ok(Ok(None));
                }
            }
            if req.transitive {
                let Some(nested) = unless_stopped(stop, client.nested_groups(&current)).await
                else {
                    return left();
                };
                let nested = match nested {
                    Ok(n) => n,
                    Err(e) => return Ok(Err((e, "reading nested groups"))),
                };
                for n in nested {
                    if seen.insert(n.id.clone()) {
                        if let Some(name) = n.display_name {
                            export.group_names.insert(n.id.clone(), name);
                        }
                        queue.push_back((n.id.clone(), Some(n.id)));
                    }
                }
            }
        }
    }
    for id in assigning {
        let known = export.group_names.contains_key(&id)
            || facts
                .groups
                .iter()
                .any(|g| g.id == id && g.display_name.is_some());
        if known {
            continue;
        }
        match client.get_group(&id).await {
            Ok(g) => {
                if let Some(name) = g.display_name {
                    export.group_names.insert(id, name);
                }
            }
            // A group deleted since: its id stands in for its name.
            Err(DirectoryError::NotFound { .. }) => {}
            Err(e) => return Ok(Err((e, "reading the groups that assign licenses"))),
        }
    }
    facts.export = Some(export);
    expand::set_facts(db, job.id, &facts).await?;
    Ok(Ok(Some(members)))
}

/// The item of a member, and the groups that assign it licenses.
fn member_item(user: User, group: &str, through: Option<String>) -> (NewItem, Vec<String>) {
    let member = ExportMember {
        snapshot: Snapshot::of(&user),
        account_enabled: user.account_enabled,
        through,
    };
    let assigning = member
        .snapshot
        .licenses
        .iter()
        .filter_map(|l| l.assigned_by_group.clone())
        .collect();
    let item = NewItem {
        usage_location: member.snapshot.usage_location.clone(),
        licenses: serde_json::to_string(&member).ok(),
        user_id: user.id,
        user_principal_name: user.user_principal_name,
        display_name: user.display_name,
        group_id: group.to_owned(),
        prediction: None,
    };
    (item, assigning)
}

/// An export file written to a temporary file (deleted when dropped).
#[derive(Debug)]
pub struct Rendered {
    pub file: std::fs::File,
    pub name: String,
    pub content_type: &'static str,
    /// Bytes.
    pub size: u64,
    /// Rows below the header.
    pub rows: u64,
}

/// The names the rows need, taken from the job's facts.
struct Names {
    groups: HashMap<String, String>,
    parts: HashMap<Uuid, String>,
    plans: BTreeMap<Uuid, String>,
    exported_at: String,
}

impl Names {
    fn group(&self, id: &str) -> String {
        self.groups
            .get(id)
            .cloned()
            .unwrap_or_else(|| id.to_owned())
    }
}

/// The rows of one member: one per license it holds, or one whose `assigned_by` is
/// [`HOLDS_NONE`] and whose other license columns are empty.
fn rows_of(item: &job_item::Model, names: &Names) -> Vec<Vec<String>> {
    let member: ExportMember = item
        .licenses
        .clone()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    let group = item.group_id.clone().unwrap_or_default();
    let (through, through_id) = match &member.through {
        Some(id) => (names.group(id), id.clone()),
        None => (String::new(), String::new()),
    };
    let base = |cells: [String; 5]| {
        let [part, sku, by, by_groups, disabled] = cells;
        vec![
            names.group(&group),
            group.clone(),
            item.user_id.clone(),
            item.user_principal_name.clone().unwrap_or_default(),
            item.display_name.clone().unwrap_or_default(),
            member
                .account_enabled
                .map(|b| b.to_string())
                .unwrap_or_default(),
            member.snapshot.usage_location.clone().unwrap_or_default(),
            part,
            sku,
            by,
            by_groups,
            disabled,
            through.clone(),
            through_id.clone(),
            names.exported_at.clone(),
        ]
    };
    // SKUs in the order the directory lists them, with every path by which each is held.
    let mut skus: Vec<Uuid> = Vec::new();
    for l in &member.snapshot.licenses {
        if !skus.contains(&l.sku_id) {
            skus.push(l.sku_id);
        }
    }
    if skus.is_empty() {
        let mut cells: [String; 5] = Default::default();
        cells[2] = HOLDS_NONE.to_owned();
        return vec![base(cells)];
    }
    skus.into_iter()
        .map(|sku| {
            let paths: Vec<_> = member
                .snapshot
                .licenses
                .iter()
                .filter(|l| l.sku_id == sku)
                .collect();
            let direct = paths.iter().any(|l| l.assigned_by_group.is_none());
            let by_groups: Vec<String> = paths
                .iter()
                .filter_map(|l| l.assigned_by_group.as_deref())
                .map(|g| names.group(g))
                .collect();
            let by = match (direct, by_groups.is_empty()) {
                (true, true) => "direct",
                (false, _) => "group",
                (true, false) => "both",
            };
            // A plan is off only when every path switches it off.
            let mut disabled: Vec<Uuid> = paths
                .first()
                .map(|l| l.disabled_plans.clone())
                .unwrap_or_default();
            disabled.retain(|p| paths.iter().all(|l| l.disabled_plans.contains(p)));
            let mut disabled: Vec<String> = disabled
                .iter()
                .map(|p| names.plans.get(p).cloned().unwrap_or_else(|| p.to_string()))
                .collect();
            disabled.sort();
            base([
                names.parts.get(&sku).cloned().unwrap_or_default(),
                sku.to_string(),
                by.to_owned(),
                by_groups.join("; "),
                disabled.join("; "),
            ])
        })
        .collect()
}

/// Writes rows to a file in one format.
enum Sink {
    Csv(Box<csv::Writer<BufWriter<std::fs::File>>>),
    Json {
        out: BufWriter<std::fs::File>,
        first: bool,
    },
    Xlsx {
        book: Box<rust_xlsxwriter::Workbook>,
        file: std::fs::File,
        row: u32,
    },
}

fn io_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(format!("writing the export: {e}"))
}

impl Sink {
    /// A sink writing to `file`; `created` (Unix seconds) is the workbook's creation time, so
    /// the same export renders to the same bytes.
    fn new(format: FileFormat, file: std::fs::File, created: i64) -> StoreResult<Sink> {
        match format {
            FileFormat::Csv => {
                let mut w = csv::Writer::from_writer(BufWriter::new(file));
                w.write_record(COLUMNS).map_err(io_error)?;
                Ok(Sink::Csv(Box::new(w)))
            }
            FileFormat::Json => {
                let mut out = BufWriter::new(file);
                out.write_all(b"[").map_err(io_error)?;
                Ok(Sink::Json { out, first: true })
            }
            FileFormat::Xlsx => {
                let mut book = Box::new(rust_xlsxwriter::Workbook::new());
                let created =
                    rust_xlsxwriter::ExcelDateTime::from_timestamp(created).map_err(io_error)?;
                book.set_properties(
                    &rust_xlsxwriter::DocProperties::new().set_creation_datetime(&created),
                );
                let bold = rust_xlsxwriter::Format::new().set_bold();
                let ws = book
                    .add_worksheet_with_constant_memory()
                    .map_err(io_error)?;
                ws.set_name("Export Results").map_err(io_error)?;
                ws.set_freeze_panes(1, 0).map_err(io_error)?;
                for (c, name) in COLUMNS.iter().enumerate() {
                    ws.write_string_with_format(0, c as u16, *name, &bold)
                        .map_err(io_error)?;
                }
                Ok(Sink::Xlsx { book, file, row: 0 })
            }
        }
    }

    fn row(&mut self, row: &[String]) -> StoreResult<()> {
        match self {
            Sink::Csv(w) => w.write_record(row).map_err(io_error),
            Sink::Json { out, first } => {
                let obj = super::files::JsonRow {
                    columns: COLUMNS,
                    cells: row,
                };
                out.write_all(if *first { b"\n  " } else { b",\n  " })
                    .map_err(io_error)?;
                *first = false;
                serde_json::to_writer(&mut *out, &obj).map_err(io_error)
            }
            Sink::Xlsx { book, row: r, .. } => {
                *r += 1;
                let ws = book.worksheet_from_index(0).map_err(io_error)?;
                for (c, v) in row.iter().enumerate() {
                    match (COLUMNS[c], v.as_str()) {
                        (_, "") => {}
                        ("account_enabled", "true" | "false") => {
                            ws.write_boolean(*r, c as u16, v == "true")
                                .map_err(io_error)?;
                        }
                        _ => {
                            ws.write_string(*r, c as u16, v).map_err(io_error)?;
                        }
                    }
                }
                Ok(())
            }
        }
    }

    /// Finish the file; returns it with its size.
    fn finish(self) -> StoreResult<(std::fs::File, u64)> {
        let mut file = match self {
            Sink::Csv(w) => (*w)
                .into_inner()
                .map_err(io_error)?
                .into_inner()
                .map_err(io_error)?,
            Sink::Json { mut out, first } => {
                out.write_all(if first { b"]\n" } else { b"\n]\n" })
                    .map_err(io_error)?;
                out.into_inner().map_err(io_error)?
            }
            Sink::Xlsx {
                mut book, mut file, ..
            } => {
                book.save_to_writer(&mut file).map_err(io_error)?;
                file
            }
        };
        file.flush().map_err(io_error)?;
        let size = file.seek(std::io::SeekFrom::End(0)).map_err(io_error)?;
        file.seek(std::io::SeekFrom::Start(0)).map_err(io_error)?;
        Ok((file, size))
    }
}

/// Members read from the database at once while writing.
const PAGE: u64 = 1000;

/// Write the export file of `job` (an export whose members are all read) to a temporary file,
/// in the job's format, with `exported_at` in every row. The database is read a page at a time
/// and each page is written before the next is read.
pub async fn render(
    db: &Db,
    job: &job::Model,
    format: FileFormat,
    exported_at: DateTime<Utc>,
) -> StoreResult<Rendered> {
    let facts = JobFacts::of(job);
    let export = facts.export.clone().unwrap_or_default();
    let mut groups: HashMap<String, String> = export.group_names.into_iter().collect();
    for g in &facts.groups {
        if let Some(name) = &g.display_name {
            groups.insert(g.id.clone(), name.clone());
        }
    }
    let names = Names {
        groups,
        parts: facts
            .skus
            .iter()
            .map(|s| (s.sku_id, s.sku_part_number.clone()))
            .collect(),
        plans: export.plan_names,
        exported_at: exported_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    };
    let created = exported_at.timestamp();
    let file = tempfile::tempfile().map_err(io_error)?;
    // Writing happens on a blocking thread, one page behind the reads.
    let (tx, mut pages) = tokio::sync::mpsc::channel::<Vec<job_item::Model>>(1);
    let writer = tokio::task::spawn_blocking(move || -> StoreResult<(std::fs::File, u64, u64)> {
        let mut sink = Sink::new(format, file, created)?;
        let mut rows = 0u64;
        while let Some(page) = pages.blocking_recv() {
            for item in &page {
                for row in rows_of(item, &names) {
                    sink.row(&row)?;
                    rows += 1;
                }
            }
        }
        let (file, size) = sink.finish()?;
        Ok((file, size, rows))
    });
    let mut after = 0i64;
    loop {
        let page = job_item::Entity::find()
            .filter(job_item::Column::JobId.eq(job.id))
            .filter(job_item::Column::Id.gt(after))
            .order_by_asc(job_item::Column::Id)
            .limit(PAGE)
            .all(db)
            .await?;
        let Some(last) = page.last() else {
            break;
        };
        after = last.id;
        if tx.send(page).await.is_err() {
            // The writer stopped: its error is reported below.
            break;
        }
    }
    drop(tx);
    let (file, size, rows) = writer
        .await
        .map_err(|e| StoreError::Internal(format!("writing the export: {e}")))??;
    Ok(Rendered {
        file,
        name: format!("job-{}-export.{}", job.id, format.extension()),
        content_type: format.content_type(),
        size,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::LicenseAssignmentState;

    #[test]
    fn one_row_per_license_and_one_for_a_member_without() {
        let e3 = Uuid::from_u128(3);
        let plan_a = Uuid::from_u128(10);
        let plan_b = Uuid::from_u128(11);
        let names = Names {
            groups: HashMap::from([
                ("g".to_owned(), "Engineering".to_owned()),
                ("p".to_owned(), "Licensed Pilot".to_owned()),
                ("n".to_owned(), "Platform Team".to_owned()),
            ]),
            parts: HashMap::from([(e3, "ENTERPRISEPACK".to_owned())]),
            plans: BTreeMap::from([(plan_a, "EXCHANGE_S_ENTERPRISE".to_owned())]),
            exported_at: "2026-11-30T03:00:00Z".into(),
        };
        let member = ExportMember {
            snapshot: Snapshot {
                usage_location: Some("SE".into()),
                licenses: vec![
                    LicenseAssignmentState {
                        sku_id: e3,
                        assigned_by_group: None,
                        disabled_plans: vec![plan_a, plan_b],
                    },
                    LicenseAssignmentState {
                        sku_id: e3,
                        assigned_by_group: Some("p".into()),
                        disabled_plans: vec![plan_a],
                    },
                ],
            },
            account_enabled: Some(false),
            through: Some("n".into()),
        };
        let item = job_item::Model {
            id: 1,
            job_id: Uuid::nil(),
            user_id: "u".into(),
            user_principal_name: Some("u@contoso".into()),
            display_name: Some("U".into()),
            group_id: Some("g".into()),
            usage_location: Some("SE".into()),
            licenses: serde_json::to_value(&member).ok(),
            status: crate::domain::ItemStatus::Succeeded,
            error_code: None,
            error_detail: None,
            attempts: 0,
            run_no: 1,
            lease_owner: None,
            lease_until: None,
            due_at: None,
            updated_at: Utc::now(),
            change: None,
            target: None,
            taken_over: false,
            prediction: None,
        };
        let rows = rows_of(&item, &names);
        assert_eq!(rows.len(), 1);
        let row: HashMap<&str, &str> = COLUMNS
            .iter()
            .copied()
            .zip(rows[0].iter().map(String::as_str))
            .collect();
        assert_eq!(row["group_name"], "Engineering");
        assert_eq!(row["account_enabled"], "false");
        assert_eq!(row["assigned_by"], "both");
        assert_eq!(row["assigned_by_groups"], "Licensed Pilot");
        assert_eq!(row["disabled_plans"], "EXCHANGE_S_ENTERPRISE");
        assert_eq!(row["member_through"], "Platform Team");
        let bare = job_item::Model {
            licenses: serde_json::to_value(ExportMember::default()).ok(),
            ..item
        };
        let rows = rows_of(&bare, &names);
        assert_eq!(rows.len(), 1);
        let row: HashMap<&str, &str> = COLUMNS
            .iter()
            .copied()
            .zip(rows[0].iter().map(String::as_str))
            .collect();
        assert_eq!(row["assigned_by"], "none", "no license: said so");
        for column in [
            "sku_part_number",
            "sku_id",
            "assigned_by_groups",
            "disabled_plans",
        ] {
            assert_eq!(row[column], "", "no license: no {column}");
        }
        assert_eq!(row["user_id"], "u");
    }
}
