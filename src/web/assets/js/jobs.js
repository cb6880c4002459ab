// The jobs table: search, filters, live progress, checkbox selection and Start (rerun), "Select
// all N matching" with Start / Cancel for every job the filter matches, Load more.

import { api, newIdempotencyKey } from './api.js';
import { h, replace, problemBox, toast, confirmDialog } from './dom.js';
import { STATUS_LABELS, KIND_LABELS, isActive, isSettling, isRerunnable, statusBadge, stuckBadge, when, progressBar, groupNames, allGroupNames, shortId, createdBy, jobShortId, codeExplanation } from './format.js';
import { t, labels } from './i18n.js';
import { searchBox } from './search.js';

const PAGE = 50;
const KIND_SHORT = labels({ assign: 'jobs.short.assign', remove: 'jobs.short.remove', replace: 'jobs.short.replace', export: 'jobs.short.export' });
const LIVE_MS = 2000;
const IDLE_MS = 15000;

const statusFilters = () => [
  ['', t('jobs.filter.all')],
  ['queued,running', t('jobs.filter.active')],
  ['failed,finished_with_exception', t('jobs.filter.rerunnable')],
  ...Object.entries(STATUS_LABELS).map(([k, v]) => [k, v]),
];

export function jobsView(container, ctx, params) {
  const filter = {
    status: params.get('status') || '',
    kind: params.get('kind') || '',
    group: params.get('group') || '',
    groupName: params.get('group_name') || '',
    idPrefix: params.get('id_prefix') || '',
  };
  // "Select all N matching" is offered while the list is filtered by status, kind or group.
  const bulkFilter = () => {
    const f = {};
    if (filter.status) f.status = filter.status.split(',');
    if (filter.kind) f.kind = filter.kind.split(',');
    if (filter.group) f.group = filter.group;
    return Object.keys(f).length ? f : null;
  };
  const state = {
    jobs: [],
    nextCursor: null,
    selected: new Set(),
    loadedOnce: false,
    stopped: false,
    timer: null,
    busy: false,
    // How many jobs match the filter (all pages), and whether all of them are selected.
    total: null,
    allMatching: false,
  };
  // What was picked before the page was built again (a change of language, see main.js).
  const draft = ctx.draft;
  if (draft) {
    state.selected = new Set(draft.selected);
    state.allMatching = draft.allMatching;
  }

  const startButton = h('button', {
    type: 'button',
    class: 'btn btn-primary',
    id: 'start',
    title: t('jobs.startTitle'),
    disabled: true,
    onclick: () => rerunSelected(),
  }, t('jobs.start'));
  const cancelButton = h('button', {
    type: 'button',
    class: 'btn',
    id: 'cancel-matching',
    title: t('jobs.cancelTitle'),
    hidden: true,
    onclick: () => bulkAction('cancel'),
  }, t('jobs.cancel'));
  const refreshButton = h('button', { type: 'button', class: 'btn', onclick: () => refresh(true) }, t('common.refresh'));
  const ribbon = h('div', { class: 'ribbon', role: 'toolbar', 'aria-label': t('jobs.actions') },
    ctx.canOperate ? startButton : null,
    ctx.canOperate ? cancelButton : null,
    refreshButton,
    ctx.canLaunch ? h('a', { class: 'btn', href: '#/new' }, t('nav.new')) : null,
  );

  const statusSelect = h('select', { id: 'filter-status', onchange: () => applyFilter() },
    statusFilters().map(([value, label]) => h('option', { value, selected: value === filter.status }, label)));
  const kindSelect = h('select', { id: 'filter-kind', onchange: () => applyFilter() },
    h('option', { value: '' }, t('jobs.filter.allKinds')),
    Object.entries(KIND_LABELS).map(([value, label]) => h('option', { value, selected: value === filter.kind }, label)));
  const liveNote = h('span', { class: 'live-note muted small', 'aria-live': 'off' });
  const filters = h('div', { class: 'filters' },
    h('label', { class: 'filter' }, h('span', {}, t('jobs.filter.status')), statusSelect),
    h('label', { class: 'filter' }, h('span', {}, t('jobs.filter.kind')), kindSelect),
    filter.group ? chip(t('jobs.filter.group', { name: filter.groupName || shortId(filter.group) }), 'group') : null,
    filter.idPrefix ? chip(t('jobs.filter.idPrefix', { prefix: filter.idPrefix }), 'id_prefix') : null,
    liveNote,
  );

  /** A filter from the search box, with a button that drops it. */
  function chip(text, key) {
    return h('span', { class: 'chip filter-chip', dataset: { filter: key } }, text,
      h('button', {
        type: 'button',
        class: 'chip-x',
        'aria-label': t('jobs.filter.clear'),
        title: t('jobs.filter.clear'),
        onclick: () => {
          if (key === 'group') {
            filter.group = '';
            filter.groupName = '';
          } else {
            filter.idPrefix = '';
          }
          applyFilter();
        },
      }, '×'));
  }

  const matchingBar = h('div', { class: 'bulk-matching', id: 'select-matching', hidden: true });

  const result = h('div', { class: 'rerun-result', id: 'rerun-result' });
  const selectAll = h('input', {
    type: 'checkbox',
    'aria-label': t('jobs.selectAll'),
    onchange: (e) => {
      if (!e.target.checked) state.allMatching = false;
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
      h('th', { scope: 'col' }, t('jobs.col.id')),
      h('th', { scope: 'col' }, t('jobs.col.kind')),
      h('th', { scope: 'col' }, t('jobs.col.groups')),
      h('th', { scope: 'col' }, t('jobs.col.status')),
      h('th', { scope: 'col', class: 'col-progress' }, t('jobs.col.progress')),
      h('th', { scope: 'col' }, t('jobs.col.createdBy')),
      h('th', { scope: 'col' }, t('jobs.col.created')),
      h('th', { scope: 'col' }, t('jobs.col.started')),
      h('th', { scope: 'col' }, t('jobs.col.finished')),
    )),
    tbody,
  );
  const body = h('div', { class: 'table-wrap' }, h('p', { class: 'loading' }, t('jobs.loading')));
  const moreButton = h('button', { type: 'button', class: 'btn', hidden: true, onclick: () => loadMore() }, t('common.loadMore'));

  const search = searchBox(ctx, draft?.search ?? '');
  replace(container, h('section', { class: 'jobs-page' },
    h('div', { class: 'page-head' }, h('h1', {}, t('jobs.title')), ribbon),
    search,
    filters,
    result,
    matchingBar,
    body,
    h('div', { class: 'more' }, moreButton),
  ));

  function applyFilter() {
    const p = new URLSearchParams();
    if (statusSelect.value) p.set('status', statusSelect.value);
    if (kindSelect.value) p.set('kind', kindSelect.value);
    if (filter.group) {
      p.set('group', filter.group);
      if (filter.groupName) p.set('group_name', filter.groupName);
    }
    if (filter.idPrefix) p.set('id_prefix', filter.idPrefix);
    const qs = p.toString();
    ctx.navigate(qs ? `#/?${qs}` : '#/');
  }

  function query(limit, cursor) {
    return {
      status: filter.status, kind: filter.kind, group: filter.group, id_prefix: filter.idPrefix, limit, cursor,
    };
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
      const counted = ctx.canOperate && bulkFilter() ? { count: true } : {};
      const page = await api.get('/v1/jobs', { ...query(limit), ...counted });
      if (state.stopped) return;
      state.jobs = page.data;
      state.total = page.total ?? null;
      if (!state.total) state.allMatching = false;
      state.nextCursor = page.next_cursor;
      state.loadedOnce = true;
      state.error = null;
      render();
    } catch (err) {
      if (state.stopped) return;
      state.error = err;
      if (!state.loadedOnce) {
        replace(body, problemBox(err.problem || { title: t('jobs.loadFailed'), detail: String(err) }));
      } else if (byHand) {
        toast(t('jobs.refreshFailed', { message: err.message }), 'error');
      }
      liveNote.textContent = t('jobs.refreshRetry', { message: err.message });
    } finally {
      state.busy = false;
      schedule();
    }
  }

  function schedule() {
    if (state.stopped) return;
    clearTimeout(state.timer);
    const live = state.jobs.some((j) => isActive(j.status) || isSettling(j));
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
      toast(t('jobs.moreFailed', { message: err.message }), 'error');
    } finally {
      moreButton.disabled = false;
    }
  }

  function render() {
    // Only rerunnable jobs stay selected.
    const rerunnable = new Set(state.jobs.filter((j) => isRerunnable(j.status)).map((j) => j.id));
    for (const id of [...state.selected]) if (!rerunnable.has(id)) state.selected.delete(id);

    if (state.jobs.length === 0) {
      const filtered = filter.status || filter.kind || filter.group || filter.idPrefix;
      replace(body, h('div', { class: 'empty' },
        h('p', {}, filtered ? t('jobs.noMatch') : t('jobs.none')),
        !filtered && ctx.canLaunch ? h('p', {}, h('a', { class: 'btn btn-primary', href: '#/new' }, t('jobs.startAJob'))) : null,
      ));
    } else {
      replace(tbody, state.jobs.map((job) => row(job)));
      if (!body.contains(table)) replace(body, table);
    }
    moreButton.hidden = !state.nextCursor;

    const n = state.allMatching ? state.total : state.selected.size;
    startButton.disabled = n === 0;
    startButton.textContent = n ? t('jobs.startN', { n }) : t('jobs.start');
    cancelButton.hidden = !state.allMatching;
    cancelButton.textContent = state.allMatching ? t('jobs.cancelN', { n }) : t('jobs.cancel');
    selectAll.checked = state.allMatching || (rerunnable.size > 0 && state.selected.size === rerunnable.size);
    selectAll.indeterminate = !state.allMatching && state.selected.size > 0 && state.selected.size < rerunnable.size;
    selectAll.disabled = rerunnable.size === 0 && !state.allMatching;
    renderMatchingBar();

    const active = state.jobs.filter((j) => isActive(j.status)).length;
    const at = new Date().toLocaleTimeString(document.documentElement.lang || undefined);
    replace(liveNote,
      active ? h('span', { class: 'live-dot', 'aria-hidden': 'true' }) : null,
      active
        ? t('jobs.running', { n: active, at })
        : t('jobs.updated', { at }),
    );
  }

  /** Gmail's "Select all N matching" beside the checkboxes while the list is filtered. */
  function renderMatchingBar() {
    const total = state.total || 0;
    matchingBar.hidden = !(ctx.canOperate && bulkFilter() && total > 0);
    if (matchingBar.hidden) return;
    if (state.allMatching) {
      replace(matchingBar, h('span', { class: 'bulk-count' }, t('jobs.allMatching', { n: total })), ' ',
        h('button', {
          type: 'button',
          class: 'btn btn-quiet',
          id: 'clear-matching',
          onclick: () => {
            state.allMatching = false;
            state.selected.clear();
            render();
          },
        }, t('jobs.clearSelection')));
    } else {
      replace(matchingBar, h('button', {
        type: 'button',
        class: 'btn btn-quiet',
        id: 'select-all-matching',
        onclick: () => {
          state.allMatching = true;
          for (const job of state.jobs) if (isRerunnable(job.status)) state.selected.add(job.id);
          render();
        },
      }, t('jobs.selectMatching', { n: total })));
    }
  }

  function row(job) {
    const canPick = ctx.canOperate && isRerunnable(job.status);
    const link = h('a', { href: `#/jobs/${job.id}`, class: 'job-link', title: job.id }, jobShortId(job.id));
    return h('tr', { dataset: { jobId: job.id, status: job.status } },
      ctx.canOperate
        ? h('td', { class: 'col-check' }, canPick
          ? h('input', {
            type: 'checkbox',
            class: 'job-check',
            'aria-label': t('jobs.selectOne', { id: shortId(job.id) }),
            checked: state.allMatching || state.selected.has(job.id),
            onchange: (e) => {
              state.allMatching = false;
              if (e.target.checked) state.selected.add(job.id);
              else state.selected.delete(job.id);
              render();
            },
          })
          : null)
        : null,
      h('td', { class: 'col-id', 'data-label': t('jobs.col.id') }, link),
      h('td', { class: 'col-kind', 'data-label': t('jobs.col.kind'), title: KIND_LABELS[job.kind] },
        KIND_SHORT[job.kind] || job.kind,
        job.request && job.request.undo_of ? h('span', { class: 'muted small undo-tag' }, ` · ${t('jobs.undo')}`) : null),
      h('td', { class: 'col-groups', 'data-label': t('jobs.col.groups'), title: allGroupNames(job) }, groupNames(job)),
      h('td', { class: 'col-status', 'data-label': t('jobs.col.status') }, statusBadge(job.status), stuckBadge(job),
        job.runs > 1 ? h('span', { class: 'runs-note muted small' }, t('jobs.run', { n: job.runs })) : null,
        job.error ? h('code', { class: 'job-error-code small', title: codeExplanation(job.error.code, job.error.detail || '') }, job.error.code) : null),
      h('td', { class: 'col-progress', 'data-label': t('jobs.col.progress') }, progressBar(job.progress, { compact: true, expanding: job.expanding })),
      h('td', { class: 'col-by', 'data-label': t('jobs.col.createdBy') }, createdBy(job)),
      h('td', { class: 'col-time col-created', 'data-label': t('jobs.col.created') }, when(job.created_at)),
      h('td', { class: 'col-time col-started', 'data-label': t('jobs.col.started') }, when(job.started_at)),
      h('td', { class: 'col-time col-finished', 'data-label': t('jobs.col.finished') }, when(job.finished_at)),
    );
  }

  /** Rerun or cancel every job the filter matches: count them (a dry run), confirm with the
   * number, act, and show what was done and what was refused. */
  async function bulkAction(action) {
    const f = bulkFilter();
    if (!f) return;
    const path = action === 'rerun' ? '/v1/jobs/rerun' : '/v1/jobs/cancel';
    startButton.disabled = true;
    cancelButton.disabled = true;
    replace(result);
    try {
      const dry = await api.post(path, { filter: f, dry_run: true });
      const n = dry.acted_on;
      if (n === 0) {
        replace(result, h('div', { class: 'alert alert-warn', role: 'status' },
          t(action === 'rerun' ? 'jobs.nothingToRerun' : 'jobs.nothingToCancel', { n: dry.matched })));
        return;
      }
      const ok = await confirmDialog({
        title: t(action === 'rerun' ? 'jobs.confirmRerun' : 'jobs.confirmCancel', { n }),
        body: [
          h('p', {}, t(action === 'rerun' ? 'jobs.confirmRerunBody' : 'jobs.confirmCancelBody')),
          dry.refused ? h('p', {}, t(action === 'rerun' ? 'jobs.confirmRefusedRerun' : 'jobs.confirmRefusedCancel',
            { refused: dry.refused, matched: dry.matched })) : null,
        ],
        yes: t(action === 'rerun' ? 'jobs.confirmYesRerun' : 'jobs.confirmYesCancel', { n }),
        no: t('jobs.confirmNo'),
        danger: action === 'cancel',
      });
      if (!ok) return;
      const answer = await api.post(path, { filter: f }, { idempotencyKey: newIdempotencyKey() });
      state.allMatching = false;
      state.selected.clear();
      showOutcome(action, answer.acted_on_ids || [], answer.rejected || []);
    } catch (err) {
      replace(result, problemBox(err.problem || {
        title: t(action === 'rerun' ? 'jobs.rerunFailed' : 'jobs.cancelFailed'), detail: String(err),
      }));
    } finally {
      render();
      await refresh(true);
    }
  }

  /** What a bulk action did: links to the first jobs acted on, and each refusal with its reason. */
  function showOutcome(action, acted, rejected) {
    const shown = acted.slice(0, 20);
    const done = action === 'rerun' ? 'jobs.startedAgain' : 'jobs.cancelledN';
    const none = action === 'rerun' ? 'jobs.noneStarted' : 'jobs.noneCancelled';
    const refused = action === 'rerun' ? 'jobs.notStarted' : 'jobs.notCancelled';
    replace(result, h('div', { class: rejected.length ? 'alert alert-warn' : 'alert alert-ok', role: 'status', id: 'bulk-outcome' },
      h('button', { type: 'button', class: 'alert-close', 'aria-label': t('common.dismiss'), onclick: () => replace(result) }, '×'),
      acted.length
        ? h('p', {}, h('strong', {}, t(done, { n: acted.length })),
          shown.map((id, i) => [i ? ', ' : '', h('a', { href: `#/jobs/${id}` }, shortId(id))]),
          acted.length > shown.length ? ` ${t('jobs.andMore', { n: acted.length - shown.length })}` : null)
        : h('p', {}, h('strong', {}, t(none))),
      rejected.length
        ? [h('p', {}, t(refused, { n: rejected.length })),
          h('ul', { class: 'rejected' }, rejected.slice(0, 50).map((r) => h('li', {},
            h('a', { href: `#/jobs/${r.job_id}` }, shortId(r.job_id)), ' — ',
            h('code', {}, r.code), r.detail ? `: ${r.detail}` : ''))),
          rejected.length > 50 ? h('p', { class: 'muted small' }, t('jobs.andMore', { n: rejected.length - 50 })) : null]
        : null,
    ));
  }

  async function rerunSelected() {
    if (state.allMatching) {
      await bulkAction('rerun');
      return;
    }
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
        h('button', { type: 'button', class: 'alert-close', 'aria-label': t('common.dismiss'), onclick: () => replace(result) }, '×'),
        started.length
          ? h('p', {}, h('strong', {}, t('jobs.startedAgain', { n: started.length })),
            started.map((j, i) => [i ? ', ' : '', h('a', { href: `#/jobs/${j.id}` }, shortId(j.id)), ` (${groupNames(j)})`]))
          : h('p', {}, h('strong', {}, t('jobs.noneStarted'))),
        rejected.length
          ? [h('p', {}, t('jobs.notStarted', { n: rejected.length })),
            h('ul', { class: 'rejected' }, rejected.map((r) => h('li', {},
              h('a', { href: `#/jobs/${r.job_id}` }, shortId(r.job_id)), ' — ',
              h('code', {}, r.code), r.detail ? `: ${r.detail}` : '')))]
          : null,
      ));
    } catch (err) {
      replace(result, problemBox(err.problem || { title: t('jobs.rerunFailed'), detail: String(err) }));
    }
    await refresh(true);
  }

  const onVisible = () => {
    if (!document.hidden) refresh();
  };
  document.addEventListener('visibilitychange', onVisible);
  refresh();

  return (opts) => {
    state.stopped = true;
    clearTimeout(state.timer);
    document.removeEventListener('visibilitychange', onVisible);
    if (!opts?.keepDraft) return undefined;
    return { search: search.elements.q.value, selected: [...state.selected], allMatching: state.allMatching };
  };
}
