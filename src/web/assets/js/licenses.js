// The Licenses screen ("Hantera licenser"): every license with its seats, a Checkin/Checkout
// column, search and paging; admins create and edit licenses.

import { api, newIdempotencyKey } from './api.js';
import { h, replace, problemBox, toast, errorBox, alertBox } from './dom.js';
import { num } from './format.js';
import { t } from './i18n.js';
import { availableFigure } from './seats.js';

const PAGE = 50;

export function licensesView(container, ctx, params) {
  const state = { search: params.get('search') || '', rows: [], next: null, stopped: false, timer: null, seq: 0 };
  // Typed before the page was built again (a change of language), perhaps not yet searched for.
  const typed = ctx.draft?.search ?? state.search;

  const search = h('input', {
    type: 'search',
    id: 'license-search',
    placeholder: t('lic.searchPlaceholder'),
    value: typed,
    autocomplete: 'off',
    oninput: () => {
      clearTimeout(state.timer);
      state.timer = setTimeout(applySearch, 250);
    },
  });
  function applySearch() {
    state.search = search.value.trim();
    history.replaceState(null, '', state.search ? `#/licenses?search=${encodeURIComponent(state.search)}` : '#/licenses');
    load(true);
  }
  const body = h('div', { class: 'table-wrap' }, h('p', { class: 'loading' }, t('lic.loading')));
  const more = h('button', { type: 'button', class: 'btn', hidden: true, onclick: () => load(false) }, t('common.loadMore'));

  replace(container, h('section', { class: 'licenses-page' },
    h('div', { class: 'page-head' },
      h('h1', {}, t('lic.title')),
      h('div', { class: 'ribbon' },
        ctx.canLaunch ? h('a', { class: 'btn btn-primary', href: '#/licenses/new', id: 'new-license' }, t('lic.new')) : null)),
    h('div', { class: 'filters' },
      h('label', { class: 'filter filter-grow' }, h('span', {}, t('common.search')), search)),
    body,
    h('div', { class: 'more' }, more),
  ));

  async function load(reset) {
    const seq = ++state.seq;
    more.disabled = true;
    try {
      const page = await api.get('/v1/licenses', {
        search: state.search, limit: PAGE, cursor: reset ? null : state.next,
      });
      if (state.stopped || seq !== state.seq) return;
      state.rows = reset ? page.data : state.rows.concat(page.data);
      state.next = page.next_cursor;
      render();
    } catch (err) {
      if (state.stopped) return;
      if (reset) replace(body, problemBox(err.problem || { title: t('lic.loadFailed'), detail: String(err) }));
      else toast(err.message, 'error');
    } finally {
      more.disabled = false;
    }
  }

  function render() {
    more.hidden = !state.next;
    if (state.rows.length === 0) {
      replace(body, h('div', { class: 'empty' }, h('p', {}, state.search ? t('lic.noMatch') : t('lic.none'))));
      return;
    }
    replace(body, h('table', { class: 'licenses-table', id: 'licenses-table' },
      h('thead', {}, h('tr', {},
        h('th', { scope: 'col' }, t('lic.col.name')),
        h('th', { scope: 'col', class: 'num' }, t('lic.col.seats')),
        h('th', { scope: 'col', class: 'num' }, t('lic.col.assigned')),
        h('th', { scope: 'col' }, t('lic.col.available')),
        h('th', { scope: 'col' }, t('lic.col.term')),
        h('th', { scope: 'col' }, t('lic.col.reassignable')),
        h('th', { scope: 'col' }, t('lic.col.notes')),
        h('th', { scope: 'col' }, t('lic.col.checkinout')),
      )),
      h('tbody', {}, state.rows.map(row)),
    ));
  }

  function row(l) {
    const out = l.available <= 0;
    const noteId = `oos-${l.id}`;
    const checkout = ctx.canLaunch
      ? (out
        ? h('button', { type: 'button', class: 'btn btn-small', disabled: true, 'aria-describedby': noteId, title: t('lic.outOfStockRule'), dataset: { action: 'checkout' } }, t('lic.checkout'))
        : h('a', { class: 'btn btn-small btn-primary', href: `#/licenses/${l.id}/checkout`, dataset: { action: 'checkout' } }, t('lic.checkout')))
      : null;
    const checkin = ctx.canOperate && l.reassignable && l.assigned > 0
      ? h('a', { class: 'btn btn-small', href: `#/licenses/${l.id}/used-by`, dataset: { action: 'checkin' } }, t('lic.checkin'))
      : null;
    return h('tr', { dataset: { licenseId: l.id, name: l.name, available: String(l.available) }, class: out ? 'row-out' : null },
      h('td', { class: 'col-name', 'data-label': t('lic.col.name') },
        h('a', { href: `#/licenses/${l.id}`, class: 'license-link' }, l.name),
        ctx.canLaunch ? h('a', { href: `#/licenses/${l.id}/edit`, class: 'edit-link small', 'aria-label': t('lic.editNamed', { name: l.name }) }, t('lic.edit')) : null),
      h('td', { class: 'num col-seats', 'data-label': t('lic.col.seats') }, num(l.seats)),
      h('td', { class: 'num col-assigned', 'data-label': t('lic.col.assigned') }, num(l.assigned)),
      h('td', { class: 'col-available', 'data-label': t('lic.col.available') }, availableFigure(l)),
      h('td', { class: 'col-term', 'data-label': t('lic.col.term') }, l.term_days == null ? t('lic.noTerm') : t('lic.termDays', { n: l.term_days })),
      h('td', { class: 'col-reassignable', 'data-label': t('lic.col.reassignable') }, l.reassignable ? t('common.yes') : t('common.no')),
      h('td', { class: 'col-notes', 'data-label': t('lic.col.notes') }, l.notes || h('span', { class: 'muted' }, '—')),
      h('td', { class: 'col-actions', 'data-label': t('lic.col.checkinout') },
        h('div', { class: 'row-actions' }, checkin, checkout),
        out && ctx.canLaunch ? h('p', { class: 'oos-note small', id: noteId }, t('lic.outOfStockRule')) : null),
    );
  }

  if (typed.trim() !== state.search) applySearch();
  else load(true);
  return (opts) => {
    state.stopped = true;
    clearTimeout(state.timer);
    return opts?.keepDraft ? { search: search.value } : undefined;
  };
}

/** Create (no `id`) or edit a license: name, seats, reassignable, term days, delivered on, notes. */
export function licenseFormView(container, ctx, id) {
  const state = { stopped: false, attempt: null };
  const crumbs = h('nav', { class: 'crumbs' }, h('a', { href: id ? `#/licenses/${id}` : '#/licenses' }, t('lic.back')));
  if (!ctx.canLaunch) {
    replace(container, crumbs, h('div', { class: 'alert alert-warn' }, t('lic.needsAdmin')));
    return null;
  }
  const field = (fid, label, input, help) => h('div', { class: 'field' },
    h('label', { for: fid }, label), input, help ? h('p', { class: 'muted small' }, help) : null);
  const name = h('input', { type: 'text', id: 'lic-name', maxlength: '200', required: true });
  const seats = h('input', { type: 'number', id: 'lic-seats', min: '1', max: '1000000', step: '1', required: true, value: '1' });
  const reassignable = h('input', { type: 'checkbox', id: 'lic-reassignable', checked: true });
  const term = h('input', { type: 'number', id: 'lic-term', min: '1', max: '36500', step: '1' });
  const delivered = h('input', { type: 'date', id: 'lic-delivered' });
  const notes = h('textarea', { id: 'lic-notes', rows: '3', maxlength: '2000' });
  const shown = errorBox({ id: 'license-error' });
  const error = shown.el;
  const submit = h('button', { type: 'submit', class: 'btn btn-primary', id: 'license-submit' }, t('common.save'));
  const form = h('form', { class: 'card license-form', novalidate: true, onsubmit: (e) => { e.preventDefault(); save(); } },
    field('lic-name', t('lic.col.name'), name),
    field('lic-seats', t('lic.col.seats'), seats),
    h('label', { class: 'check' }, reassignable, t('lic.form.reassignable')),
    field('lic-term', t('lic.form.term'), term, t('lic.form.termHelp')),
    field('lic-delivered', t('lic.form.delivered'), delivered, t('lic.form.deliveredHelp')),
    field('lic-notes', t('lic.col.notes'), notes),
    error,
    h('div', { class: 'form-actions' }, h('a', { class: 'btn', href: id ? `#/licenses/${id}` : '#/licenses' }, t('common.cancel')), submit),
  );
  replace(container, h('section', { class: 'narrow-page' }, crumbs,
    h('div', { class: 'page-head' }, h('h1', {}, id ? t('lic.editTitle') : t('lic.newTitle'))), form));

  /** The fields as entered (inputs' own strings), or set from `f`. */
  const fields = { name, seats, term, delivered, notes };
  const entered = () => ({
    ...Object.fromEntries(Object.entries(fields).map(([k, el]) => [k, el.value])),
    reassignable: reassignable.checked,
  });
  const enter = (f) => {
    for (const [k, el] of Object.entries(fields)) el.value = f[k];
    reassignable.checked = f.reassignable;
  };

  // What was entered before the page was built again (a change of language); an edit's fields
  // count only once the license was read into them.
  const draft = ctx.draft && (!id || ctx.draft.loaded) ? ctx.draft : null;
  if (draft) {
    enter(draft.fields);
    state.attempt = draft.attempt;
    if (draft.error) shown.show(draft.error);
  }

  let original = null;
  if (id) {
    submit.disabled = true;
    api.get(`/v1/licenses/${id}`).then((l) => {
      if (state.stopped) return;
      original = l;
      if (!draft) {
        enter({
          name: l.name,
          seats: String(l.seats),
          reassignable: l.reassignable,
          term: l.term_days == null ? '' : String(l.term_days),
          delivered: l.delivered_on || '',
          notes: l.notes || '',
        });
      }
      submit.disabled = false;
    }).catch((err) => shown.show(() => problemBox(err.problem || { title: t('lic.loadFailed'), detail: String(err) })));
  } else if (!draft) {
    name.focus();
  }

  async function save() {
    shown.clear();
    const n = Number(seats.value);
    const days = term.value.trim() === '' ? null : Number(term.value);
    const missing = !name.value.trim() ? 'lic.form.missingName'
      : (!Number.isInteger(n) || n < 1 || n > 1000000) ? 'lic.form.badSeats'
        : (days !== null && (!Number.isInteger(days) || days < 1 || days > 36500)) ? 'lic.form.badTerm'
          : null;
    if (missing) {
      shown.show(() => alertBox(t(missing)));
      return;
    }
    const body = {
      name: name.value.trim(),
      seats: n,
      reassignable: reassignable.checked,
      term_days: days,
      delivered_on: delivered.value || null,
      notes: notes.value.trim() || null,
    };
    submit.disabled = true;
    try {
      let saved;
      if (id) {
        const change = {};
        for (const [k, v] of Object.entries(body)) {
          if ((original[k] ?? null) !== v) change[k] = v;
        }
        saved = await api.patch(`/v1/licenses/${id}`, change);
      } else {
        const json = JSON.stringify(body);
        if (!state.attempt || state.attempt.json !== json) state.attempt = { json, key: newIdempotencyKey() };
        if (body.term_days === null) delete body.term_days;
        if (body.delivered_on === null) delete body.delivered_on;
        saved = await api.post('/v1/licenses', body, { idempotencyKey: state.attempt.key });
      }
      toast(t('lic.saved', { name: saved.name }));
      ctx.navigate(`#/licenses/${saved.id}`);
    } catch (err) {
      shown.show(() => problemBox(err.problem || { title: t('lic.saveFailed'), detail: String(err) }));
    } finally {
      submit.disabled = false;
    }
  }

  return (opts) => {
    state.stopped = true;
    if (!opts?.keepDraft) return undefined;
    return { fields: entered(), loaded: !id || original !== null || Boolean(draft), attempt: state.attempt, error: shown.kept() };
  };
}
