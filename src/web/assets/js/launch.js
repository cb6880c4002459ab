// Starting a job: Assign / Remove / Replace Licenses or Export Results for selected groups.

import { api, newIdempotencyKey } from './api.js';
import { h, replace, problemBox, toast, errorBox, alertBox } from './dom.js';
import { KIND_LABELS, countries, num, rememberGroups } from './format.js';
import { t, labels } from './i18n.js';
import { previewDialog, previewSummary, shortagePrompt, heldCounts } from './preview.js';

const MAX_GROUPS = 100;
const SEARCH_LIMIT = 25;
/** The longest temporary assignment, per unit (ten years). */
const EXPIRY_MAX = { days: 3650, weeks: 520, months: 120 };
/** "Try on 50 members first": the job pauses if more than 10% of them fail. */
const CANARY = { members: 50, max_failed_share: 0.1 };
/** How often a preview being computed is read again. */
const PREVIEW_POLL_MS = 700;
/** Wait this long after the groups change before counting the licenses their members hold. */
const HELD_DEBOUNCE_MS = 300;

/** Export Results pop-up wording (seed: "Select a result format and an export location."). */
const EXPORT_TEXT = labels({
  format: 'export.format',
  location: 'export.location',
  download: 'export.download',
  sharepoint: 'export.sharepoint',
  s3: 'export.s3',
  driveId: 'export.driveId',
  folder: 'export.folder',
  bucket: 'export.bucket',
  prefix: 'export.prefix',
  endpoint: 'export.endpoint',
  region: 'export.region',
  s3Note: 'export.s3Note',
  needDrive: 'export.needDrive',
  needBucket: 'export.needBucket',
});

const SUBMIT_LABELS = labels({
  assign: 'launch.submit.assign', remove: 'launch.submit.remove', replace: 'launch.submit.replace', export: 'launch.submit.export',
});
const KIND_HELP = labels({
  assign: 'launch.help.assign',
  remove: 'launch.help.remove',
  replace: 'launch.help.replace',
  export: 'launch.help.export',
});

export function launchView(container, ctx) {
  const state = {
    kind: 'assign',
    groups: new Map(),
    results: [],
    skus: null,
    skuError: null,
    add: new Map(),
    remove: new Set(),
    replaceAll: false,
    expires: { on: false, value: 30, unit: 'days' },
    canary: false,
    location: '',
    otherLocation: '',
    transitive: false,
    format: 'csv',
    exportTo: { type: 'download', drive_id: '', folder_path: '/', bucket: '', prefix: '', endpoint: '', region: '' },
    attempt: null,
    stopped: false,
    searchTimer: null,
    searchSeq: 0,
    // The licenses the selected groups' members hold (the Remove and Replace pickers).
    held: { key: '', loading: false, answer: null, error: null, seq: 0, timer: null },
    // SKUs whose service plans are unfolded.
    openPlans: new Set(),
  };
  const draft = ctx.draft;
  if (draft) takeDraft(draft);

  /** What was entered before the page was built again (a change of language). */
  function takeDraft(d) {
    state.kind = d.kind;
    state.groups = new Map(d.groups.map((g) => [g.id, g]));
    state.results = d.results;
    state.add = new Map(d.add.map(([id, off]) => [id, new Set(off)]));
    state.remove = new Set(d.remove);
    state.replaceAll = d.replaceAll;
    state.expires = { ...d.expires };
    state.canary = d.canary;
    state.location = d.location;
    state.otherLocation = d.otherLocation;
    state.transitive = d.transitive;
    state.format = d.format;
    state.exportTo = { ...d.exportTo };
    state.attempt = d.attempt;
    state.openPlans = new Set(d.openPlans);
    if (d.held) Object.assign(state.held, d.held);
  }

  /** What is entered so far, to build the page again with (see main.js). */
  function makeDraft() {
    return {
      kind: state.kind,
      groups: [...state.groups.values()],
      results: state.results,
      search: searchInput.value,
      add: [...state.add].map(([id, off]) => [id, [...off]]),
      remove: [...state.remove],
      replaceAll: state.replaceAll,
      expires: { ...state.expires },
      canary: state.canary,
      location: state.location,
      otherLocation: state.otherLocation,
      transitive: state.transitive,
      format: state.format,
      exportTo: { ...state.exportTo },
      // A request already sent keeps its idempotency key: sent again, it is the same request.
      attempt: state.attempt,
      openPlans: [...state.openPlans],
      // The members' licenses already read for these groups need not be read again.
      held: state.held.answer ? { key: state.held.key, answer: state.held.answer } : null,
      // The error shown, shown again in the new language.
      error: shown.kept(),
    };
  }

  const kindPicker = h('div', { class: 'segmented kind-picker', role: 'radiogroup', 'aria-label': t('launch.kind') });
  const kindHelp = h('p', { class: 'muted' });

  // Groups
  const searchInput = h('input', {
    type: 'search',
    id: 'group-search',
    placeholder: t('launch.searchGroups'),
    value: draft?.search ?? '',
    autocomplete: 'off',
    'aria-controls': 'group-results',
    oninput: () => {
      clearTimeout(state.searchTimer);
      state.searchTimer = setTimeout(searchGroups, 250);
    },
  });
  const results = h('ul', { class: 'pick-list', id: 'group-results', 'aria-label': t('launch.groupsFound') });
  const chosen = h('div', { class: 'chips', id: 'groups-chosen', 'aria-live': 'polite' });
  const transitive = h('input', {
    type: 'checkbox',
    id: 'transitive',
    checked: state.transitive,
    onchange: (e) => { state.transitive = e.target.checked; heldChanged(); },
  });
  const groupsCard = h('section', { class: 'card' },
    h('h2', {}, t('launch.groups')),
    h('label', { for: 'group-search', class: 'visually-hidden' }, t('launch.searchGroupsLabel')),
    searchInput,
    results,
    chosen,
    h('label', { class: 'check' }, transitive, t('launch.nested')),
  );

  const licensesCard = h('section', { class: 'card', id: 'licenses' });
  const optionsCard = h('section', { class: 'card', id: 'options' });
  const shown = errorBox({ id: 'launch-error' });
  const error = shown.el;
  const submit = h('button', { type: 'submit', class: 'btn btn-primary', id: 'launch-submit' }, t('launch.submit.assign'));

  const form = h('form', { class: 'launch', novalidate: true, onsubmit: (e) => { e.preventDefault(); launch(); } },
    h('section', { class: 'card' }, h('h2', {}, t('launch.whatToDo')), kindPicker, kindHelp),
    groupsCard,
    licensesCard,
    optionsCard,
    error,
    h('div', { class: 'form-actions sticky-actions' },
      h('a', { class: 'btn', href: '#/' }, t('common.cancel')),
      submit),
  );

  replace(container, h('section', { class: 'launch-page' },
    h('nav', { class: 'crumbs' }, h('a', { href: '#/' }, t('job.allJobs'))),
    h('div', { class: 'page-head' }, h('h1', {}, t('launch.title'))),
    form,
  ));

  function renderKind() {
    replace(kindPicker, Object.entries(KIND_LABELS).map(([value, label]) => h('label', { class: 'seg' },
      h('input', {
        type: 'radio',
        name: 'kind',
        value,
        checked: state.kind === value,
        onchange: () => {
          state.kind = value;
          shown.clear();
          renderAll();
        },
      }),
      label)));
    kindHelp.textContent = KIND_HELP[state.kind];
    submit.textContent = SUBMIT_LABELS[state.kind];
  }

  function renderAll() {
    renderKind();
    renderChosen();
    renderLicenses();
    renderOptions();
  }

  // --- groups ---------------------------------------------------------------------------

  async function searchGroups() {
    const seq = ++state.searchSeq;
    try {
      const page = await api.get('/v1/directory/groups', { search: searchInput.value.trim(), limit: SEARCH_LIMIT });
      if (state.stopped || seq !== state.searchSeq) return;
      state.results = page.data;
      rememberGroups(page.data);
      renderResults();
    } catch (err) {
      if (state.stopped || seq !== state.searchSeq) return;
      replace(results, h('li', { class: 'pick-error' },
        problemBox(err.problem || { title: t('launch.groupsFailed'), detail: String(err) })));
    }
  }

  function renderResults() {
    if (state.results.length === 0) {
      replace(results, h('li', { class: 'muted pick-empty' }, t('launch.noGroup')));
      return;
    }
    const full = state.groups.size >= MAX_GROUPS;
    replace(results, state.results.map((g) => {
      const picked = state.groups.has(g.id);
      return h('li', {},
        h('label', { class: 'pick' },
          h('input', {
            type: 'checkbox',
            value: g.id,
            checked: picked,
            disabled: full && !picked,
            dataset: { group: g.display_name || g.id },
            onchange: (e) => {
              if (e.target.checked) state.groups.set(g.id, g);
              else state.groups.delete(g.id);
              renderResults();
              renderChosen();
            },
          }),
          h('span', { class: 'pick-text' },
            h('span', { class: 'pick-name' }, g.display_name || g.id),
            g.description ? h('span', { class: 'muted small' }, g.description) : null)));
    }));
  }

  function renderChosen() {
    const n = state.groups.size;
    replace(chosen,
      h('span', { class: 'muted small' }, n
        ? t(n >= MAX_GROUPS ? 'launch.groupsSelectedFull' : 'launch.groupsSelected', { n, max: MAX_GROUPS })
        : t('launch.noGroupYet')),
      [...state.groups.values()].map((g) => h('span', { class: 'chip' }, g.display_name || g.id,
        h('button', {
          type: 'button',
          class: 'chip-x',
          'aria-label': t('launch.removeChip', { name: g.display_name || g.id }),
          onclick: () => {
            state.groups.delete(g.id);
            renderResults();
            renderChosen();
          },
        }, '×'))),
    );
    heldChanged();
  }

  // --- the licenses the members hold (Remove, Replace) -----------------------------------

  function heldKey() {
    if (state.groups.size === 0) return '';
    return JSON.stringify([[...state.groups.keys()].sort(), state.transitive]);
  }

  /** Count again when Remove or Replace is chosen and the groups (or nesting) changed. */
  function heldChanged() {
    const held = state.held;
    if (state.kind !== 'remove' && state.kind !== 'replace') return;
    const key = heldKey();
    if (key === held.key) return;
    held.key = key;
    held.answer = null;
    held.error = null;
    held.loading = key !== '';
    held.seq += 1;
    clearTimeout(held.timer);
    renderLicenses();
    if (key) held.timer = setTimeout(() => loadHeld(held.seq), HELD_DEBOUNCE_MS);
  }

  async function loadHeld(seq) {
    const held = state.held;
    try {
      const answer = await api.post('/v1/directory/held-licenses', {
        groups: [...state.groups.keys()].map((id) => ({ id })),
        transitive: state.transitive,
      });
      if (state.stopped || seq !== held.seq) return;
      held.answer = answer;
      // A license no member holds cannot stay selected unseen.
      const listed = new Set(answer.data.map((l) => l.sku_id));
      for (const id of [...state.remove]) if (!listed.has(id)) state.remove.delete(id);
    } catch (err) {
      if (state.stopped || seq !== held.seq) return;
      held.error = err;
    }
    held.loading = false;
    renderLicenses();
  }

  // --- licenses -------------------------------------------------------------------------

  async function loadSkus() {
    try {
      const page = await api.get('/v1/directory/skus');
      if (state.stopped) return;
      state.skus = page.data.slice().sort((a, b) => a.sku_part_number.localeCompare(b.sku_part_number));
      state.skuError = null;
    } catch (err) {
      state.skuError = err;
    }
    if (!state.stopped) renderLicenses();
  }

  function availability(sku) {
    const text = sku.available > 0
      ? t('launch.available', { available: num(sku.available), enabled: num(sku.enabled) })
      : t('launch.noneAvailable', { consumed: num(sku.consumed), enabled: num(sku.enabled) });
    return h('span', { class: sku.available > 0 ? 'avail' : 'avail avail-none' }, text);
  }

  /** A list of SKUs to add, each with its service plans (unticked = disabled for the member). */
  function addList() {
    return h('ul', { class: 'sku-list', id: 'add-licenses' }, state.skus.map((sku) => {
      const picked = state.add.has(sku.sku_id);
      const disabled = state.add.get(sku.sku_id) || new Set();
      const plans = sku.service_plans || [];
      return h('li', { class: picked ? 'sku picked' : 'sku' },
        h('label', { class: 'pick' },
          h('input', {
            type: 'checkbox',
            value: sku.sku_id,
            dataset: { sku: sku.sku_part_number },
            checked: picked,
            onchange: (e) => {
              if (e.target.checked) state.add.set(sku.sku_id, new Set());
              else state.add.delete(sku.sku_id);
              renderLicenses();
            },
          }),
          h('span', { class: 'pick-text' }, h('span', { class: 'pick-name' }, sku.sku_part_number), availability(sku))),
        picked && plans.length
          ? h('details', {
            class: 'plans',
            open: state.openPlans.has(sku.sku_id),
            ontoggle: (e) => {
              if (e.target.open) state.openPlans.add(sku.sku_id);
              else state.openPlans.delete(sku.sku_id);
            },
          },
            h('summary', {}, t('launch.plans', { on: plans.length - disabled.size, all: plans.length })),
            h('ul', {}, plans.map((p) => h('li', {}, h('label', { class: 'check' },
              h('input', {
                type: 'checkbox',
                checked: !disabled.has(p.service_plan_id),
                onchange: (e) => {
                  if (e.target.checked) disabled.delete(p.service_plan_id);
                  else disabled.add(p.service_plan_id);
                  state.add.set(sku.sku_id, disabled);
                  e.target.closest('details').querySelector('summary').textContent =
                    t('launch.plans', { on: plans.length - disabled.size, all: plans.length });
                },
              }),
              p.service_plan_name || p.service_plan_id)))))
          : null,
      );
    }));
  }

  /** The licenses the members of the selected groups hold, with how many hold each. */
  function removeList(id) {
    const held = state.held;
    if (state.groups.size === 0) return h('p', { class: 'muted', id }, t('launch.heldChooseGroups'));
    if (held.error) {
      return h('div', { id }, problemBox(held.error.problem || { title: t('launch.heldFailed'), detail: String(held.error) }),
        h('button', { type: 'button', class: 'btn', onclick: () => { held.key = ''; heldChanged(); } }, t('common.tryAgain')));
    }
    if (held.loading || !held.answer) return h('p', { class: 'loading', id: 'held-loading' }, t('launch.heldReading'));
    const a = held.answer;
    const note = h('p', { class: 'muted small', id: 'held-note' }, a.sampled
      ? t('launch.heldSampled', { n: num(a.members_read) })
      : t('launch.heldAll', { n: a.members_read === 1 ? 1 : num(a.members_read) }));
    if (a.data.length === 0) return [h('p', { class: 'muted', id }, t('launch.heldNone')), note];
    const name = (l) => l.sku_part_number || skuName(l.sku_id);
    const list = a.data.slice().sort((x, y) => name(x).localeCompare(name(y)));
    return [h('ul', { class: 'sku-list', id }, list.map((l) => h('li', { class: 'sku' },
      h('label', { class: 'pick' },
        h('input', {
          type: 'checkbox',
          value: l.sku_id,
          dataset: { sku: name(l), direct: l.direct, inherited: l.inherited },
          checked: state.remove.has(l.sku_id),
          onchange: (e) => {
            if (e.target.checked) state.remove.add(l.sku_id);
            else state.remove.delete(l.sku_id);
          },
        }),
        h('span', { class: 'pick-text' }, h('span', { class: 'pick-name' }, name(l)), heldCounts(l)))))), note];
  }

  function renderLicenses() {
    const kind = state.kind;
    licensesCard.hidden = kind === 'export';
    if (kind === 'export') {
      replace(licensesCard);
      return;
    }
    if (state.skuError) {
      replace(licensesCard, h('h2', {}, t('launch.licenses')),
        problemBox(state.skuError.problem || { title: t('launch.licensesFailed'), detail: String(state.skuError) }),
        h('button', { type: 'button', class: 'btn', onclick: () => { state.skuError = null; renderLicenses(); loadSkus(); } }, t('common.tryAgain')));
      return;
    }
    if (!state.skus) {
      replace(licensesCard, h('h2', {}, t('launch.licenses')), h('p', { class: 'loading' }, t('launch.readingSkus')));
      return;
    }
    if (kind === 'remove' || kind === 'replace') heldChanged();
    if (kind === 'assign') {
      replace(licensesCard, h('h2', {}, t('launch.toAssign')), addList());
    } else if (kind === 'remove') {
      replace(licensesCard, h('h2', {}, t('launch.toRemove')), removeList('remove-licenses'));
    } else {
      const mode = (value, label) => h('label', { class: 'check' },
        h('input', {
          type: 'radio',
          name: 'replace-mode',
          value,
          checked: state.replaceAll === (value === 'all'),
          onchange: () => {
            state.replaceAll = value === 'all';
            renderLicenses();
          },
        }), label);
      replace(licensesCard,
        h('h2', {}, t('launch.toReplace')),
        h('div', { class: 'radios' },
          mode('all', t('launch.replaceAll')),
          mode('some', t('launch.replaceSome'))),
        state.replaceAll ? h('p', { class: 'muted small' }, t('launch.replaceAllHelp')) : removeList('remove-licenses'),
        h('h2', {}, t('launch.replacements')),
        addList());
    }
  }

  // --- options --------------------------------------------------------------------------

  function renderOptions() {
    const kind = state.kind;
    const parts = [];
    if (kind === 'assign' || kind === 'replace') {
      const other = state.location === 'other';
      const locationSelect = h('select', {
        id: 'usage-location',
        onchange: (e) => {
          state.location = e.target.value;
          renderOptions();
        },
      },
      h('option', { value: '', selected: state.location === '' }, t('location.noChange')),
      countries().map(([code, name]) => h('option', { value: code, selected: state.location === code }, `${name} (${code})`)),
      h('option', { value: 'other', selected: other }, t('launch.otherCountry')));
      parts.push(h('div', { class: 'field' },
        h('label', { for: 'usage-location' }, t('launch.location')),
        locationSelect,
        other ? h('input', {
          type: 'text',
          id: 'usage-location-code',
          class: 'code-input',
          maxlength: '2',
          placeholder: t('launch.countryExample'),
          'aria-label': t('launch.countryCode'),
          value: state.otherLocation,
          oninput: (e) => { state.otherLocation = e.target.value.toUpperCase(); e.target.value = state.otherLocation; },
        }) : null,
        h('p', { class: 'muted small' }, t('launch.locationHelp'))));
    }
    if (kind === 'assign') {
      const e = state.expires;
      parts.push(h('div', { class: 'field expiry' },
        h('label', { class: 'check' },
          h('input', {
            type: 'checkbox',
            id: 'expires-on',
            checked: e.on,
            onchange: (ev) => { e.on = ev.target.checked; renderOptions(); },
          }),
          t('launch.expiresIn')),
        h('input', {
          type: 'number',
          id: 'expires-value',
          min: '1',
          max: String(EXPIRY_MAX[e.unit]),
          step: '1',
          value: String(e.value),
          disabled: !e.on,
          'aria-label': t('launch.number'),
          oninput: (ev) => { e.value = ev.target.value; },
        }),
        h('select', {
          id: 'expires-unit',
          disabled: !e.on,
          'aria-label': t('launch.unit'),
          onchange: (ev) => {
            e.unit = ev.target.value;
            document.getElementById('expires-value').max = String(EXPIRY_MAX[e.unit]);
          },
        }, ['days', 'weeks', 'months'].map((u) => h('option', { value: u, selected: e.unit === u }, t(`unit.${u}`)))),
        h('p', { class: 'muted small' }, t('launch.expiryHelp'))));
    }
    if (kind !== 'export') {
      parts.push(h('div', { class: 'field canary' },
        h('label', { class: 'check' },
          h('input', {
            type: 'checkbox',
            id: 'canary-on',
            checked: state.canary,
            onchange: (ev) => { state.canary = ev.target.checked; },
          }),
          t('launch.canary', { n: CANARY.members })),
        h('p', { class: 'muted small' }, t('launch.canaryHelp', { n: CANARY.members, share: Math.round(CANARY.max_failed_share * 100) }))));
    }
    if (kind === 'export') {
      parts.push(h('fieldset', { class: 'field' },
        h('legend', {}, t('launch.format')),
        h('div', { class: 'radios' }, ['csv', 'json', 'xlsx'].map((f) => h('label', { class: 'check' },
          h('input', {
            type: 'radio',
            name: 'export-format',
            value: f,
            checked: state.format === f,
            onchange: () => { state.format = f; },
          }), f.toUpperCase())))));
      parts.push(exportLocationField());
    }
    optionsCard.hidden = parts.length === 0;
    replace(optionsCard, h('h2', {}, t('launch.options')), parts);
  }

  /** Export location: download, a SharePoint/OneDrive folder or an S3-compatible bucket. */
  function exportLocationField() {
    const to = state.exportTo;
    const details = h('div', { id: 'export-location-details' });
    const input = (key, label, attrs = {}) => h('label', { class: 'field' }, label,
      h('input', { type: 'text', id: `export-${key}`, value: to[key], oninput: (ev) => { to[key] = ev.target.value; }, ...attrs }));
    const showDetails = () => {
      if (to.type === 'sharepoint') {
        replace(details, input('drive_id', EXPORT_TEXT.driveId, { required: true }), input('folder_path', EXPORT_TEXT.folder));
      } else if (to.type === 's3') {
        replace(details, input('bucket', EXPORT_TEXT.bucket, { required: true }), input('prefix', EXPORT_TEXT.prefix),
          input('endpoint', EXPORT_TEXT.endpoint), input('region', EXPORT_TEXT.region),
          h('p', { class: 'muted small' }, EXPORT_TEXT.s3Note));
      } else {
        replace(details);
      }
    };
    showDetails();
    return h('fieldset', { class: 'field' },
      h('legend', {}, EXPORT_TEXT.location),
      h('div', { class: 'radios' }, ['download', 'sharepoint', 's3'].map((t) => h('label', { class: 'check' },
        h('input', {
          type: 'radio',
          name: 'export-location',
          value: t,
          checked: to.type === t,
          onchange: () => { to.type = t; showDetails(); },
        }), EXPORT_TEXT[t]))),
      details);
  }

  /**
   * The `location` of an export request, or what is missing: a function reading the message in
   * the language of the moment (kept through a change of language, see errorBox).
   */
  function exportLocation() {
    const to = state.exportTo;
    if (to.type === 'sharepoint') {
      if (!to.drive_id.trim()) return { missing: () => EXPORT_TEXT.needDrive };
      return { location: { type: 'sharepoint', drive_id: to.drive_id.trim(), folder_path: to.folder_path.trim() || '/' } };
    }
    if (to.type === 's3') {
      if (!to.bucket.trim()) return { missing: () => EXPORT_TEXT.needBucket };
      const location = { type: 's3', bucket: to.bucket.trim(), prefix: to.prefix.trim() };
      if (to.endpoint.trim()) location.endpoint = to.endpoint.trim();
      if (to.region.trim()) location.region = to.region.trim();
      return { location };
    }
    return { location: { type: 'download' } };
  }

  // --- launch ---------------------------------------------------------------------------

  /** The request body, or what is missing (a function reading the message, as exportLocation's). */
  function body() {
    const kind = state.kind;
    if (state.groups.size === 0) return { missing: () => t('launch.missingGroup') };
    const b = { kind, groups: [...state.groups.keys()], transitive: state.transitive };
    if (kind === 'assign' || kind === 'replace') {
      if (state.add.size === 0) {
        return { missing: () => (kind === 'assign' ? t('launch.missingAssign') : t('launch.missingReplacement')) };
      }
      b.add_licenses = [...state.add.entries()].map(([sku_id, off]) => ({ sku_id, disabled_plans: [...off] }));
      let location = state.location === 'other' ? state.otherLocation.trim() : state.location;
      if (state.location === 'other' && !/^[A-Z]{2}$/.test(location)) {
        return { missing: () => t('launch.badLocation') };
      }
      b.usage_location = location || null;
    }
    if (kind === 'remove' || (kind === 'replace' && !state.replaceAll)) {
      if (state.remove.size === 0) {
        return { missing: () => (kind === 'remove' ? t('launch.missingRemove') : t('launch.missingReplaced')) };
      }
      b.remove_licenses = [...state.remove];
    }
    if (kind === 'replace') b.replace_all = state.replaceAll;
    if (kind === 'assign') {
      if (state.expires.on) {
        const value = Number(state.expires.value);
        const max = EXPIRY_MAX[state.expires.unit];
        if (!Number.isInteger(value) || value < 1 || value > max) {
          const { unit } = state.expires;
          return { missing: () => t('launch.badExpiry', { unit: t(`unit.${unit}`), max }) };
        }
        b.expires_in = { value, unit: state.expires.unit };
      } else {
        b.expires_in = null;
      }
    }
    if (kind !== 'export' && state.canary) b.canary = { ...CANARY };
    if (kind === 'export') {
      const { location, missing } = exportLocation();
      if (missing) return { missing };
      b.export = { format: state.format, location };
    }
    return { body: b };
  }

  function skuName(skuId) {
    return state.skus?.find((s) => s.sku_id === skuId)?.sku_part_number || skuId;
  }

  /** For Remove and Replace: what is removed, from whom, and the seed's warning. */
  function removalWarning(b) {
    const groups = b.groups.length === 1
      ? t('launch.theGroup', { name: [...state.groups.values()][0].display_name })
      : t('launch.nGroups', { n: b.groups.length });
    const what = b.replace_all
      ? t('launch.everyLicense')
      : (b.remove_licenses || []).map(skuName).join(', ');
    return h('div', { class: 'removal-warning' },
      h('p', {}, t(b.transitive ? 'launch.removeBodyNested' : 'launch.removeBody', { what, groups })),
      h('p', {}, t('launch.removeWarn')));
  }

  /** Show the error `render()` builds (kept through a change of language, see errorBox). */
  function showError(render) {
    shown.show(render);
    error.scrollIntoView({ behavior: 'smooth', block: 'center' });
  }

  async function launch() {
    shown.clear();
    const { body: b, missing } = body();
    if (missing) {
      showError(() => alertBox(missing()));
      return;
    }
    const request = b.kind === 'export' ? b : { ...b, preview: true };
    // The same request retried keeps its key, so it cannot start a second job.
    const json = JSON.stringify(request);
    if (!state.attempt || state.attempt.json !== json) state.attempt = { json, key: newIdempotencyKey() };
    submit.disabled = true;
    try {
      if (b.kind === 'export') {
        const job = await api.post('/v1/jobs', request, { idempotencyKey: state.attempt.key });
        state.attempt = null;
        toast(t('launch.started', { kind: KIND_LABELS[job.kind] || '' }));
        ctx.navigate(`#/jobs/${job.id}`);
      } else {
        await previewThenLaunch(b, request);
      }
    } catch (err) {
      showError(() => {
        const p = err.problem || { title: t('launch.notStarted'), detail: String(err) };
        if (err.code === 'no_licenses_available') {
          return problemBox({ ...p, title: t('launch.noLicenses') },
            h('p', {}, t('launch.noLicensesDetail', { sku: p.sku_part_number || skuName(p.sku_id), available: num(p.available), enabled: num(p.enabled), consumed: num(p.consumed) }),
              t('launch.noLicensesHint')));
        }
        return problemBox({ ...p, title: p.title || t('launch.notStarted') });
      });
    } finally {
      submit.disabled = false;
    }
  }

  /**
   * Add / Remove / Replace: submit the request as a preview, follow it while it is computed,
   * show its summary (with the shortage prompt when a SKU runs short) and launch it — or
   * cancel the preview and stay in the form.
   */
  async function previewThenLaunch(b, request) {
    const dialog = previewDialog(t(`preview.title.${b.kind}`));
    dialog.computing(null);
    let job;
    try {
      job = await api.post('/v1/jobs', request, { idempotencyKey: state.attempt.key });
    } catch (err) {
      dialog.close();
      throw err;
    }
    state.attempt = null;
    dialog.element.dataset.job = job.id;
    const cancel = async () => {
      try {
        await api.post(`/v1/jobs/${job.id}/cancel`);
        toast(t('preview.cancelled'));
      } catch (err) {
        toast(t('preview.cancelFailed', { message: err.message }), 'error');
      }
    };
    const openLink = () => h('p', {}, h('a', { href: `#/jobs/${job.id}`, onclick: () => dialog.close() }, t('preview.openJob')));
    try {
      while (job.status === 'queued' || job.status === 'running') {
        dialog.computing(job);
        if (await dialog.waitOrCancel(PREVIEW_POLL_MS)) {
          dialog.close();
          await cancel();
          return;
        }
        job = await api.get(`/v1/jobs/${job.id}`);
      }
    } catch (err) {
      dialog.failed(err.problem || { title: t('preview.failed'), detail: String(err) }, openLink());
      return;
    }
    if (state.stopped || dialog.cancelled) {
      dialog.close();
      if (dialog.cancelled) await cancel();
      return;
    }
    if (job.status !== 'previewed' || !job.preview) {
      dialog.failed({
        title: t('preview.failed'),
        detail: job.error?.detail || t('preview.endedAs', { status: job.status }),
        code: job.error?.code,
      }, openLink());
      return;
    }
    const summary = job.preview;
    const removes = b.kind === 'remove' || b.kind === 'replace';
    const answer = await dialog.ask({
      content: [
        shortagePrompt(summary, skuName),
        previewSummary(summary, { skuName, request: b }),
        removes ? removalWarning(b) : null,
      ],
      launchLabel: summary.would_fail > 0 ? t('preview.launchAnyway') : t('preview.launch'),
      danger: summary.would_fail > 0 || removes,
    });
    if (answer !== 'launch') {
      dialog.close();
      await cancel();
      return;
    }
    try {
      const launched = await api.post(`/v1/jobs/${job.id}/launch`);
      dialog.close();
      toast(t('launch.started', { kind: KIND_LABELS[launched.kind] || '' }));
      ctx.navigate(`#/jobs/${launched.id}`);
    } catch (err) {
      dialog.failed(err.problem || { title: t('preview.launchFailed'), detail: String(err) }, openLink());
    }
  }

  renderAll();
  if (draft?.error) shown.show(draft.error);
  if (state.results.length) renderResults();
  searchGroups();
  loadSkus();

  return (opts) => {
    state.stopped = true;
    clearTimeout(state.searchTimer);
    clearTimeout(state.held.timer);
    return opts?.keepDraft ? makeDraft() : undefined;
  };
}
