// License details: its figures, the Used By tab (a checkbox per row; once one is ticked the bulk
// action bar appears above the list with Check in) and the audit history.

import { api } from './api.js';
import { h, replace, problemBox } from './dom.js';
import { num, day, when, fullTime, shortId } from './format.js';
import { t } from './i18n.js';
import { availableFigure, assigneeCell } from './seats.js';

const PAGE = 50;

/** Assignments picked on Used By, handed to the Checkin License screen. */
export const picked = { licenseId: null, rows: [] };

let tokenNames = null;

/** token id → name; only admins may list tokens, others see short ids. */
async function loadTokenNames(ctx) {
  if (tokenNames) return tokenNames;
  if (!ctx.canLaunch) return new Map();
  try {
    const tokens = await api.get('/v1/tokens');
    tokenNames = new Map(tokens.data.map((x) => [x.id, x.name]));
  } catch {
    return new Map();
  }
  return tokenNames;
}

export function licenseView(container, ctx, id, tab) {
  // The rows ticked on Used By stay ticked across a change of language (see main.js).
  const state = { license: null, rows: [], next: null, selected: new Set(ctx.draft?.selected), audit: [], auditNext: null, tokens: new Map(), stopped: false };

  const head = h('div', { class: 'page-head' }, h('h1', {}, t('lic.details')));
  const summary = h('div', { class: 'card summary', id: 'license-summary' }, h('p', { class: 'loading' }, t('lic.loading')));
  const tabs = h('div', { class: 'segmented tabs', role: 'tablist' });
  const panel = h('div', { class: 'card tab-panel', id: 'tab-panel' });
  replace(container, h('section', { class: 'license-page' },
    h('nav', { class: 'crumbs' }, h('a', { href: '#/licenses' }, t('lic.back'))),
    head, summary, tabs, panel));

  loadTokenNames(ctx).then((m) => {
    state.tokens = m;
    if (!state.stopped && tab === 'history' && state.audit.length) renderHistory();
  });

  async function loadLicense() {
    try {
      state.license = await api.get(`/v1/licenses/${id}`);
      if (state.stopped) return false;
      renderHead();
      renderSummary();
      renderTabs();
      return true;
    } catch (err) {
      if (state.stopped) return false;
      replace(summary, problemBox(err.problem || { title: t('lic.loadFailed'), detail: String(err) }));
      return false;
    }
  }

  function renderHead() {
    const l = state.license;
    document.title = `${l.name} · ${t('lic.title')} · licensor`;
    const out = l.available <= 0;
    replace(head,
      h('div', { class: 'title-block' }, h('h1', {}, l.name)),
      h('div', { class: 'ribbon' },
        ctx.canLaunch
          ? (out
            ? h('button', { type: 'button', class: 'btn', disabled: true, title: t('lic.outOfStockRule'), id: 'checkout-btn' }, t('lic.checkout'))
            : h('a', { class: 'btn btn-primary', href: `#/licenses/${id}/checkout`, id: 'checkout-btn' }, t('lic.checkout')))
          : null,
        ctx.canLaunch ? h('a', { class: 'btn', href: `#/licenses/${id}/edit` }, t('lic.edit')) : null),
    );
  }

  function renderSummary() {
    const l = state.license;
    const rows = [
      [t('lic.col.seats'), num(l.seats), 'seats'],
      [t('lic.col.assigned'), num(l.assigned), 'assigned'],
      [t('lic.col.available'), availableFigure(l), 'available'],
      [t('lic.col.term'), l.term_days == null ? t('lic.noTerm') : t('lic.termDays', { n: l.term_days }), 'term'],
    ];
    if (l.delivered_on) rows.push([t('lic.form.delivered'), day(l.delivered_on), 'delivered']);
    if (l.auto_starts_on) rows.push([t('lic.autoStarts'), day(l.auto_starts_on), 'auto-starts']);
    if (l.term_days != null) rows.push([t('lic.ended'), num(l.ended), 'ended']);
    rows.push([t('lic.col.reassignable'), l.reassignable ? t('common.yes') : t('common.no'), 'reassignable']);
    rows.push([t('lic.col.notes'), l.notes || '—', 'notes']);
    replace(summary,
      l.available <= 0 ? h('div', { class: 'alert alert-warn', role: 'status' }, t('lic.outOfStockRule')) : null,
      h('dl', { class: 'facts' }, rows.map(([k, v, key]) => [h('dt', {}, k), h('dd', { dataset: { fact: key } }, v)])));
  }

  function renderTabs() {
    const l = state.license;
    const button = (key, label) => h('a', {
      class: 'seg',
      role: 'tab',
      href: `#/licenses/${id}/${key}`,
      'aria-selected': String(tab === key),
      'aria-pressed': String(tab === key),
      dataset: { tab: key },
    }, label);
    replace(tabs,
      button('used-by', [t('lic.usedBy'), h('span', { class: 'seg-count' }, num(l.assigned))]),
      button('history', t('lic.history')));
  }

  // --- Used By ------------------------------------------------------------------------------

  const canCheckin = () => ctx.canOperate && state.license?.reassignable;

  async function loadUsedBy(reset) {
    try {
      const page = await api.get(`/v1/licenses/${id}/assignments`, { limit: PAGE, cursor: reset ? null : state.next });
      if (state.stopped) return;
      state.rows = reset ? page.data : state.rows.concat(page.data);
      state.next = page.next_cursor;
      renderUsedBy();
    } catch (err) {
      if (!state.stopped) replace(panel, problemBox(err.problem || { title: t('lic.usedByFailed'), detail: String(err) }));
    }
  }

  function renderUsedBy() {
    const l = state.license;
    const known = new Set(state.rows.map((r) => r.id));
    for (const s of [...state.selected]) if (!known.has(s)) state.selected.delete(s);
    const n = state.selected.size;
    const bar = n > 0 && canCheckin()
      ? h('div', { class: 'bulk-bar', id: 'bulk-bar', role: 'toolbar', 'aria-label': t('lic.bulk.label') },
        h('span', { class: 'bulk-count' }, t('lic.bulk.selected', { n })),
        h('button', { type: 'button', class: 'btn btn-primary', id: 'bulk-checkin', onclick: goCheckin }, t('lic.bulk.checkin')),
        h('button', { type: 'button', class: 'btn btn-quiet', onclick: () => { state.selected.clear(); renderUsedBy(); } }, t('lic.bulk.clear')))
      : null;
    const why = !l.reassignable
      ? h('div', { class: 'alert alert-warn', role: 'status', id: 'not-reassignable' }, t('lic.notReassignable'))
      : null;
    if (state.rows.length === 0) {
      replace(panel, why, h('p', { class: 'muted' }, t('lic.usedByNone')));
      return;
    }
    const selectAll = canCheckin()
      ? h('input', {
        type: 'checkbox',
        'aria-label': t('lic.selectAll'),
        checked: n > 0 && n === state.rows.length,
        indeterminate: n > 0 && n < state.rows.length,
        onchange: (e) => {
          for (const r of state.rows) {
            if (e.target.checked) state.selected.add(r.id);
            else state.selected.delete(r.id);
          }
          renderUsedBy();
        },
      })
      : null;
    const term = l.term_days != null;
    replace(panel, why, bar,
      h('div', { class: 'table-wrap' }, h('table', { class: 'used-by-table', id: 'used-by-table' },
        h('thead', {}, h('tr', {},
          canCheckin() ? h('th', { class: 'col-check', scope: 'col' }, selectAll) : null,
          h('th', { scope: 'col' }, t('lic.col.assignee')),
          h('th', { scope: 'col', class: 'num' }, t('lic.col.quantity')),
          h('th', { scope: 'col' }, t('lic.col.checkedOutAt')),
          h('th', { scope: 'col' }, t('lic.col.notes')),
          term ? h('th', { scope: 'col' }, t('lic.col.seatStart')) : null,
          term ? h('th', { scope: 'col' }, t('lic.col.seatEnd')) : null,
          canCheckin() ? h('th', { scope: 'col' }, h('span', { class: 'visually-hidden' }, t('lic.checkin'))) : null,
        )),
        h('tbody', {}, state.rows.map((r) => h('tr', { dataset: { assignmentId: r.id, assignee: r.assignee.id }, class: state.selected.has(r.id) ? 'row-picked' : null },
          canCheckin()
            ? h('td', { class: 'col-check' }, h('input', {
              type: 'checkbox',
              class: 'assignment-check',
              'aria-label': t('lic.selectOne', { name: r.assignee.name || r.assignee.id }),
              checked: state.selected.has(r.id),
              onchange: (e) => {
                if (e.target.checked) state.selected.add(r.id);
                else state.selected.delete(r.id);
                renderUsedBy();
              },
            }))
            : null,
          h('td', { class: 'col-assignee', 'data-label': t('lic.col.assignee') }, assigneeCell(r.assignee)),
          h('td', { class: 'num col-qty', 'data-label': t('lic.col.quantity') }, num(r.quantity)),
          h('td', { class: 'col-time', 'data-label': t('lic.col.checkedOutAt') }, when(r.checked_out_at)),
          h('td', { class: 'col-notes', 'data-label': t('lic.col.notes') }, r.notes || h('span', { class: 'muted' }, '—')),
          term ? h('td', { class: 'col-start', 'data-label': t('lic.col.seatStart') }, day(r.started_on)) : null,
          term ? h('td', { class: 'col-end', 'data-label': t('lic.col.seatEnd') }, day(r.ends_on)) : null,
          canCheckin()
            ? h('td', { class: 'col-row-action' }, h('button', {
              type: 'button',
              class: 'btn btn-small',
              onclick: () => { state.selected = new Set([r.id]); goCheckin(); },
            }, t('lic.checkin')))
            : null,
        ))),
      )),
      state.next ? h('div', { class: 'more' }, h('button', { type: 'button', class: 'btn', onclick: () => loadUsedBy(false) }, t('common.loadMore'))) : null,
    );
  }

  function goCheckin() {
    picked.licenseId = id;
    picked.rows = state.rows.filter((r) => state.selected.has(r.id));
    ctx.navigate(`#/licenses/${id}/checkin?ids=${[...state.selected].join(',')}`);
  }

  // --- History ------------------------------------------------------------------------------

  async function loadHistory(reset) {
    try {
      const page = await api.get('/v1/audit', { target_type: 'license', target_id: id, limit: PAGE, cursor: reset ? null : state.auditNext });
      if (state.stopped) return;
      state.audit = reset ? page.data : state.audit.concat(page.data);
      state.auditNext = page.next_cursor;
      renderHistory();
    } catch (err) {
      if (!state.stopped) replace(panel, problemBox(err.problem || { title: t('lic.historyFailed'), detail: String(err) }));
    }
  }

  function who(tokenId) {
    if (!tokenId) return t('createdBy.system');
    if (state.tokens.has(tokenId)) return state.tokens.get(tokenId);
    if (tokenId === ctx.me?.token_id) return t('job.thisToken');
    return t('createdBy.token', { id: shortId(tokenId) });
  }

  function what(e) {
    const a = e.after || {};
    switch (e.action) {
      case 'license.create': return t('lic.audit.create');
      case 'license.update': return t('lic.audit.update');
      case 'license.checkout': return t('lic.audit.checkout', { n: a.quantity, name: a.assignee?.name || a.assignee?.id || '' });
      case 'license.checkin': return t('lic.audit.checkin', { n: a.seats_returned ?? 0 }) + (a.notes ? ` — ${a.notes}` : '');
      case 'license.seats_started': return t('lic.audit.started', { n: a.started ?? 0 });
      case 'license.seats_ended': return t('lic.audit.ended', { n: a.ended ?? 0 });
      default: return e.action;
    }
  }

  function counts(c) {
    if (!c) return '—';
    return t('lic.audit.counts', { assigned: num(c.assigned), available: num(c.available) });
  }

  function renderHistory() {
    if (state.audit.length === 0) {
      replace(panel, h('p', { class: 'muted' }, t('lic.historyNone')));
      return;
    }
    replace(panel, h('div', { class: 'table-wrap' }, h('table', { class: 'history-table', id: 'history-table' },
      h('thead', {}, h('tr', {},
        h('th', { scope: 'col' }, t('lic.col.when')),
        h('th', { scope: 'col' }, t('lic.col.who')),
        h('th', { scope: 'col' }, t('lic.col.what')),
        h('th', { scope: 'col' }, t('lic.col.before')),
        h('th', { scope: 'col' }, t('lic.col.after')))),
      h('tbody', {}, state.audit.map((e) => h('tr', { dataset: { action: e.action } },
        h('td', { 'data-label': t('lic.col.when'), title: fullTime(e.created_at) }, when(e.created_at)),
        h('td', { 'data-label': t('lic.col.who') }, who(e.actor_token_id)),
        h('td', { 'data-label': t('lic.col.what') }, what(e)),
        h('td', { 'data-label': t('lic.col.before') }, counts(e.before?.counts)),
        h('td', { 'data-label': t('lic.col.after') }, counts(e.after?.counts))))))),
    state.auditNext ? h('div', { class: 'more' }, h('button', { type: 'button', class: 'btn', onclick: () => loadHistory(false) }, t('common.loadMore'))) : null);
  }

  loadLicense().then((ok) => {
    if (!ok) return;
    replace(panel, h('p', { class: 'loading' }, t('lic.loading')));
    if (tab === 'history') loadHistory(true);
    else loadUsedBy(true);
  });

  return (opts) => {
    state.stopped = true;
    return opts?.keepDraft ? { selected: [...state.selected] } : undefined;
  };
}
