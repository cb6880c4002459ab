// One member's history: every job that touched the member, newest first, with the member's
// outcome, its error and the licenses before → after each write.

import { api } from './api.js';
import { h, replace, problemBox, toast } from './dom.js';
import { KIND_LABELS, statusBadge, itemStatusBadge, when, shortId, jobShortId, itemError, noteText } from './format.js';
import { t } from './i18n.js';
import { searchBox } from './search.js';

const PAGE = 50;

/** sku_id → part number, read once per view (ids are shown when the directory cannot be read). */
async function skuNames() {
  try {
    const skus = await api.get('/v1/directory/skus');
    return new Map(skus.data.map((s) => [s.sku_id, s.sku_part_number]));
  } catch {
    return new Map();
  }
}

function licenses(list, names) {
  if (list === null || list === undefined) return h('span', { class: 'muted' }, t('history.notWritten'));
  if (list.length === 0) return h('span', { class: 'muted' }, t('history.noLicense'));
  return list.map((l, i) => [
    i > 0 ? ', ' : null,
    names.get(l.sku_id) || shortId(l.sku_id),
    l.disabled_plans && l.disabled_plans.length ? ` (${t('history.plansOff', { n: l.disabled_plans.length })})` : null,
  ]);
}

/**
 * A user principal name that may break onto the next line only after its `@` and before its
 * dots (as addresses are broken in print), never inside a name; a part longer than the line
 * still breaks (app.css), so the page never scrolls sideways.
 */
function breakableName(name) {
  return h('span', { class: 'member-name' }, name.split(/(?<=@)|(?=\.)/).map((part, i) => [i > 0 ? h('wbr') : null, part]));
}

/** The text of `key` in the language of the moment, its `{member}` a breakable name. */
function naming(key, member) {
  const [before, after = ''] = t(key).split('{member}');
  return [before, breakableName(member), after];
}

/** The usage location the job set for the member (from its change ledger entry), if it did. */
function locationSet(set) {
  if (!set) return null;
  return h('div', { class: 'muted small location-set' }, t('history.location', { before: set.before || t('common.none'), after: set.after }));
}

export function historyView(container, ctx, member) {
  const state = { rows: [], cursor: null, stopped: false, names: new Map() };
  const title = h('h1', {}, naming('history.title', member));
  const lead = h('p', { class: 'muted' }, t('history.lead'));
  const body = h('div', { class: 'table-wrap' }, h('p', { class: 'loading' }, t('history.loading')));
  const more = h('button', { type: 'button', class: 'btn', hidden: true, onclick: () => load(false) }, t('common.loadMore'));
  const search = searchBox(ctx, ctx.draft?.search ?? member);
  replace(container, h('section', { class: 'history-page', id: 'member-history' },
    h('p', {}, h('a', { href: '#/' }, t('job.allJobs'))),
    h('div', { class: 'page-head' }, title),
    search,
    lead,
    body,
    h('div', { class: 'more' }, more),
  ));

  function row(e) {
    const who = e.display_name ? `${e.display_name} · ${e.user_principal_name || e.user_id}` : (e.user_principal_name || e.user_id);
    return h('tr', { dataset: { jobId: e.job_id, kind: e.kind, status: e.status } },
      h('td', { class: 'col-time', 'data-label': t('history.col.when') }, when(e.updated_at)),
      h('td', { class: 'col-id', 'data-label': t('jobs.col.id') },
        h('a', { href: `#/jobs/${e.job_id}`, class: 'job-link', title: e.job_id }, jobShortId(e.job_id))),
      h('td', { class: 'col-kind', 'data-label': t('jobs.col.kind') }, KIND_LABELS[e.kind] || e.kind,
        e.run_no > 1 ? h('span', { class: 'runs-note muted small' }, t('jobs.run', { n: e.run_no })) : null),
      h('td', { class: 'col-job', 'data-label': t('history.col.job') }, statusBadge(e.job_status)),
      h('td', { class: 'col-groups', 'data-label': t('jobs.col.groups') }, e.group ? (e.group.display_name || shortId(e.group.id)) : '—'),
      h('td', { class: 'col-outcome', 'data-label': t('history.col.outcome') },
        // A previewed job's member stays pending until a launch: show what the preview predicted.
        e.job_status === 'previewed' && e.status === 'pending' && e.prediction
          ? h('span', { class: `item-status item-prediction item-${e.prediction.outcome}` }, t(`preview.outcome.${e.prediction.outcome}`))
          : itemStatusBadge(e.status),
        e.error ? h('div', { class: 'item-error small' }, itemError(e.error)) : null,
        e.note ? h('div', { class: 'item-note muted small' }, noteText(e.note, e.note_codes)) : null),
      h('td', { class: 'col-before', 'data-label': t('history.col.before') }, licenses(e.before, state.names)),
      h('td', { class: 'col-after', 'data-label': t('history.col.after') }, licenses(e.after, state.names), locationSet(e.usage_location)),
      h('td', { class: 'col-who muted small', 'data-label': t('history.col.member') }, who),
    );
  }

  function render() {
    if (state.rows.length === 0) {
      replace(body, h('div', { class: 'empty' }, h('p', {}, naming('history.none', member))));
    } else {
      replace(body, h('table', { class: 'items-table history-table', id: 'history-table' },
        h('thead', {}, h('tr', {},
          h('th', { scope: 'col' }, t('history.col.when')),
          h('th', { scope: 'col' }, t('jobs.col.id')),
          h('th', { scope: 'col' }, t('jobs.col.kind')),
          h('th', { scope: 'col' }, t('history.col.job')),
          h('th', { scope: 'col' }, t('jobs.col.groups')),
          h('th', { scope: 'col' }, t('history.col.outcome')),
          h('th', { scope: 'col' }, t('history.col.before')),
          h('th', { scope: 'col' }, t('history.col.after')),
          h('th', { scope: 'col' }, t('history.col.member')),
        )),
        h('tbody', {}, state.rows.map(row))));
    }
    more.hidden = !state.cursor;
  }

  async function load(first) {
    more.disabled = true;
    try {
      if (first) state.names = await skuNames();
      const page = await api.get(`/v1/members/${encodeURIComponent(member)}/history`, { limit: PAGE, cursor: first ? null : state.cursor });
      if (state.stopped) return;
      state.rows = first ? page.data : state.rows.concat(page.data);
      state.cursor = page.next_cursor;
      render();
    } catch (err) {
      if (state.stopped) return;
      if (first) replace(body, problemBox(err.problem || { title: t('history.loadFailed'), detail: String(err) }));
      else toast(t('history.moreFailed', { message: err.message }), 'error');
    } finally {
      more.disabled = false;
    }
  }

  load(true);
  return (opts) => {
    state.stopped = true;
    return opts?.keepDraft ? { search: search.elements.q.value } : undefined;
  };
}
