// The jobs table: filters, live progress, checkbox selection and Start (rerun), Load more.

import { api } from './api.js';
import { h, replace, problemBox, toast } from './dom.js';
import {
  STATUS_LABELS, KIND_LABELS, isActive, isRerunnable, statusBadge, when, progressBar,
  groupNames, allGroupNames, shortId, createdBy,
} from './format.js';

const PAGE = 50;
const KIND_SHORT = { assign: 'Assign', remove: 'Remove', replace: 'Replace', export: 'Export' };
const LIVE_MS = 2000;
const IDLE_MS = 15000;

const STATUS_FILTERS = [
  ['', 'All statuses'],
  ['queued,running', 'Waiting or In Progress'],
  ['failed,finished_with_exception', 'Failed or Finished with Exception'],
  ...Object.entries(STATUS_LABELS).map(([k, v]) => [k, v]),
];

export function jobsView(container, ctx, params) {
  const filter = {
    status: params.get('status') || '',
    kind: params.get('kind') || '',
  };
  const state = {
    jobs: [],
    nextCursor: null,
    selected: new Set(),
    loadedOnce: false,
    stopped: false,
    timer: null,
    busy: false,
  };

  const startButton = h('button', {
    type: 'button',
    class: 'btn btn-primary',
    id: 'start',
    title: 'Rerun the selected Failed or Finished with Exception jobs',
    disabled: true,
    onclick: () => rerunSelected(),
  }, 'Start');
  const refreshButton = h('button', { type: 'button', class: 'btn', onclick: () => refresh(true) }, 'Refresh');
  const ribbon = h('div', { class: 'ribbon', role: 'toolbar', 'aria-label': 'Job actions' },
    ctx.canOperate ? startButton : null,
    refreshButton,
    ctx.canLaunch ? h('a', { class: 'btn', href: '#/new' }, 'New job') : null,
  );

  const statusSelect = h('select', { id: 'filter-status', onchange: () => applyFilter() },
    STATUS_FILTERS.map(([value, label]) => h('option', { value, selected: value === filter.status }, label)));
  const kindSelect = h('select', { id: 'filter-kind', onchange: () => applyFilter() },
    h('option', { value: '' }, 'All kinds'),
    Object.entries(KIND_LABELS).map(([value, label]) => h('option', { value, selected: value === filter.kind }, label)));
  const liveNote = h('span', { class: 'live-note muted small', 'aria-live': 'off' });
  const filters = h('div', { class: 'filters' },
    h('label', { class: 'filter' }, h('span', {}, 'Status'), statusSelect),
    h('label', { class: 'filter' }, h('span', {}, 'Kind'), kindSelect),
    liveNote,
  );

  const result = h('div', { class: 'rerun-result', id: 'rerun-result' });
  const selectAll = h('input', {
    type: 'checkbox',
    'aria-label': 'Select all rerunnable jobs shown',
    onchange: (e) => {
      for (const job of state.jobs) {
        if (!isRerunnable(job.status)) continue;
        if (e.target.checked) state.selected.add(job.id);
        else state.selected.delete(job.id);
      }
      render();
    },
  });
  const tbody = h('tbody');
  const table = h('table', { class: 'jobs-table', id: 'jobs-table' },
    h('thead', {}, h('tr', {},
      ctx.canOperate ? h('th', { class: 'col-check', scope: 'col' }, selectAll) : null,
      h('th', { scope: 'col' }, 'Job ID'),
      h('th', { scope: 'col' }, 'Kind'),
      h('th', { scope: 'col' }, 'Groups'),
      h('th', { scope: 'col' }, 'Status'),
      h('th', { scope: 'col', class: 'col-progress' }, 'Progress'),
      h('th', { scope: 'col' }, 'Created by'),
      h('th', { scope: 'col' }, 'Created'),
      h('th', { scope: 'col' }, 'Started'),
      h('th', { scope: 'col' }, 'Finished'),
    )),
    tbody,
  );
  const body = h('div', { class: 'table-wrap' }, h('p', { class: 'loading' }, 'Loading jobs…'));
  const moreButton = h('button', { type: 'button', class: 'btn', hidden: true, onclick: () => loadMore() }, 'Load more');

  replace(container, h('section', { class: 'jobs-page' },
    h('div', { class: 'page-head' }, h('h1', {}, 'Job Monitor'), ribbon),
    filters,
    result,
    body,
    h('div', { class: 'more' }, moreButton),
  ));

  function applyFilter() {
    const p = new URLSearchParams();
    if (statusSelect.value) p.set('status', statusSelect.value);
    if (kindSelect.value) p.set('kind', kindSelect.value);
    const qs = p.toString();
    ctx.navigate(qs ? `#/?${qs}` : '#/');
  }

  function query(limit, cursor) {
    return { status: filter.status, kind: filter.kind, limit, cursor };
  }

  /** Re-read everything shown so far (at least one page) and schedule the next look. */
  async function refresh(byHand = false) {
    if (state.stopped) return;
    clearTimeout(state.timer);
    if (state.busy) {
      schedule();
      return;
    }
    state.busy = true;
    try {
      const limit = Math.min(500, Math.max(PAGE, state.jobs.length));
      const page = await api.get('/v1/jobs', query(limit));
      if (state.stopped) return;
      state.jobs = page.data;
      state.nextCursor = page.next_cursor;
      state.loadedOnce = true;
      state.error = null;
      render();
    } catch (err) {
      if (state.stopped) return;
      state.error = err;
      if (!state.loadedOnce) {
        replace(body, problemBox(err.problem || { title: 'Could not load the jobs', detail: String(err) }));
      } else if (byHand) {
        toast(`Could not refresh: ${err.message}`, 'error');
      }
      liveNote.textContent = `Could not refresh (${err.message}); trying again…`;
    } finally {
      state.busy = false;
      schedule();
    }
  }

  function schedule() {
    if (state.stopped) return;
    clearTimeout(state.timer);
    const live = state.jobs.some((j) => isActive(j.status));
    const ms = document.hidden ? IDLE_MS : live ? LIVE_MS : IDLE_MS;
    state.timer = setTimeout(() => refresh(), ms);
  }

  async function loadMore() {
    if (!state.nextCursor) return;
    moreButton.disabled = true;
    try {
      const page = await api.get('/v1/jobs', query(PAGE, state.nextCursor));
      const known = new Set(state.jobs.map((j) => j.id));
      state.jobs.push(...page.data.filter((j) => !known.has(j.id)));
      state.nextCursor = page.next_cursor;
      render();
    } catch (err) {
      toast(`Could not load more jobs: ${err.message}`, 'error');
    } finally {
      moreButton.disabled = false;
    }
  }

  function render() {
    // Only rerunnable jobs stay selected.
    const rerunnable = new Set(state.jobs.filter((j) => isRerunnable(j.status)).map((j) => j.id));
    for (const id of [...state.selected]) if (!rerunnable.has(id)) state.selected.delete(id);

    if (state.jobs.length === 0) {
      const filtered = filter.status || filter.kind;
      replace(body, h('div', { class: 'empty' },
        h('p', {}, filtered ? 'No jobs match these filters.' : 'No jobs yet.'),
        !filtered && ctx.canLaunch ? h('p', {}, h('a', { class: 'btn btn-primary', href: '#/new' }, 'Start a job')) : null,
      ));
    } else {
      replace(tbody, state.jobs.map((job) => row(job)));
      if (!body.contains(table)) replace(body, table);
    }
    moreButton.hidden = !state.nextCursor;

    const n = state.selected.size;
    startButton.disabled = n === 0;
    startButton.textContent = n ? `Start (${n})` : 'Start';
    selectAll.checked = rerunnable.size > 0 && n === rerunnable.size;
    selectAll.indeterminate = n > 0 && n < rerunnable.size;
    selectAll.disabled = rerunnable.size === 0;

    const active = state.jobs.filter((j) => isActive(j.status)).length;
    const at = new Date().toLocaleTimeString();
    replace(liveNote,
      active ? h('span', { class: 'live-dot', 'aria-hidden': 'true' }) : null,
      active
        ? `${active} job${active === 1 ? '' : 's'} running · updated ${at}`
        : `Updated ${at}`,
    );
  }

  function row(job) {
    const canPick = ctx.canOperate && isRerunnable(job.status);
    const link = h('a', { href: `#/jobs/${job.id}`, class: 'job-link', title: job.id }, shortId(job.id));
    return h('tr', { dataset: { jobId: job.id, status: job.status } },
      ctx.canOperate
        ? h('td', { class: 'col-check' }, canPick
          ? h('input', {
            type: 'checkbox',
            class: 'job-check',
            'aria-label': `Select job ${shortId(job.id)} to rerun`,
            checked: state.selected.has(job.id),
            onchange: (e) => {
              if (e.target.checked) state.selected.add(job.id);
              else state.selected.delete(job.id);
              render();
            },
          })
          : null)
        : null,
      h('td', { class: 'col-id', 'data-label': 'Job ID' }, link),
      h('td', { class: 'col-kind', 'data-label': 'Kind', title: KIND_LABELS[job.kind] }, KIND_SHORT[job.kind] || job.kind),
      h('td', { class: 'col-groups', 'data-label': 'Groups', title: allGroupNames(job) }, groupNames(job)),
      h('td', { class: 'col-status', 'data-label': 'Status' }, statusBadge(job.status),
        job.runs > 1 ? h('span', { class: 'runs-note muted small' }, `run ${job.runs}`) : null,
        job.error ? h('code', { class: 'job-error-code small', title: job.error.detail || '' }, job.error.code) : null),
      h('td', { class: 'col-progress', 'data-label': 'Progress' }, progressBar(job.progress, { compact: true })),
      h('td', { class: 'col-by', 'data-label': 'Created by' }, createdBy(job)),
      h('td', { class: 'col-time col-created', 'data-label': 'Created' }, when(job.created_at)),
      h('td', { class: 'col-time col-started', 'data-label': 'Started' }, when(job.started_at)),
      h('td', { class: 'col-time col-finished', 'data-label': 'Finished' }, when(job.finished_at)),
    );
  }

  async function rerunSelected() {
    const ids = [...state.selected];
    if (!ids.length) return;
    startButton.disabled = true;
    replace(result);
    try {
      const answer = await api.post('/v1/jobs/rerun', { job_ids: ids });
      state.selected.clear();
      const started = answer.rerun || [];
      const rejected = answer.rejected || [];
      // Show the new state at once; the refresh below follows it from there.
      const fresh = new Map(started.map((j) => [j.id, j]));
      state.jobs = state.jobs.map((j) => fresh.get(j.id) || j);
      render();
      replace(result, h('div', { class: rejected.length ? 'alert alert-warn' : 'alert alert-ok', role: 'status' },
        h('button', { type: 'button', class: 'alert-close', 'aria-label': 'Dismiss', onclick: () => replace(result) }, '×'),
        started.length
          ? h('p', {}, h('strong', {}, `Started again: ${started.length} job${started.length === 1 ? '' : 's'}. `),
            started.map((j, i) => [i ? ', ' : '', h('a', { href: `#/jobs/${j.id}` }, shortId(j.id)), ` (${groupNames(j)})`]))
          : h('p', {}, h('strong', {}, 'No job was started again.')),
        rejected.length
          ? [h('p', {}, `Not started: ${rejected.length}`),
            h('ul', { class: 'rejected' }, rejected.map((r) => h('li', {},
              h('a', { href: `#/jobs/${r.job_id}` }, shortId(r.job_id)), ' — ',
              h('code', {}, r.code), r.detail ? `: ${r.detail}` : '')))]
          : null,
      ));
    } catch (err) {
      replace(result, problemBox(err.problem || { title: 'Rerun failed', detail: String(err) }));
    }
    await refresh(true);
  }

  const onVisible = () => {
    if (!document.hidden) refresh();
  };
  document.addEventListener('visibilitychange', onVisible);
  refresh();

  return () => {
    state.stopped = true;
    clearTimeout(state.timer);
    document.removeEventListener('visibilitychange', onVisible);
  };
}
