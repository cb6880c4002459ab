// The Checkout License screen: Checkout to a User (picked from the directory by name or
// userPrincipalName) or an Asset (tag/id and a name); the licenses already checked out to the
// one chosen; Quantity, Notes, Submit, Cancel. On a term license with reusable started seats,
// "Reuse started license" with the choice of end date.

import { api, newIdempotencyKey } from './api.js';
import { h, replace, problemBox, toast, errorBox, alertBox } from './dom.js';
import { num, day } from './format.js';
import { t } from './i18n.js';
import { availableFigure, heldSummary, licenseProblem } from './seats.js';

const USERS_PAGE = 10;

export function checkoutView(container, ctx, id, params) {
  const state = {
    license: null,
    started: null,
    to: params.get('type') === 'asset' ? 'asset' : 'user',
    user: null,
    users: [],
    usersNext: null,
    searchSeq: 0,
    searchTimer: null,
    assetTimer: null,
    reuse: false,
    endsOn: null,
    attempt: null,
    stopped: false,
  };
  const back = `#/licenses/${id}`;
  const crumbs = h('nav', { class: 'crumbs' }, h('a', { href: back }, t('lic.backToLicense')));
  if (!ctx.canLaunch) {
    replace(container, crumbs, h('div', { class: 'alert alert-warn', id: 'needs-admin' }, t('lic.checkoutNeedsAdmin')));
    return null;
  }

  const figures = h('div', { class: 'checkout-figures', id: 'checkout-figures' });
  const toPicker = h('div', { class: 'segmented', role: 'radiogroup', 'aria-label': t('lic.checkoutTo') });

  // User picker
  const userSearch = h('input', {
    type: 'search',
    id: 'user-search',
    placeholder: t('lic.userSearch'),
    autocomplete: 'off',
    'aria-controls': 'user-results',
    oninput: () => {
      userResults.hidden = false;
      clearTimeout(state.searchTimer);
      state.searchTimer = setTimeout(() => searchUsers(true), 250);
    },
  });
  const userResults = h('ul', { class: 'pick-list', id: 'user-results', 'aria-label': t('lic.usersFound') });
  const usersMore = h('button', { type: 'button', class: 'btn btn-small', hidden: true, id: 'users-more', onclick: () => searchUsers(false) }, t('common.loadMore'));
  const chosenUser = h('div', { class: 'chips', id: 'user-chosen', 'aria-live': 'polite' });
  const userBox = h('div', { class: 'field', id: 'user-box' },
    h('label', { for: 'user-search' }, t('lic.type.user')), userSearch, userResults, h('div', { class: 'more' }, usersMore), chosenUser);

  // Asset
  const assetId = h('input', {
    type: 'text', id: 'asset-id', maxlength: '200', autocomplete: 'off', placeholder: t('lic.assetIdExample'),
    oninput: () => {
      clearTimeout(state.assetTimer);
      state.assetTimer = setTimeout(showAssetHeld, 300);
    },
  });
  const assetName = h('input', { type: 'text', id: 'asset-name', maxlength: '200', placeholder: t('lic.assetNameExample') });
  const assetBox = h('div', { class: 'asset-fields', id: 'asset-box' },
    h('div', { class: 'field' }, h('label', { for: 'asset-id' }, t('lic.assetId')), assetId),
    h('div', { class: 'field' }, h('label', { for: 'asset-name' }, t('lic.assetName')), assetName));

  const held = h('div', { class: 'held', id: 'held' });
  const startedBox = h('fieldset', { class: 'field reuse', id: 'reuse-box', hidden: true });
  const quantity = h('input', { type: 'number', id: 'quantity', min: '1', step: '1', value: '1' });
  const notes = h('textarea', { id: 'notes', rows: '3', maxlength: '2000', placeholder: t('lic.notesExample') });
  const shown = errorBox({ id: 'checkout-error' });
  const error = shown.el;
  const submit = h('button', { type: 'submit', class: 'btn btn-primary', id: 'checkout-submit' }, t('common.submit'));

  const form = h('form', { class: 'checkout', novalidate: true, onsubmit: (e) => { e.preventDefault(); send(); } },
    h('section', { class: 'card' }, h('h2', {}, t('lic.checkoutTo')), toPicker, userBox, assetBox, held),
    h('section', { class: 'card' },
      startedBox,
      h('div', { class: 'field' }, h('label', { for: 'quantity' }, t('lic.col.quantity')), quantity),
      h('div', { class: 'field' }, h('label', { for: 'notes' }, t('lic.col.notes')), notes)),
    error,
    h('div', { class: 'form-actions sticky-actions' }, h('a', { class: 'btn', href: back, id: 'checkout-cancel' }, t('common.cancel')), submit),
  );
  const title = h('h1', {}, t('lic.checkoutTitle'));
  replace(container, h('section', { class: 'narrow-page checkout-page' }, crumbs,
    h('div', { class: 'page-head' }, h('div', { class: 'title-block' }, title, figures)), form));

  function renderTo() {
    replace(toPicker, ['user', 'asset'].map((value) => h('label', { class: 'seg' },
      h('input', {
        type: 'radio', name: 'checkout-to', value, checked: state.to === value,
        onchange: () => { state.to = value; renderTo(); showHeld(); },
      }),
      t(`lic.type.${value}`))));
    userBox.hidden = state.to !== 'user';
    assetBox.hidden = state.to !== 'asset';
  }

  /** Whether a send whose outcome is unknown (its answer lost) reused a started seat of an end
   *  date: that choice stays, so the request sent again is the same one. */
  function sentReuse() {
    return Boolean(state.attempt && state.reuse && state.endsOn);
  }

  async function loadLicense() {
    try {
      const l = await api.get(`/v1/licenses/${id}`);
      if (state.stopped) return;
      state.license = l;
      document.title = `${t('lic.checkoutTitle')} · ${l.name} · licensor`;
      replace(figures,
        h('p', { class: 'license-name' }, h('a', { href: back }, l.name)),
        h('p', { class: 'muted' }, t('lic.availableOf', { seats: num(l.seats) }), ' ', availableFigure(l)));
      quantity.max = String(Math.max(1, l.available));
      if (l.term_days != null && l.started_reusable > 0) {
        state.started = await api.get(`/v1/licenses/${id}/started`);
        if (state.stopped) return;
        // A checkout that may have gone through (sent, its answer lost) keeps the end date it
        // chose even once that date's seats are gone — they may be gone to it: sent again, the
        // same request under the same key gets the first answer, not a second seat.
        const offered = state.started.data.some((g) => g.ends_on === state.endsOn);
        if (!offered && !sentReuse()) state.endsOn = state.started.data[0]?.ends_on || null;
      } else if (sentReuse()) {
        // The last started seat may have gone to the checkout sent before (its answer lost).
        state.started = { data: [], total: 0 };
      } else {
        state.started = null;
        state.reuse = false;
      }
      renderReuse();
    } catch (err) {
      if (!state.stopped) shown.show(() => problemBox(err.problem || { title: t('lic.loadFailed'), detail: String(err) }));
    }
  }

  function renderReuse() {
    const s = state.started;
    // The date an earlier send chose, no longer offered (see loadLicense): still shown, chosen.
    const kept = sentReuse() && !s?.data.some((g) => g.ends_on === state.endsOn)
      ? { ends_on: state.endsOn, count: 0 } : null;
    startedBox.hidden = !kept && (!s || s.total === 0);
    if (startedBox.hidden) return;
    const dates = kept ? [...(s?.data || []), kept] : s.data;
    const fresh = Math.max(0, state.license.available - (s?.total || 0));
    const mode = (value, label, count) => h('label', { class: 'check' },
      h('input', {
        type: 'radio', name: 'seat-kind', value, checked: state.reuse === (value === 'reuse'),
        onchange: () => { state.reuse = value === 'reuse'; renderReuse(); },
      }), label, h('span', { class: 'muted small' }, ` (${num(count)})`));
    replace(startedBox,
      h('legend', {}, t('lic.seatKind')),
      h('div', { class: 'radios' },
        mode('new', t('lic.newSeat'), fresh),
        mode('reuse', t('lic.reuseStarted'), s?.total || 0)),
      state.reuse && dates.length > 1
        ? h('div', { class: 'field ends-on' },
          h('label', { for: 'ends-on' }, t('lic.chooseEndDate')),
          h('select', { id: 'ends-on', onchange: (e) => { state.endsOn = e.target.value; } },
            dates.map((g) => h('option', { value: g.ends_on, selected: g.ends_on === state.endsOn },
              t('lic.endDateOption', { date: day(g.ends_on), n: g.count })))))
        : null,
      state.reuse && dates.length === 1
        ? h('p', { class: 'muted small' }, t('lic.endDateOnly', { date: day(dates[0].ends_on), n: dates[0].count }))
        : null,
    );
  }

  // --- who ---------------------------------------------------------------------------------

  async function searchUsers(reset) {
    const seq = ++state.searchSeq;
    usersMore.disabled = true;
    try {
      const page = await api.get('/v1/directory/users', {
        search: userSearch.value.trim(), limit: USERS_PAGE, cursor: reset ? null : state.usersNext,
      });
      if (state.stopped || seq !== state.searchSeq) return;
      state.users = reset ? page.data : state.users.concat(page.data);
      state.usersNext = page.next_cursor;
      renderUsers();
    } catch (err) {
      if (state.stopped || seq !== state.searchSeq) return;
      replace(userResults, h('li', { class: 'pick-error' }, problemBox(err.problem || { title: t('lic.usersFailed'), detail: String(err) })));
    } finally {
      usersMore.disabled = false;
    }
  }

  function renderUsers() {
    usersMore.hidden = !state.usersNext || userResults.hidden;
    if (state.users.length === 0) {
      replace(userResults, h('li', { class: 'muted pick-empty' }, t('lic.noUser')));
      return;
    }
    replace(userResults, state.users.map((u) => h('li', {},
      h('label', { class: 'pick' },
        h('input', {
          type: 'radio',
          name: 'user',
          value: u.id,
          checked: state.user?.id === u.id,
          dataset: { upn: u.user_principal_name || '' },
          onchange: () => {
            state.user = u;
            // Picked: the list gives way to the choice and what it already holds.
            userResults.hidden = true;
            usersMore.hidden = true;
            renderChosenUser();
            showHeld();
          },
        }),
        h('span', { class: 'pick-text' },
          h('span', { class: 'pick-name' }, u.display_name || u.user_principal_name || u.id),
          u.user_principal_name ? h('span', { class: 'muted small' }, u.user_principal_name) : null)))));
  }

  function renderChosenUser() {
    const u = state.user;
    replace(chosenUser, u
      ? h('span', { class: 'chip' }, u.display_name || u.user_principal_name || u.id,
        h('button', {
          type: 'button', class: 'chip-x', 'aria-label': t('launch.removeChip', { name: u.display_name || u.id }),
          onclick: () => {
            state.user = null;
            userResults.hidden = false;
            renderChosenUser();
            renderUsers();
            showHeld();
            userSearch.focus();
          },
        }, '×'))
      : h('span', { class: 'muted small' }, t('lic.noUserYet')));
  }

  /** The assignee as the API takes it, or null when none is chosen yet. */
  function assignee() {
    if (state.to === 'user') {
      const u = state.user;
      return u ? { type: 'user', id: u.id, name: u.display_name || u.user_principal_name || undefined } : null;
    }
    const tag = assetId.value.trim();
    if (!tag) return null;
    const name = assetName.value.trim();
    return { type: 'asset', id: tag, ...(name ? { name } : {}) };
  }

  async function showHeld() {
    const a = assignee();
    if (!a) {
      replace(held);
      return;
    }
    const rows = await heldSummary(held, a);
    // A known asset keeps its name.
    if (a.type === 'asset' && !assetName.value.trim()) {
      const named = rows.find((r) => r.assignee.name);
      if (named) assetName.value = named.assignee.name;
    }
  }

  function showAssetHeld() {
    if (state.to === 'asset') showHeld();
  }

  // --- submit -------------------------------------------------------------------------------

  async function send() {
    shown.clear();
    const a = assignee();
    const n = Number(quantity.value);
    const missing = !a ? (state.to === 'user' ? 'lic.pickUser' : 'lic.enterAsset')
      : (!Number.isInteger(n) || n < 1 || n > 10000) ? 'lic.badQuantity'
        : null;
    if (missing) {
      shown.show(() => alertBox(t(missing)));
      return;
    }
    const body = { assignee: a, quantity: n };
    if (notes.value.trim()) body.notes = notes.value.trim();
    // The end date chosen (the only one offered is chosen too, see loadLicense), never one
    // picked afresh from the license's figures read after a failed send.
    if (state.reuse && state.endsOn) body.reuse_started = { ends_on: state.endsOn };
    const json = JSON.stringify(body);
    if (!state.attempt || state.attempt.json !== json) state.attempt = { json, key: newIdempotencyKey() };
    submit.disabled = true;
    try {
      await api.post(`/v1/licenses/${id}/checkout`, body, { idempotencyKey: state.attempt.key });
      state.attempt = null;
      toast(t('lic.checkedOut', { n, name: a.name || a.id }));
      ctx.navigate(`#/licenses/${id}/used-by`);
    } catch (err) {
      // Nothing typed is lost: the form stays as it was, with the license's new figures.
      shown.show(() => licenseProblem(err, t('lic.checkoutFailed')));
      error.scrollIntoView({ behavior: 'smooth', block: 'center' });
      loadLicense();
    } finally {
      submit.disabled = false;
    }
  }

  /** What is entered so far, to build the page again with (see main.js). */
  function makeDraft() {
    return {
      to: state.to,
      user: state.user,
      userSearch: userSearch.value,
      usersShown: !userResults.hidden,
      assetId: assetId.value,
      assetName: assetName.value,
      quantity: quantity.value,
      notes: notes.value,
      reuse: state.reuse,
      endsOn: state.endsOn,
      // A checkout already sent keeps its idempotency key: sent again, it is the same checkout.
      attempt: state.attempt,
      // The error shown, shown again in the new language.
      error: shown.kept(),
    };
  }

  const draft = ctx.draft;
  if (draft) {
    // What was entered before the page was built again (a change of language).
    Object.assign(state, { to: draft.to, user: draft.user, reuse: draft.reuse, endsOn: draft.endsOn, attempt: draft.attempt });
    userSearch.value = draft.userSearch;
    userResults.hidden = !draft.usersShown;
    assetId.value = draft.assetId;
    assetName.value = draft.assetName;
    quantity.value = draft.quantity;
    notes.value = draft.notes;
    if (draft.error) shown.show(draft.error);
  }
  renderTo();
  renderChosenUser();
  loadLicense();
  searchUsers(true);
  const presetId = params.get('id');
  if (!draft && state.to === 'asset' && presetId) assetId.value = presetId;
  if (assignee()) showHeld();

  return (opts) => {
    state.stopped = true;
    clearTimeout(state.searchTimer);
    clearTimeout(state.assetTimer);
    return opts?.keepDraft ? makeDraft() : undefined;
  };
}
