// One job: summary, runs, failed items grouped by error code, the items, reports, cancel, rerun.

import { api } from './api.js';
import { h, replace, problemBox, toast, confirmDialog } from './dom.js';
import {
  KIND_LABELS, STATUS_LABELS, ITEM_STATUS_LABELS, isActive, isRerunnable, statusBadge, when,
  fullTime, duration, progressBar, allGroupNames, groupName, shortId, createdBy, expiry, usageLocation, num,
} from './format.js';

const LIVE_MS = 2000;
const ITEMS_PAGE = 50;

let skuNames = null;

/** sku_id → part number, read once per page load (empty when the directory cannot be read). */
async function loadSkuNames() {
  if (skuNames) return skuNames;
  try {
    const skus = await api.get('/v1/directory/skus');
    skuNames = new Map(skus.data.map((s) => [s.sku_id, s.sku_part_number]));
  } catch {
    return new Map();
  }
  return skuNames;
}

let tokenNames = null;

/** token id → name; only admins may list tokens, others see short ids. */
async function loadTokenNames(ctx) {
  if (tokenNames) return tokenNames;
  if (!ctx.canLaunch) return new Map();
  try {
    const tokens = await api.get('/v1/tokens');
    tokenNames = new Map(tokens.data.map((t) => [t.id, t.name]));
  } catch {
    return new Map();
  }
  return tokenNames;
}

/** Export Results facts on the job page (kept together for the language catalogue). */
const EXPORT_TEXT = {
  format: 'Format',
  location: 'Export location',
  download: 'Download from licensor',
  sharepoint: (l) => `SharePoint/OneDrive drive ${l.drive_id}, folder ${l.folder_path || '/'}`,
  s3: (l) => `S3 bucket ${l.bucket}${l.prefix ? `, prefix ${l.prefix}` : ''}`,
  deliveredTo: 'File',
  size: 'File size',
  rows: 'Rows',
  bytes: (n) => `${num(n)} bytes`,
};

/** Format, location and — once delivered — where the file went, its size and row count. */
function exportRows(job) {
  const e = job.request?.export || {};
  const loc = e.location || { type: 'download' };
  const where = loc.type === 'sharepoint' ? EXPORT_TEXT.sharepoint(loc)
    : loc.type === 's3' ? EXPORT_TEXT.s3(loc) : EXPORT_TEXT.download;
  const rows = [[EXPORT_TEXT.format, (e.format || 'csv').toUpperCase()], [EXPORT_TEXT.location, where]];
  const d = job.export;
  if (d) {
    const link = /^https?:/.test(d.url) ? h('a', { href: d.url, rel: 'noopener', target: '_blank', id: 'export-url' }, d.url)
      : h('code', { id: 'export-url' }, d.url);
    rows.push([EXPORT_TEXT.deliveredTo, link]);
    rows.push([EXPORT_TEXT.size, EXPORT_TEXT.bytes(d.size)]);
    rows.push([EXPORT_TEXT.rows, num(d.rows)]);
  }
  return rows;
}

export function jobView(container, ctx, id) {
  const state = {
    job: null,
    runs: [],
    errors: [],
    items: [],
    itemsCursor: null,
    itemStatus: '',
    itemCode: '',
    skus: new Map(),
    tokens: new Map(),
    stopped: false,
    timer: null,
    lastProgress: '',
  };

  const head = h('div', { class: 'page-head' }, h('h1', {}, 'Job'));
  const notice = h('div');
  const summary = h('div', { class: 'card summary' });
  const runs = h('div', { class: 'card runs' });
  const errors = h('div', { class: 'card errors', id: 'errors' });
  const itemsBody = h('div', { class: 'items-body' });
  const itemsMore = h('button', { type: 'button', class: 'btn', hidden: true, onclick: () => loadItems(false) }, 'Load more');
  const itemFilters = h('div', { class: 'segmented', role: 'group', 'aria-label': 'Show items' });
  const codeChip = h('div', { class: 'code-chip-wrap' });
  const items = h('div', { class: 'card items', id: 'items' },
    h('div', { class: 'card-head' }, h('h2', {}, 'Members'), itemFilters),
    codeChip,
    itemsBody,
    h('div', { class: 'more' }, itemsMore),
  );

  replace(container, h('section', { class: 'job-page' },
    h('nav', { class: 'crumbs' }, h('a', { href: '#/' }, '← All jobs')),
    head,
    notice,
    h('div', { class: 'job-grid' }, summary, errors),
    runs,
    items,
  ));
  replace(summary, h('p', { class: 'loading' }, 'Loading the job…'));

  loadSkuNames().then((m) => {
    state.skus = m;
    if (state.job && !state.stopped) renderSummary();
  });
  loadTokenNames(ctx).then((m) => {
    state.tokens = m;
    if (state.job && !state.stopped) renderRuns();
  });

  async function load(first = false) {
    if (state.stopped) return;
    clearTimeout(state.timer);
    try {
      const [job, runList, errorList] = await Promise.all([
        api.get(`/v1/jobs/${id}`),
        api.get(`/v1/jobs/${id}/runs`),
        api.get(`/v1/jobs/${id}/errors`),
      ]);
      if (state.stopped) return;
      const progressKey = JSON.stringify([job.status, job.progress, job.runs]);
      const changed = progressKey !== state.lastProgress;
      state.lastProgress = progressKey;
      // A finished job with failures opens on its failed members.
      if (first && job.progress.failed > 0 && !isActive(job.status)) state.itemStatus = 'failed';
      state.job = job;
      state.runs = runList.data;
      state.errors = errorList.data;
      render();
      if (first || changed) await loadItems(true);
    } catch (err) {
      if (state.stopped) return;
      if (first || !state.job) {
        replace(head, h('h1', {}, 'Job'));
        replace(summary, problemBox(err.problem || { title: 'Could not load the job', detail: String(err) }));
        if (err.status === 404) return;
      } else {
        replace(notice, h('div', { class: 'alert alert-warn', role: 'status' },
          `Could not refresh (${err.message}); trying again…`));
      }
    }
    schedule();
  }

  function schedule() {
    if (state.stopped || !state.job) return;
    clearTimeout(state.timer);
    if (isActive(state.job.status)) state.timer = setTimeout(() => load(), LIVE_MS);
  }

  function render() {
    replace(notice);
    renderHead();
    renderSummary();
    renderRuns();
    renderErrors();
    renderItemFilters();
  }

  function renderHead() {
    const job = state.job;
    const actions = [];
    if (ctx.canOperate && isActive(job.status)) {
      actions.push(h('button', { type: 'button', class: 'btn btn-danger', id: 'cancel-job', onclick: cancelJob }, 'Cancel'));
    }
    if (ctx.canOperate && isRerunnable(job.status)) {
      actions.push(h('button', { type: 'button', class: 'btn btn-primary', id: 'rerun-job', onclick: rerunJob }, 'Rerun'));
    }
    const downloads = h('div', { class: 'downloads', role: 'group', 'aria-label': 'Download report' },
      h('span', { class: 'muted small' }, 'Report'),
      ['csv', 'json', 'xlsx'].map((format) => h('button', {
        type: 'button',
        class: 'btn btn-small',
        dataset: { report: format },
        onclick: (e) => download(e.currentTarget, `/v1/jobs/${id}/report`, { format }, `job-${id}-report.${format}`),
      }, format.toUpperCase())),
    );
    if (job.kind === 'export' && (job.status === 'finished' || job.status === 'finished_with_exception')) {
      const format = job.request?.export?.format || 'csv';
      actions.push(h('button', {
        type: 'button',
        class: 'btn btn-primary',
        id: 'download-export',
        onclick: (e) => download(e.currentTarget, `/v1/jobs/${id}/export`, null, `job-${id}-export.${format}`),
      }, `Download export (${format.toUpperCase()})`));
    }
    replace(head,
      h('div', { class: 'title-block' },
        h('h1', {}, KIND_LABELS[job.kind] || job.kind, ' ', statusBadge(job.status)),
        h('p', { class: 'muted small mono', title: 'Job ID' }, job.id)),
      h('div', { class: 'ribbon' }, actions, downloads),
    );
    document.title = `${KIND_LABELS[job.kind] || 'Job'} ${shortId(job.id)} · ${STATUS_LABELS[job.status] || job.status} · Job Monitor`;
  }

  function skuLabel(skuId) {
    return state.skus.get(skuId) || skuId;
  }

  function renderSummary() {
    const job = state.job;
    const req = job.request || {};
    const rows = [['Groups', allGroupNames(job) || '—']];
    if (req.transitive) rows.push(['Nested groups', 'Members of nested groups included']);
    if (job.kind === 'assign' || job.kind === 'replace') {
      const add = (req.add_licenses || []).map((l) => {
        const off = (l.disabled_plans || []).length;
        return `${skuLabel(l.sku_id)}${off ? ` (${off} service plan${off === 1 ? '' : 's'} off)` : ''}`;
      });
      rows.push([job.kind === 'replace' ? 'Replacement licenses' : 'Licenses', add.join(', ') || '—']);
    }
    if (job.kind === 'remove' || job.kind === 'replace') {
      const removed = req.replace_all ? 'All licenses assigned directly' : (req.remove_licenses || []).map(skuLabel).join(', ');
      rows.push([job.kind === 'replace' ? 'Replaced licenses' : 'Licenses to remove', removed || '—']);
    }
    if (job.kind === 'assign' || job.kind === 'replace') rows.push(['Location', usageLocation(req.usage_location)]);
    if (job.kind === 'assign') rows.push(['Expiry', expiry(req.expires_in)]);
    if (job.kind === 'export') rows.push(...exportRows(job));
    rows.push(['Created by', createdBy(job)]);
    rows.push(['Created', fullTime(job.created_at)]);
    // started_at and finished_at belong to the latest run; the runs list has each one.
    const rerun = job.runs > 1;
    rows.push([rerun ? 'Last run started' : 'Started', fullTime(job.started_at)]);
    rows.push([rerun ? 'Last run finished' : 'Finished', fullTime(job.finished_at)]);
    const took = duration(job.started_at, job.finished_at);
    if (took) rows.push([job.finished_at ? (rerun ? 'Last run took' : 'Took') : 'Running for', took]);
    rows.push(['Runs', String(job.runs)]);
    if (job.parent_job_id) {
      rows.push(['Started from', h('a', { href: `#/jobs/${job.parent_job_id}` }, shortId(job.parent_job_id))]);
    }
    replace(summary,
      h('h2', {}, 'Summary'),
      job.error ? h('div', { class: 'alert alert-error', role: 'alert' },
        h('strong', {}, 'The job could not run'),
        h('p', {}, job.error.detail || ''),
        h('p', { class: 'muted small' }, `Code: ${job.error.code}`)) : null,
      progressBar(job.progress),
      h('dl', { class: 'facts' }, rows.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])),
    );
  }

  function startedBy(run) {
    const by = run.started_by;
    if (!by) return run.run_no === 1 ? createdBy(state.job) : '—';
    if (by === state.job.created_by && state.job.created_by_name) return state.job.created_by_name;
    if (state.tokens.has(by)) return state.tokens.get(by);
    if (by === ctx.me?.token_id) return 'this token';
    return `token ${shortId(by)}`;
  }

  function renderRuns() {
    const list = state.runs;
    replace(runs,
      h('h2', {}, 'Runs ', h('span', { class: 'count-pill' }, String(list.length))),
      list.length === 0
        ? h('p', { class: 'muted' }, 'Not started yet.')
        : h('div', { class: 'table-wrap' }, h('table', { class: 'runs-table', id: 'runs-table' },
          h('thead', {}, h('tr', {},
            ['Run', 'Status', 'Started by', 'Started', 'Finished', 'Total', 'Succeeded', 'Failed', 'Skipped']
              .map((t, i) => h('th', { scope: 'col', class: i >= 5 ? 'num' : null }, t)))),
          h('tbody', {}, list.map((r) => h('tr', { dataset: { run: r.run_no } },
            h('td', { 'data-label': 'Run' }, `#${r.run_no}`),
            h('td', { 'data-label': 'Status' }, statusBadge(r.status)),
            h('td', { 'data-label': 'Started by' }, startedBy(r)),
            h('td', { 'data-label': 'Started' }, when(r.started_at)),
            h('td', { 'data-label': 'Finished' }, when(r.finished_at)),
            h('td', { 'data-label': 'Total', class: 'num' }, num(r.total)),
            h('td', { 'data-label': 'Succeeded', class: 'num' }, num(r.succeeded)),
            h('td', { 'data-label': 'Failed', class: 'num' }, num(r.failed)),
            h('td', { 'data-label': 'Skipped', class: 'num' }, num(r.skipped)),
          ))),
        )),
    );
  }

  function renderErrors() {
    const list = state.errors;
    const total = list.reduce((n, e) => n + e.count, 0);
    replace(errors,
      h('h2', {}, 'Errors by code ', h('span', { class: 'count-pill' }, num(total))),
      list.length === 0
        ? h('p', { class: 'muted' }, isActive(state.job.status) ? 'No member has failed so far.' : 'No member failed.')
        : h('ul', { class: 'error-groups' }, list.map((e) => h('li', { class: 'error-group', dataset: { code: e.code } },
          h('div', { class: 'error-code' },
            h('code', {}, e.code),
            h('span', { class: 'error-count' }, `${num(e.count)} member${e.count === 1 ? '' : 's'}`)),
          h('p', { class: 'error-explanation' }, e.explanation || ''),
          h('button', {
            type: 'button',
            class: 'btn btn-small',
            onclick: () => {
              state.itemStatus = 'failed';
              state.itemCode = e.code;
              renderItemFilters();
              loadItems(true);
              items.scrollIntoView({ behavior: 'smooth', block: 'start' });
            },
          }, 'Show these members'),
        ))),
    );
  }

  function renderItemFilters() {
    const options = [['', 'All'], ...Object.entries(ITEM_STATUS_LABELS)];
    const p = state.job?.progress || {};
    replace(itemFilters, options.map(([value, label]) => {
      const count = value ? p[value] : p.total;
      return h('button', {
        type: 'button',
        class: 'seg',
        'aria-pressed': String(state.itemStatus === value),
        dataset: { itemStatus: value || 'all' },
        onclick: () => {
          state.itemStatus = value;
          if (value !== 'failed') state.itemCode = '';
          renderItemFilters();
          loadItems(true);
        },
      }, label, typeof count === 'number' ? h('span', { class: 'seg-count' }, num(count)) : null);
    }));
    replace(codeChip, state.itemCode
      ? h('span', { class: 'chip' }, 'Error code: ', h('code', {}, state.itemCode),
        h('button', {
          type: 'button',
          class: 'chip-x',
          'aria-label': 'Show all error codes',
          onclick: () => {
            state.itemCode = '';
            renderItemFilters();
            loadItems(true);
          },
        }, '×'))
      : null);
  }

  async function loadItems(reset) {
    const limit = reset ? Math.min(500, Math.max(ITEMS_PAGE, state.items.length)) : ITEMS_PAGE;
    const cursor = reset ? null : state.itemsCursor;
    itemsMore.disabled = true;
    try {
      const page = await api.get(`/v1/jobs/${id}/items`, {
        status: state.itemStatus, code: state.itemCode, limit, cursor,
      });
      if (state.stopped) return;
      state.items = reset ? page.data : state.items.concat(page.data);
      state.itemsCursor = page.next_cursor;
      renderItems();
    } catch (err) {
      if (state.stopped) return;
      replace(itemsBody, problemBox(err.problem || { title: 'Could not load the members', detail: String(err) }));
    } finally {
      itemsMore.disabled = false;
    }
  }


  function renderItems() {
    itemsMore.hidden = !state.itemsCursor;
    if (state.items.length === 0) {
      replace(itemsBody, h('p', { class: 'muted' },
        state.job && state.job.progress.total === 0 && isActive(state.job.status)
          ? 'The groups are being read…'
          : 'No member matches.'));
      return;
    }
    replace(itemsBody, h('div', { class: 'table-wrap' }, h('table', { class: 'items-table', id: 'items-table' },
      h('thead', {}, h('tr', {},
        ['Member', 'Group', 'Status', 'Error', 'Attempts', 'Run', 'Updated']
          .map((t) => h('th', { scope: 'col', class: t === 'Attempts' || t === 'Run' ? 'num' : null }, t)))),
      h('tbody', {}, state.items.map((it) => h('tr', { dataset: { status: it.status } },
        h('td', { 'data-label': 'Member', class: 'col-member' },
          h('div', {}, it.display_name || it.user_principal_name || it.user_id),
          it.display_name && it.user_principal_name ? h('div', { class: 'muted small' }, it.user_principal_name) : null),
        h('td', { 'data-label': 'Group', class: 'col-group' }, groupName(it.group_id)),
        h('td', { 'data-label': 'Status', class: 'col-status' }, h('span', { class: `item-status item-${it.status}` }, ITEM_STATUS_LABELS[it.status] || it.status)),
        h('td', { 'data-label': 'Error', class: it.error ? 'col-error' : 'col-error no-error' }, it.error
          ? [h('code', {}, it.error.code), it.error.detail ? h('div', { class: 'muted small' }, it.error.detail) : null]
          : h('span', { class: 'muted' }, '—')),
        h('td', { 'data-label': 'Attempts', class: 'num col-attempts' }, num(it.attempts)),
        h('td', { 'data-label': 'Run', class: 'num col-run' }, it.run_no ? `#${it.run_no}` : '—'),
        h('td', { 'data-label': 'Updated', class: 'col-updated' }, when(it.updated_at)),
      ))),
    )));
  }

  async function download(button, path, query, name) {
    button.disabled = true;
    try {
      const saved = await api.download(path, query, name);
      toast(`Downloaded ${saved}`);
    } catch (err) {
      toast(`Download failed: ${err.message}`, 'error');
    } finally {
      button.disabled = false;
    }
  }

  async function cancelJob() {
    const ok = await confirmDialog({
      title: 'Cancel this job?',
      body: 'Members not processed yet are skipped. Changes already made stay as they are.',
      yes: 'Cancel job',
      no: 'Keep running',
      danger: true,
    });
    if (!ok) return;
    try {
      state.job = await api.post(`/v1/jobs/${id}/cancel`);
      toast('The job was cancelled.');
    } catch (err) {
      toast(err.code === 'not_cancellable' ? `Not cancelled: ${err.message}` : `Cancel failed: ${err.message}`, 'error');
    }
    load();
  }

  async function rerunJob() {
    try {
      state.job = await api.post(`/v1/jobs/${id}/rerun`);
      toast('The job was started again: only what failed is done again.');
    } catch (err) {
      toast(err.code === 'not_rerunnable' ? `Not started: ${err.message}` : `Rerun failed: ${err.message}`, 'error');
    }
    load();
  }

  load(true);

  return () => {
    state.stopped = true;
    clearTimeout(state.timer);
  };
}
