// Everything one user or asset holds, across all licenses, and "Check in everything held by this
// user/asset" (all or nothing): when an asset is retired or a person leaves.

import { api, newIdempotencyKey } from './api.js';
import { h, replace, problemBox, toast, confirmDialog } from './dom.js';
import { num, day, when } from './format.js';
import { t } from './i18n.js';
import { licenseProblem } from './seats.js';

export function holderView(container, ctx, type, id) {
  // The key of a checkin already asked for is kept across a change of language (see main.js).
  const state = { rows: [], next: null, stopped: false, key: ctx.draft?.key ?? newIdempotencyKey() };
  const kind = type === 'asset' ? 'asset' : 'user';
  const head = h('div', { class: 'page-head' }, h('h1', {}, id));
  const result = h('div', { id: 'holder-result' });
  // A refused checkin's error, shown again after a change of language (see errorBox in dom.js).
  state.error = ctx.draft?.error ?? null;
  if (state.error) replace(result, state.error());
  const body = h('div', { class: 'card', id: 'holder-body' }, h('p', { class: 'loading' }, t('lic.loading')));
  const notes = h('textarea', { id: 'holder-notes', rows: '2', maxlength: '2000', placeholder: t(kind === 'asset' ? 'lic.holder.notesAsset' : 'lic.holder.notesUser'), value: ctx.draft?.notes ?? '' });
  const button = h('button', { type: 'button', class: 'btn btn-danger', id: 'checkin-all', onclick: () => checkinAll() },
    t(kind === 'asset' ? 'lic.holder.checkinAllAsset' : 'lic.holder.checkinAllUser'));
  const action = h('section', { class: 'card', id: 'holder-action', hidden: true },
    h('h2', {}, t(kind === 'asset' ? 'lic.holder.checkinAllAsset' : 'lic.holder.checkinAllUser')),
    h('p', { class: 'muted small' }, t('lic.holder.allOrNothing')),
    h('div', { class: 'field' }, h('label', { for: 'holder-notes' }, t('lic.col.notes')), notes),
    h('div', { class: 'form-actions' }, button));
  replace(container, h('section', { class: 'holder-page' },
    h('nav', { class: 'crumbs' }, h('a', { href: '#/licenses' }, t('lic.back'))),
    head, result, body, action));
  const path = `/v1/assignees/${kind}/${encodeURIComponent(id)}`;

  async function load(reset) {
    try {
      const page = await api.get(`${path}/assignments`, { limit: 100, cursor: reset ? null : state.next });
      if (state.stopped) return;
      state.rows = reset ? page.data : state.rows.concat(page.data);
      state.next = page.next_cursor;
      render();
    } catch (err) {
      if (!state.stopped) replace(body, problemBox(err.problem || { title: t('lic.held.failed'), detail: String(err) }));
    }
  }

  function render() {
    const name = state.rows.find((r) => r.assignee.name)?.assignee.name;
    document.title = `${name || id} · ${t('lic.title')} · licensor`;
    replace(head, h('div', { class: 'title-block' },
      h('h1', {}, h('span', { class: `kind-tag kind-${kind}` }, t(`lic.type.${kind}`)), name || id),
      name ? h('p', { class: 'muted small mono' }, id) : null));
    const fixed = state.rows.filter((r) => !r.reassignable);
    action.hidden = !ctx.canOperate || state.rows.length === 0;
    button.disabled = fixed.length > 0;
    replace(action.querySelector('.form-actions'),
      fixed.length ? h('p', { class: 'alert alert-warn', id: 'holder-fixed' }, t('lic.holder.fixed', { names: [...new Set(fixed.map((r) => r.license_name))].join(', ') })) : null,
      button);
    if (state.rows.length === 0) {
      replace(body, h('p', { class: 'muted', id: 'holder-none' }, t('lic.held.none')));
      return;
    }
    const seats = state.rows.reduce((n, r) => n + r.quantity, 0);
    replace(body,
      h('h2', {}, t('lic.holder.holds', { n: seats })),
      h('div', { class: 'table-wrap' }, h('table', { class: 'held-table', id: 'held-table' },
        h('thead', {}, h('tr', {},
          h('th', { scope: 'col' }, t('lic.col.license')),
          h('th', { scope: 'col', class: 'num' }, t('lic.col.quantity')),
          h('th', { scope: 'col' }, t('lic.col.checkedOutAt')),
          h('th', { scope: 'col' }, t('lic.col.notes')),
          h('th', { scope: 'col' }, t('lic.col.seatEnd')),
          h('th', { scope: 'col' }, t('lic.col.reassignable')))),
        h('tbody', {}, state.rows.map((r) => h('tr', { dataset: { licenseId: r.license_id, assignmentId: r.id } },
          h('td', { 'data-label': t('lic.col.license') }, h('a', { href: `#/licenses/${r.license_id}/used-by` }, r.license_name)),
          h('td', { class: 'num', 'data-label': t('lic.col.quantity') }, num(r.quantity)),
          h('td', { 'data-label': t('lic.col.checkedOutAt') }, when(r.checked_out_at)),
          h('td', { 'data-label': t('lic.col.notes') }, r.notes || h('span', { class: 'muted' }, '—')),
          h('td', { 'data-label': t('lic.col.seatEnd') }, day(r.ends_on)),
          h('td', { 'data-label': t('lic.col.reassignable') }, r.reassignable ? t('common.yes') : t('common.no'))))))),
      state.next ? h('div', { class: 'more' }, h('button', { type: 'button', class: 'btn', onclick: () => load(false) }, t('common.loadMore'))) : null);
  }

  async function checkinAll() {
    const seats = state.rows.reduce((n, r) => n + r.quantity, 0);
    const licenses = new Set(state.rows.map((r) => r.license_id)).size;
    const ok = await confirmDialog({
      title: t(kind === 'asset' ? 'lic.holder.checkinAllAsset' : 'lic.holder.checkinAllUser'),
      body: t('lic.holder.confirm', { n: seats, licenses }),
      yes: t('lic.checkin'),
      no: t('common.cancel'),
      danger: true,
    });
    if (!ok) return;
    button.disabled = true;
    state.error = null;
    replace(result);
    try {
      const body = notes.value.trim() ? { notes: notes.value.trim() } : {};
      const out = await api.post(`${path}/checkin`, body, { idempotencyKey: state.key });
      state.key = newIdempotencyKey();
      toast(t('lic.holder.done', { n: out.checked_in.length, licenses: out.licenses.length }));
      replace(result, h('div', { class: 'alert alert-ok', role: 'status', id: 'holder-done' },
        t('lic.holder.done', { n: out.checked_in.length, licenses: out.licenses.length }),
        h('ul', {}, out.licenses.map((l) => h('li', {}, h('a', { href: `#/licenses/${l.id}` }, l.name), ' — ', t('lic.availableNow', { n: num(l.available) }))))));
      await load(true);
    } catch (err) {
      // Kept through a change of language (see errorBox in dom.js).
      state.error = () => licenseProblem(err, t('lic.checkinFailed'));
      replace(result, state.error());
      button.disabled = false;
    }
  }

  load(true);
  return (opts) => {
    state.stopped = true;
    return opts?.keepDraft ? { notes: notes.value, key: state.key, error: state.error } : undefined;
  };
}
