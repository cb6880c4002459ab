// One job: summary, runs, failed items grouped by error code, the items, reports, cancel, rerun.

import { api } from './api.js';
import { h, replace, problemBox, toast, confirmDialog } from './dom.js';
import { KIND_LABELS, STATUS_LABELS, ITEM_STATUS_LABELS, isActive, isSettling, isRerunnable, statusBadge, itemStatusBadge, stuckBadge, when, fullTime, duration, progressBar, allGroupNames, groupName, shortId, createdBy, expiry, usageLocation, num, jobShortId, codeExplanation, itemError } from './format.js';
import { t } from './i18n.js';
import { activityCard } from './activity.js';
import { previewSummary, predictionCell, shortagePrompt } from './preview.js';

const LIVE_MS = 2000;
const ITEMS_PAGE = 50;

/** The change ledger and Undo: every visible string of them, from the catalogue (i18n.js). */
const LEDGER_TEXT = {
  get title() { return t('ledger.title'); },
  get intro() { return t('ledger.intro'); },
  get none() { return t('ledger.none'); },
  get columns() { return ['member', 'status', 'before', 'after', 'verified', 'run'].map((c) => t(`ledger.col.${c}`)); },
  get noLicense() { return t('ledger.noLicense'); },
  locationSet: (location) => t('ledger.locationSet', { location }),
  without: (n) => t('ledger.plansOff', { n }),
  get verified() { return { true: t('ledger.verified'), false: t('ledger.drifted'), null: '—' }; },
  get more() { return t('ledger.more'); },
  get loadFailed() { return t('ledger.loadFailed'); },
  get undo() { return t('ledger.undo'); },
  get undoTitle() { return t('ledger.undoTitle'); },
  undoBody: (n) => t('ledger.undoBody', { n }),
  undoYes: (n) => t('ledger.undoYes', { n }),
  get undoNo() { return t('ledger.undoNo'); },
  get undoStarted() { return t('ledger.undoStarted'); },
  undoFailed: (m) => t('ledger.undoFailed', { message: m }),
};

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

/** Export Results facts on the job page, from the catalogue (i18n.js). */
const EXPORT_TEXT = {
  get format() { return t('export.formatShort'); },
  get location() { return t('export.location'); },
  get download() { return t('export.download'); },
  sharepoint: (l) => t('export.atDrive', { drive: l.drive_id, folder: l.folder_path || '/' }),
  s3: (l) => (l.prefix ? t('export.atBucketPrefix', { bucket: l.bucket, prefix: l.prefix }) : t('export.atBucket', { bucket: l.bucket })),
  get deliveredTo() { return t('export.file'); },
  get size() { return t('export.size'); },
  get rows() { return t('export.rows'); },
  bytes: (n) => t('export.bytes', { n: num(n) }),
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
  // The members' filter chosen before the page was built again (a change of language, see main.js),
  // once the job had been read (its first reading chooses the failed members of a finished job).
  const draft = ctx.draft?.loaded ? ctx.draft : null;
  if (draft) {
    state.itemStatus = draft.itemStatus;
    state.itemCode = draft.itemCode;
  }

  const head = h('div', { class: 'page-head' }, h('h1', {}, t('job.title')));
  const notice = h('div');
  const summary = h('div', { class: 'card summary' });
  const previewCard = h('div', { class: 'card preview-card', id: 'preview', hidden: true });
  const runs = h('div', { class: 'card runs' });
  const errors = h('div', { class: 'card errors', id: 'errors' });
  const itemsBody = h('div', { class: 'items-body' });
  const itemsMore = h('button', { type: 'button', class: 'btn', hidden: true, onclick: () => loadItems(false) }, t('common.loadMore'));
  const itemFilters = h('div', { class: 'segmented', role: 'group', 'aria-label': t('job.showItems') });
  const codeChip = h('div', { class: 'code-chip-wrap' });
  const items = h('div', { class: 'card items', id: 'items' },
    h('div', { class: 'card-head' }, h('h2', {}, t('job.members')), itemFilters),
    codeChip,
    itemsBody,
    h('div', { class: 'more' }, itemsMore),
  );
  const ledger = changesLedger(id, (n) => { state.changesTotal = n; if (state.job) renderHead(); });
  const activity = activityCard(id);

  replace(container, h('section', { class: 'job-page' },
    h('nav', { class: 'crumbs' }, h('a', { href: '#/' }, t('job.allJobs'))),
    head,
    notice,
    previewCard,
    h('div', { class: 'job-grid' }, summary, errors),
    runs,
    activity.card,
    items,
    ledger.card,
  ));
  replace(summary, h('p', { class: 'loading' }, t('job.loading')));

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
      if (first && !draft && job.progress.failed > 0 && !isActive(job.status)) state.itemStatus = 'failed';
      state.job = job;
      state.runs = runList.data;
      state.errors = errorList.data;
      render();
      if (first || changed) await Promise.all([loadItems(true), ledger.load(), activity.load(job)]);
    } catch (err) {
      if (state.stopped) return;
      if (first || !state.job) {
        replace(head, h('h1', {}, t('job.title')));
        replace(summary, problemBox(err.problem || { title: t('job.loadFailed'), detail: String(err) }));
        if (err.status === 404) return;
      } else {
        replace(notice, h('div', { class: 'alert alert-warn', role: 'status' },
          t('job.refreshRetry', { message: err.message })));
      }
    }
    schedule();
  }

  function schedule() {
    if (state.stopped || !state.job) return;
    clearTimeout(state.timer);
    if (isActive(state.job.status) || isSettling(state.job)) state.timer = setTimeout(() => load(), LIVE_MS);
  }

  function render() {
    replace(notice);
    renderHead();
    renderSummary();
    renderPreview();
    renderRuns();
    renderErrors();
    renderItemFilters();
  }

  function renderHead() {
    const job = state.job;
    const actions = [];
    if (job.status === 'paused') {
      actions.push(h('span', { class: 'muted small', id: 'paused-note' }, t('job.pausedNote', { members: job.request?.canary?.members ?? '' })));
    }
    if (ctx.canOperate && job.status === 'paused') {
      actions.push(h('button', { type: 'button', class: 'btn btn-primary', id: 'resume-job', onclick: resumeJob }, t('job.resume')));
    }
    if (ctx.canOperate && (isActive(job.status) || job.status === 'paused')) {
      actions.push(h('button', { type: 'button', class: 'btn btn-danger', id: 'cancel-job', onclick: cancelJob }, t('job.cancel')));
    }
    if (job.status === 'previewed') actions.push(...previewActions());
    if (ctx.canOperate && isRerunnable(job.status)) {
      actions.push(h('button', { type: 'button', class: 'btn btn-primary', id: 'rerun-job', onclick: rerunJob }, t('job.rerun')));
    }
    if (ctx.canLaunch && !isActive(job.status) && job.kind !== 'export' && state.changesTotal > 0) {
      actions.push(undoButton(id, state.changesTotal));
    }
    const downloads = h('div', { class: 'downloads', role: 'group', 'aria-label': t('job.downloadReport') },
      h('span', { class: 'muted small' }, t('job.report')),
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
      }, t('job.downloadExport', { format: format.toUpperCase() })));
    }
    replace(head,
      h('div', { class: 'title-block' },
        h('h1', {}, KIND_LABELS[job.kind] || job.kind, ' ', statusBadge(job.status), ' ', stuckBadge(job)),
        h('p', { class: 'muted small mono', title: t('job.id') }, job.id)),
      h('div', { class: 'ribbon' }, actions, downloads),
    );
    document.title = t('title.jobDetail', { kind: KIND_LABELS[job.kind] || t('job.title'), id: jobShortId(job.id), status: STATUS_LABELS[job.status] || job.status });
  }

  function skuLabel(skuId) {
    return state.skus.get(skuId) || skuId;
  }

  function renderSummary() {
    const job = state.job;
    const req = job.request || {};
    const rows = [[t('job.groups'), allGroupNames(job) || '—']];
    if (req.transitive) rows.push([t('job.nested'), t('job.nestedIncluded')]);
    if (job.kind === 'assign' || job.kind === 'replace') {
      const add = (req.add_licenses || []).map((l) => {
        const off = (l.disabled_plans || []).length;
        return `${skuLabel(l.sku_id)}${off ? ` (${t('job.plansOff', { n: off })})` : ''}`;
      });
      rows.push([job.kind === 'replace' ? t('job.replacementLicenses') : t('job.licenses'), add.join(', ') || '—']);
    }
    if (job.kind === 'remove' || job.kind === 'replace') {
      const removed = req.replace_all ? t('job.allDirect') : (req.remove_licenses || []).map(skuLabel).join(', ');
      rows.push([job.kind === 'replace' ? t('job.replacedLicenses') : t('job.licensesToRemove'), removed || '—']);
    }
    if (job.kind === 'assign' || job.kind === 'replace') rows.push([t('job.location'), usageLocation(req.usage_location)]);
    if (job.kind === 'assign') rows.push([t('job.expiry'), expiry(req.expires_in)]);
    if (job.kind === 'export') rows.push(...exportRows(job));
    rows.push([t('job.createdBy'), createdBy(job)]);
    rows.push([t('job.created'), fullTime(job.created_at)]);
    // started_at and finished_at belong to the latest run; the runs list has each one.
    const rerun = job.runs > 1;
    rows.push([rerun ? t('job.lastRunStarted') : t('job.started'), fullTime(job.started_at)]);
    rows.push([rerun ? t('job.lastRunFinished') : t('job.finished'), isSettling(job)
      ? h('span', { id: 'settling' }, t('job.settling', { n: job.progress.pending }))
      : fullTime(job.finished_at)]);
    // A clock runs only while the job runs: a paused (or previewed, or waiting) job has none.
    if (job.started_at && job.finished_at) {
      rows.push([rerun ? t('job.lastRunTook') : t('job.took'), duration(job.started_at, job.finished_at)]);
    } else if (job.started_at && job.status === 'running') {
      rows.push([t('job.runningFor'), duration(job.started_at)]);
    } else if (job.status === 'paused') {
      rows.push([t('job.runTime'), h('span', { id: 'run-time' }, t('job.runTimePaused'))]);
    }
    rows.push([t('job.runs'), String(job.runs)]);
    if (isActive(job.status)) rows.push([t('job.lastProgress'), fullTime(job.last_progress_at)]);
    if (job.stuck) rows.push([t('job.stuckSince'), h('span', { id: 'stuck-since' }, fullTime(job.stuck_since))]);
    rows.push([t('job.requeues'), h('span', { id: 'job-requeues' }, num(job.requeues || 0))]);
    if (job.parent_job_id) {
      const undoes = job.request && job.request.undo_of;
      rows.push([undoes ? t('job.undoes') : t('job.startedFrom'), h('a', { href: `#/jobs/${job.parent_job_id}` }, jobShortId(job.parent_job_id))]);
    }
    replace(summary,
      h('h2', {}, t('job.summary')),
      job.error ? h('div', { class: 'alert alert-error', role: 'alert' },
        h('strong', {}, t('job.couldNotRun')),
        codeExplanation(job.error.code) ? h('p', { class: 'error-explained' }, codeExplanation(job.error.code)) : null,
        h('p', {}, job.error.detail || ''),
        h('p', { class: 'muted small' }, t('common.code', { code: job.error.code }))) : null,
      progressBar(job.progress, { expanding: job.expanding }),
      h('dl', { class: 'facts' }, rows.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])),
    );
  }

  /** The preview's summary: what it predicts, or — once launched — what it predicted. */
  function renderPreview() {
    const job = state.job;
    const p = job.preview;
    previewCard.hidden = !p;
    if (!p) {
      replace(previewCard);
      return;
    }
    const waiting = job.status === 'previewed';
    replace(previewCard,
      h('div', { class: 'card-head' },
        h('h2', {}, t('preview.heading')),
        h('span', { class: 'muted small', id: 'preview-when' }, p.launched_at
          ? t('preview.launchedAt', { previewed: fullTime(p.previewed_at), launched: fullTime(p.launched_at) })
          : t('preview.previewedAt', { time: fullTime(p.previewed_at) }))),
      waiting ? h('p', { class: 'muted small' }, t('preview.waiting')) : null,
      waiting ? shortagePrompt(p, skuLabel) : null,
      p.expanded_again ? h('p', { class: 'muted small' }, t('preview.expandedAgain')) : null,
      previewSummary(p, { skuName: skuLabel, request: job.request || {} }));
  }

  /** Launch (admin) and Cancel (operator) for a job that is a preview. */
  function previewActions() {
    const p = state.job.preview || {};
    const anyway = p.would_fail > 0;
    const out = [];
    if (ctx.canOperate) {
      out.push(h('button', { type: 'button', class: 'btn', id: 'cancel-preview', onclick: cancelPreview }, t('preview.cancel')));
    }
    if (ctx.canLaunch) {
      out.push(h('button', {
        type: 'button',
        class: anyway ? 'btn btn-danger' : 'btn btn-primary',
        id: 'launch-preview',
        onclick: launchPreview,
      }, anyway ? t('preview.launchAnyway') : t('preview.launch')));
    }
    return out;
  }

  async function launchPreview() {
    const p = state.job.preview || {};
    const anyway = p.would_fail > 0;
    const ok = await confirmDialog({
      title: t('preview.launchTitle'),
      body: [
        h('p', {}, t('preview.launchBody', { n: p.members === 1 ? 1 : num(p.members) })),
        anyway ? h('p', {}, t('preview.launchBodyFail', { n: p.would_fail === 1 ? 1 : num(p.would_fail) })) : null,
      ],
      yes: anyway ? t('preview.launchAnyway') : t('preview.launch'),
      no: t('preview.notNow'),
      danger: anyway,
    });
    if (!ok) return;
    try {
      state.job = await api.post(`/v1/jobs/${id}/launch`);
      toast(t('launch.started', { kind: KIND_LABELS[state.job.kind] || '' }));
    } catch (err) {
      toast(t('preview.launchFailedMsg', { message: err.message }), 'error');
    }
    load();
  }

  async function cancelPreview() {
    const ok = await confirmDialog({
      title: t('preview.cancelTitle'),
      body: t('preview.cancelBody'),
      yes: t('preview.cancel'),
      no: t('preview.keep'),
      danger: true,
    });
    if (!ok) return;
    try {
      state.job = await api.post(`/v1/jobs/${id}/cancel`);
      toast(t('preview.cancelled'));
    } catch (err) {
      toast(t('preview.cancelFailed', { message: err.message }), 'error');
    }
    load();
  }

  function startedBy(run) {
    const by = run.started_by;
    if (!by) return run.run_no === 1 ? createdBy(state.job) : '—';
    if (by === state.job.created_by && state.job.created_by_name) return state.job.created_by_name;
    if (state.tokens.has(by)) return state.tokens.get(by);
    if (by === ctx.me?.token_id) return t('job.thisToken');
    return t('createdBy.token', { id: shortId(by) });
  }

  function renderRuns() {
    const list = state.runs;
    replace(runs,
      h('h2', {}, `${t('job.runs')} `, h('span', { class: 'count-pill' }, String(list.length))),
      list.length === 0
        ? h('p', { class: 'muted' }, t('job.notStarted'))
        : h('div', { class: 'table-wrap' }, h('table', { class: 'runs-table', id: 'runs-table' },
          h('thead', {}, h('tr', {},
            ['run', 'status', 'startedBy', 'started', 'finished', 'total', 'succeeded', 'failed', 'skipped']
              .map((k, i) => h('th', { scope: 'col', class: i >= 5 ? 'num' : null }, t(`job.col.${k}`))))),
          h('tbody', {}, list.map((r) => h('tr', { dataset: { run: r.run_no } },
            h('td', { 'data-label': t('job.col.run') }, `#${r.run_no}`),
            h('td', { 'data-label': t('job.col.status') }, statusBadge(r.status)),
            h('td', { 'data-label': t('job.col.startedBy') }, startedBy(r)),
            h('td', { 'data-label': t('job.col.started') }, when(r.started_at)),
            h('td', { 'data-label': t('job.col.finished') }, when(r.finished_at)),
            h('td', { 'data-label': t('job.col.total'), class: 'num' }, num(r.total)),
            h('td', { 'data-label': t('job.col.succeeded'), class: 'num' }, num(r.succeeded)),
            h('td', { 'data-label': t('job.col.failed'), class: 'num' }, num(r.failed)),
            h('td', { 'data-label': t('job.col.skipped'), class: 'num' }, num(r.skipped)),
          ))),
        )),
    );
  }

  function renderErrors() {
    const list = state.errors;
    const total = list.reduce((n, e) => n + e.count, 0);
    replace(errors,
      h('h2', {}, t('job.errorsByCode'), h('span', { class: 'count-pill' }, num(total))),
      list.length === 0
        ? h('p', { class: 'muted' }, state.job.status === 'previewed' ? t('preview.nothingRan')
          : isActive(state.job.status) ? t('job.noneFailedSoFar') : t('job.noneFailed'))
        : h('ul', { class: 'error-groups' }, list.map((e) => h('li', { class: 'error-group', dataset: { code: e.code } },
          h('div', { class: 'error-code' },
            h('code', {}, e.code),
            h('span', { class: 'error-count' }, t('job.nMembers', { n: e.count === 1 ? 1 : num(e.count) }))),
          h('p', { class: 'error-explanation' }, codeExplanation(e.code, e.explanation || '')),
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
          }, t('job.showTheseMembers')),
        ))),
    );
  }

  function renderItemFilters() {
    const options = [['', t('job.filterAll')], ...Object.entries(ITEM_STATUS_LABELS)];
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
      ? h('span', { class: 'chip' }, t('job.errorCode'), h('code', {}, state.itemCode),
        h('button', {
          type: 'button',
          class: 'chip-x',
          'aria-label': t('job.showAllCodes'),
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
      replace(itemsBody, problemBox(err.problem || { title: t('job.membersLoadFailed'), detail: String(err) }));
    } finally {
      itemsMore.disabled = false;
    }
  }


  function renderItems() {
    itemsMore.hidden = !state.itemsCursor;
    if (state.items.length === 0) {
      replace(itemsBody, h('p', { class: 'muted' },
        state.job && state.job.progress.total === 0 && isActive(state.job.status)
          ? t('job.readingGroups')
          : t('job.noMemberMatches')));
      return;
    }
    // A preview's members carry their predicted outcome, also once it was launched.
    const predicted = state.items.some((it) => it.prediction);
    replace(itemsBody, h('div', { class: 'table-wrap' }, h('table', { class: 'items-table', id: 'items-table' },
      h('thead', {}, h('tr', {},
        ['member', 'group', 'status', 'error', 'attempts', 'run', 'updated']
          .map((k) => h('th', { scope: 'col', class: k === 'attempts' || k === 'run' ? 'num' : null }, t(`job.col.${k}`))),
        predicted ? h('th', { scope: 'col' }, t('preview.col.predicted')) : null)),
      h('tbody', {}, state.items.map((it) => h('tr', { dataset: { status: it.status } },
        h('td', { 'data-label': t('job.col.member'), class: 'col-member' },
          h('div', {}, it.display_name || it.user_principal_name || it.user_id),
          it.display_name && it.user_principal_name ? h('div', { class: 'muted small' }, it.user_principal_name) : null),
        h('td', { 'data-label': t('job.col.group'), class: 'col-group' }, groupName(it.group_id)),
        h('td', { 'data-label': t('job.col.status'), class: 'col-status' }, itemStatusBadge(it.status)),
        h('td', { 'data-label': t('job.col.error'), class: it.error ? 'col-error' : 'col-error no-error' }, it.error
          ? itemError(it.error)
          : h('span', { class: 'muted' }, '—')),
        h('td', { 'data-label': t('job.col.attempts'), class: 'num col-attempts' }, num(it.attempts)),
        h('td', { 'data-label': t('job.col.run'), class: 'num col-run' }, it.run_no ? `#${it.run_no}` : '—'),
        h('td', { 'data-label': t('job.col.updated'), class: 'col-updated' }, when(it.updated_at)),
        predicted ? h('td', { 'data-label': t('preview.col.predicted'), class: 'col-predicted' }, predictionCell(it.prediction)) : null,
      ))),
    )));
  }

  async function download(button, path, query, name) {
    button.disabled = true;
    try {
      const saved = await api.download(path, query, name);
      toast(t('job.downloaded', { name: saved }));
    } catch (err) {
      toast(t('job.downloadFailed', { message: err.message }), 'error');
    } finally {
      button.disabled = false;
    }
  }

  async function cancelJob() {
    const ok = await confirmDialog({
      title: t('job.cancelTitle'),
      body: t('job.cancelBody'),
      yes: t('job.cancelYes'),
      no: t('job.cancelNo'),
      danger: true,
    });
    if (!ok) return;
    try {
      state.job = await api.post(`/v1/jobs/${id}/cancel`);
      toast(t('job.cancelled'));
    } catch (err) {
      toast(err.code === 'not_cancellable' ? t('job.notCancelled', { message: err.message }) : t('job.cancelFailed', { message: err.message }), 'error');
    }
    load();
  }

  async function resumeJob() {
    try {
      state.job = await api.post(`/v1/jobs/${id}/resume`);
      toast(t('job.resumed'));
    } catch (err) {
      toast(err.code === 'not_paused' ? t('job.notResumed', { message: err.message }) : t('job.resumeFailed', { message: err.message }), 'error');
    }
    load();
  }

  async function rerunJob() {
    try {
      state.job = await api.post(`/v1/jobs/${id}/rerun`);
      toast(t('job.rerunStarted'));
    } catch (err) {
      toast(err.code === 'not_rerunnable' ? t('job.notRerun', { message: err.message }) : t('job.rerunFailed', { message: err.message }), 'error');
    }
    load();
  }

  load(true);

  return (opts) => {
    state.stopped = true;
    clearTimeout(state.timer);
    if (!opts?.keepDraft) return undefined;
    return { loaded: Boolean(state.job) || Boolean(draft), itemStatus: state.itemStatus, itemCode: state.itemCode };
  };
}

/** Licenses as the ledger lists them (the API's `{sku_id, disabled_plans}`): part numbers, with how many plans are off. */
function ledgerLicenses(list) {
  if (!list || list.length === 0) return h('span', { class: 'muted' }, LEDGER_TEXT.noLicense);
  return list.map((l, i) => [
    i > 0 ? ', ' : null,
    (skuNames && skuNames.get(l.sku_id)) || l.sku_id,
    l.disabled_plans && l.disabled_plans.length ? ` (${LEDGER_TEXT.without(l.disabled_plans.length)})` : null,
  ]);
}

/** The job's change ledger card: `load()` reads its first page again; `onTotal(n)` hears how many members an undo would take back. */
function changesLedger(id, onTotal) {
  const state = { rows: [], cursor: null, total: 0 };
  const body = h('div', { class: 'changes-body' });
  const more = h('button', { type: 'button', class: 'btn', hidden: true, onclick: () => load(false) }, LEDGER_TEXT.more);
  const count = h('span', { class: 'count-pill' }, '0');
  const card = h('div', { class: 'card changes', id: 'changes' },
    h('div', { class: 'card-head' }, h('h2', {}, LEDGER_TEXT.title, ' ', count)),
    h('p', { class: 'muted small' }, LEDGER_TEXT.intro),
    body,
    h('div', { class: 'more' }, more));

  async function load(reset = true) {
    more.disabled = true;
    try {
      const page = await api.get(`/v1/jobs/${id}/changes`, { limit: ITEMS_PAGE, cursor: reset ? null : state.cursor });
      state.rows = reset ? page.data : state.rows.concat(page.data);
      state.cursor = page.next_cursor;
      state.total = page.total;
      render();
      onTotal(page.undoable ?? state.total);
    } catch (err) {
      replace(body, problemBox(err.problem || { title: LEDGER_TEXT.loadFailed, detail: String(err) }));
    } finally {
      more.disabled = false;
    }
  }

  function render() {
    replace(count, num(state.total));
    more.hidden = !state.cursor;
    if (state.rows.length === 0) {
      replace(body, h('p', { class: 'muted' }, LEDGER_TEXT.none));
      return;
    }
    const [member, status, before, after, verified, run] = LEDGER_TEXT.columns;
    replace(body, h('div', { class: 'table-wrap' }, h('table', { class: 'changes-table', id: 'changes-table' },
      h('thead', {}, h('tr', {}, LEDGER_TEXT.columns.map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, state.rows.map((c) => h('tr', { dataset: { user: c.user_id } },
        h('td', { 'data-label': member }, c.display_name || c.user_principal_name || c.user_id),
        h('td', { 'data-label': status, class: 'col-status' },
          itemStatusBadge(c.status, c.error ? `${c.error.code}: ${c.error.detail || ''}` : null),
          c.error ? h('div', { class: 'muted small error-code' }, c.error.code) : null),
        h('td', { 'data-label': before }, ledgerLicenses(c.before)),
        h('td', { 'data-label': after }, ledgerLicenses(c.after),
          c.usage_location ? h('div', { class: 'muted small location-set' }, LEDGER_TEXT.locationSet(c.usage_location.after)) : null),
        h('td', { 'data-label': verified }, LEDGER_TEXT.verified[String(c.verified)]),
        h('td', { 'data-label': run }, `#${c.run_no}`),
      ))))));
  }

  return { card, load };
}

/** Undo (admins): confirm with the number of members it will touch, then open the undo job. */
function undoButton(id, members) {
  return h('button', {
    type: 'button',
    class: 'btn',
    id: 'undo-job',
    onclick: async () => {
      const ok = await confirmDialog({
        title: LEDGER_TEXT.undoTitle,
        body: LEDGER_TEXT.undoBody(members),
        yes: LEDGER_TEXT.undoYes(members),
        no: LEDGER_TEXT.undoNo,
        danger: true,
      });
      if (!ok) return;
      try {
        const job = await api.post(`/v1/jobs/${id}/undo`);
        toast(LEDGER_TEXT.undoStarted);
        window.location.hash = `#/jobs/${job.id}`;
      } catch (err) {
        toast(LEDGER_TEXT.undoFailed(err.message), 'error');
      }
    },
  }, LEDGER_TEXT.undo);
}
