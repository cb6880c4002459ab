// The Checkin License screen: the assignments picked on Used By, notes, Submit. The seats return
// to the stock and the available quantity updates, all or nothing.

import { api, newIdempotencyKey } from './api.js';
import { h, replace, problemBox, toast, errorBox } from './dom.js';
import { num, when } from './format.js';
import { t } from './i18n.js';
import { picked } from './license.js';
import { assigneeCell, licenseProblem } from './seats.js';

export function checkinView(container, ctx, id, params) {
  const ids = (params.get('ids') || '').split(',').filter((x) => /^[0-9a-fA-F-]{36}$/.test(x));
  const back = `#/licenses/${id}/used-by`;
  // A checkin already sent keeps its idempotency key across a change of language (see main.js).
  const state = { license: null, rows: [], stopped: false, attempt: ctx.draft?.attempt ?? null };
  const crumbs = h('nav', { class: 'crumbs' }, h('a', { href: back }, t('lic.backToUsedBy')));
  if (!ctx.canOperate) {
    replace(container, crumbs, h('div', { class: 'alert alert-warn' }, t('lic.checkinNeedsOperator')));
    return null;
  }
  const summary = h('div', { class: 'card', id: 'checkin-summary' }, h('p', { class: 'loading' }, t('lic.loading')));
  const notes = h('textarea', { id: 'checkin-notes', rows: '3', maxlength: '2000', placeholder: t('lic.checkinNotesExample'), value: ctx.draft?.notes ?? '' });
  // The error shown stays through a change of language (see errorBox).
  const shown = errorBox({ id: 'checkin-error' });
  const error = shown.el;
  if (ctx.draft?.error) shown.show(ctx.draft.error);
  const submit = h('button', { type: 'submit', class: 'btn btn-primary', id: 'checkin-submit', disabled: true }, t('common.submit'));
  replace(container, h('section', { class: 'narrow-page checkin-page' }, crumbs,
    h('div', { class: 'page-head' }, h('h1', {}, t('lic.checkinTitle'))),
    h('form', { class: 'checkin', novalidate: true, onsubmit: (e) => { e.preventDefault(); send(); } },
      summary,
      h('section', { class: 'card' }, h('div', { class: 'field' }, h('label', { for: 'checkin-notes' }, t('lic.col.notes')), notes)),
      error,
      h('div', { class: 'form-actions sticky-actions' }, h('a', { class: 'btn', href: back }, t('common.cancel')), submit))));

  async function load() {
    try {
      state.license = await api.get(`/v1/licenses/${id}`);
      let rows = picked.licenseId === id ? picked.rows.filter((r) => ids.includes(r.id)) : [];
      if (rows.length < ids.length) {
        const page = await api.get(`/v1/licenses/${id}/assignments`, { limit: 500 });
        rows = page.data.filter((r) => ids.includes(r.id));
      }
      if (state.stopped) return;
      state.rows = rows;
      render();
    } catch (err) {
      if (!state.stopped) replace(summary, problemBox(err.problem || { title: t('lic.loadFailed'), detail: String(err) }));
    }
  }

  function render() {
    const l = state.license;
    document.title = `${t('lic.checkinTitle')} · ${l.name} · licensor`;
    const seats = state.rows.reduce((n, r) => n + r.quantity, 0);
    const missing = ids.length - state.rows.length;
    submit.disabled = !l.reassignable || state.rows.length === 0;
    replace(summary,
      h('p', { class: 'license-name' }, h('a', { href: `#/licenses/${id}` }, l.name)),
      !l.reassignable ? h('div', { class: 'alert alert-warn' }, t('lic.notReassignable')) : null,
      missing > 0 ? h('div', { class: 'alert alert-warn' }, t('lic.checkinMissing', { n: missing })) : null,
      h('ul', { class: 'checkin-list', id: 'checkin-list' }, state.rows.map((r) => h('li', { dataset: { assignmentId: r.id } },
        assigneeCell(r.assignee, { link: false }),
        h('span', { class: 'muted small' }, t('lic.seatsN', { n: r.quantity }), ' · ', when(r.checked_out_at))))),
      h('p', { class: 'checkin-effect', id: 'checkin-effect' },
        t('lic.checkinEffect', { n: seats, before: num(l.available), after: num(l.available + seats) })),
    );
  }

  async function send() {
    shown.clear();
    const body = { assignment_ids: state.rows.map((r) => r.id) };
    if (notes.value.trim()) body.notes = notes.value.trim();
    const json = JSON.stringify(body);
    if (!state.attempt || state.attempt.json !== json) state.attempt = { json, key: newIdempotencyKey() };
    submit.disabled = true;
    try {
      const out = await api.post(`/v1/licenses/${id}/checkin`, body, { idempotencyKey: state.attempt.key });
      picked.rows = [];
      toast(t('lic.checkedIn', { n: out.checked_in.length, available: num(out.license.available) }));
      ctx.navigate(back);
    } catch (err) {
      shown.show(() => licenseProblem(err, t('lic.checkinFailed')));
      submit.disabled = false;
    }
  }

  load();
  return (opts) => {
    state.stopped = true;
    return opts?.keepDraft ? { notes: notes.value, attempt: state.attempt, error: shown.kept() } : undefined;
  };
}
