// Starting a job: Assign / Remove / Replace Licenses or Export Results for selected groups.

import { api, newIdempotencyKey } from './api.js';
import { h, replace, problemBox, toast, confirmDialog } from './dom.js';
import { KIND_LABELS, COUNTRIES, num, rememberGroups } from './format.js';

const MAX_GROUPS = 100;
const SEARCH_LIMIT = 25;
/** The longest temporary assignment, per unit (ten years). */
const EXPIRY_MAX = { days: 3650, weeks: 520, months: 120 };

/** Export Results pop-up wording (seed: "Select a result format and an export location."). */
const EXPORT_TEXT = {
  format: 'Result format',
  location: 'Export location',
  download: 'Download from licensor',
  sharepoint: 'SharePoint or OneDrive folder',
  s3: 'S3-compatible bucket',
  driveId: 'Drive ID (document library or OneDrive)',
  folder: 'Folder',
  bucket: 'Bucket',
  prefix: 'Key prefix',
  endpoint: 'Endpoint URL (leave empty for AWS)',
  region: 'Region (leave empty for us-east-1)',
  s3Note: 'licensor reads the bucket credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in its environment.',
  needDrive: 'Enter the drive ID of the SharePoint document library or OneDrive.',
  needBucket: 'Enter the bucket name.',
};

const SUBMIT_LABELS = { assign: 'Add', remove: 'Remove', replace: 'Replace', export: 'Export' };
const KIND_HELP = {
  assign: 'Give the members of the selected groups the chosen licenses.',
  remove: 'Take the chosen licenses away from the members of the selected groups.',
  replace: 'Swap licenses the members hold for others, in one step per member.',
  export: 'Write one row per member and license of the selected groups to a file.',
};

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
    location: '',
    otherLocation: '',
    transitive: false,
    format: 'csv',
    exportTo: { type: 'download', drive_id: '', folder_path: '/', bucket: '', prefix: '', endpoint: '', region: '' },
    attempt: null,
    stopped: false,
    searchTimer: null,
    searchSeq: 0,
  };

  const kindPicker = h('div', { class: 'segmented kind-picker', role: 'radiogroup', 'aria-label': 'Kind of job' });
  const kindHelp = h('p', { class: 'muted' });

  // Groups
  const searchInput = h('input', {
    type: 'search',
    id: 'group-search',
    placeholder: 'Search groups by name',
    autocomplete: 'off',
    'aria-controls': 'group-results',
    oninput: () => {
      clearTimeout(state.searchTimer);
      state.searchTimer = setTimeout(searchGroups, 250);
    },
  });
  const results = h('ul', { class: 'pick-list', id: 'group-results', 'aria-label': 'Groups found' });
  const chosen = h('div', { class: 'chips', id: 'groups-chosen', 'aria-live': 'polite' });
  const transitive = h('input', {
    type: 'checkbox',
    id: 'transitive',
    onchange: (e) => { state.transitive = e.target.checked; },
  });
  const groupsCard = h('section', { class: 'card' },
    h('h2', {}, 'Groups'),
    h('label', { for: 'group-search', class: 'visually-hidden' }, 'Search groups'),
    searchInput,
    results,
    chosen,
    h('label', { class: 'check' }, transitive, 'Include nested groups (members of groups inside the selected groups)'),
  );

  const licensesCard = h('section', { class: 'card', id: 'licenses' });
  const optionsCard = h('section', { class: 'card', id: 'options' });
  const error = h('div', { id: 'launch-error' });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary', id: 'launch-submit' }, 'Add');

  const form = h('form', { class: 'launch', novalidate: true, onsubmit: (e) => { e.preventDefault(); launch(); } },
    h('section', { class: 'card' }, h('h2', {}, 'What to do'), kindPicker, kindHelp),
    groupsCard,
    licensesCard,
    optionsCard,
    error,
    h('div', { class: 'form-actions sticky-actions' },
      h('a', { class: 'btn', href: '#/' }, 'Cancel'),
      submit),
  );

  replace(container, h('section', { class: 'launch-page' },
    h('nav', { class: 'crumbs' }, h('a', { href: '#/' }, '← All jobs')),
    h('div', { class: 'page-head' }, h('h1', {}, 'New job')),
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
          replace(error);
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
        problemBox(err.problem || { title: 'Could not read the groups', detail: String(err) })));
    }
  }

  function renderResults() {
    if (state.results.length === 0) {
      replace(results, h('li', { class: 'muted pick-empty' }, 'No group matches.'));
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
            dataset: { group: g.displayName || g.id },
            onchange: (e) => {
              if (e.target.checked) state.groups.set(g.id, g);
              else state.groups.delete(g.id);
              renderResults();
              renderChosen();
            },
          }),
          h('span', { class: 'pick-text' },
            h('span', { class: 'pick-name' }, g.displayName || g.id),
            g.description ? h('span', { class: 'muted small' }, g.description) : null)));
    }));
  }

  function renderChosen() {
    const n = state.groups.size;
    replace(chosen,
      h('span', { class: 'muted small' }, n
        ? `${n} of at most ${MAX_GROUPS} groups selected${n >= MAX_GROUPS ? ' (the most a job can take)' : ''}:`
        : 'No group selected yet.'),
      [...state.groups.values()].map((g) => h('span', { class: 'chip' }, g.displayName || g.id,
        h('button', {
          type: 'button',
          class: 'chip-x',
          'aria-label': `Remove ${g.displayName || g.id}`,
          onclick: () => {
            state.groups.delete(g.id);
            renderResults();
            renderChosen();
          },
        }, '×'))),
    );
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
      ? `${num(sku.available)} of ${num(sku.enabled)} available`
      : `No licenses available (${num(sku.consumed)} of ${num(sku.enabled)} in use)`;
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
          ? h('details', { class: 'plans' },
            h('summary', {}, `Service plans: ${plans.length - disabled.size} of ${plans.length} on`),
            h('ul', {}, plans.map((p) => h('li', {}, h('label', { class: 'check' },
              h('input', {
                type: 'checkbox',
                checked: !disabled.has(p.servicePlanId),
                onchange: (e) => {
                  if (e.target.checked) disabled.delete(p.servicePlanId);
                  else disabled.add(p.servicePlanId);
                  state.add.set(sku.sku_id, disabled);
                  e.target.closest('details').querySelector('summary').textContent =
                    `Service plans: ${plans.length - disabled.size} of ${plans.length} on`;
                },
              }),
              p.servicePlanName || p.servicePlanId)))))
          : null,
      );
    }));
  }

  function removeList(id) {
    return h('ul', { class: 'sku-list', id }, state.skus.map((sku) => h('li', { class: 'sku' },
      h('label', { class: 'pick' },
        h('input', {
          type: 'checkbox',
          value: sku.sku_id,
          dataset: { sku: sku.sku_part_number },
          checked: state.remove.has(sku.sku_id),
          onchange: (e) => {
            if (e.target.checked) state.remove.add(sku.sku_id);
            else state.remove.delete(sku.sku_id);
          },
        }),
        h('span', { class: 'pick-text' }, h('span', { class: 'pick-name' }, sku.sku_part_number),
          h('span', { class: 'muted small' }, `${num(sku.consumed)} in use`))))));
  }

  function renderLicenses() {
    const kind = state.kind;
    licensesCard.hidden = kind === 'export';
    if (kind === 'export') {
      replace(licensesCard);
      return;
    }
    if (state.skuError) {
      replace(licensesCard, h('h2', {}, 'Licenses'),
        problemBox(state.skuError.problem || { title: 'Could not read the licenses', detail: String(state.skuError) }),
        h('button', { type: 'button', class: 'btn', onclick: () => { state.skuError = null; renderLicenses(); loadSkus(); } }, 'Try again'));
      return;
    }
    if (!state.skus) {
      replace(licensesCard, h('h2', {}, 'Licenses'), h('p', { class: 'loading' }, 'Reading the subscribed licenses…'));
      return;
    }
    if (kind === 'assign') {
      replace(licensesCard, h('h2', {}, 'Licenses to assign'), addList());
    } else if (kind === 'remove') {
      replace(licensesCard, h('h2', {}, 'Licenses to remove'), removeList('remove-licenses'));
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
        h('h2', {}, 'Licenses to replace'),
        h('div', { class: 'radios' },
          mode('all', 'Replace all of the licenses'),
          mode('some', 'Select the licenses to be replaced')),
        state.replaceAll ? h('p', { class: 'muted small' }, 'Every license a member holds directly is swapped for the replacement licenses.') : removeList('remove-licenses'),
        h('h2', {}, 'Replacement licenses'),
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
      h('option', { value: '', selected: state.location === '' }, 'No Change'),
      COUNTRIES.map(([code, name]) => h('option', { value: code, selected: state.location === code }, `${name} (${code})`)),
      h('option', { value: 'other', selected: other }, 'Other country code…'));
      parts.push(h('div', { class: 'field' },
        h('label', { for: 'usage-location' }, 'Location'),
        locationSelect,
        other ? h('input', {
          type: 'text',
          id: 'usage-location-code',
          class: 'code-input',
          maxlength: '2',
          placeholder: 'e.g. NO',
          'aria-label': 'ISO 3166-1 alpha-2 country code',
          value: state.otherLocation,
          oninput: (e) => { state.otherLocation = e.target.value.toUpperCase(); e.target.value = state.otherLocation; },
        }) : null,
        h('p', { class: 'muted small' }, 'No Change keeps each member\'s current usage location. A license can only be assigned to members with a usage location.')));
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
          'License will expire in'),
        h('input', {
          type: 'number',
          id: 'expires-value',
          min: '1',
          max: String(EXPIRY_MAX[e.unit]),
          step: '1',
          value: String(e.value),
          disabled: !e.on,
          'aria-label': 'Number',
          oninput: (ev) => { e.value = ev.target.value; },
        }),
        h('select', {
          id: 'expires-unit',
          disabled: !e.on,
          'aria-label': 'Unit',
          onchange: (ev) => {
            e.unit = ev.target.value;
            document.getElementById('expires-value').max = String(EXPIRY_MAX[e.unit]);
          },
        }, ['days', 'weeks', 'months'].map((u) => h('option', { value: u, selected: e.unit === u }, u))),
        h('p', { class: 'muted small' }, 'A temporary license is removed automatically when it is due.')));
    }
    if (kind === 'export') {
      parts.push(h('fieldset', { class: 'field' },
        h('legend', {}, 'Result format'),
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
    replace(optionsCard, h('h2', {}, 'Options'), parts);
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

  /** The `location` of an export request, or a message saying what is missing. */
  function exportLocation() {
    const to = state.exportTo;
    if (to.type === 'sharepoint') {
      if (!to.drive_id.trim()) return { missing: EXPORT_TEXT.needDrive };
      return { location: { type: 'sharepoint', drive_id: to.drive_id.trim(), folder_path: to.folder_path.trim() || '/' } };
    }
    if (to.type === 's3') {
      if (!to.bucket.trim()) return { missing: EXPORT_TEXT.needBucket };
      const location = { type: 's3', bucket: to.bucket.trim(), prefix: to.prefix.trim() };
      if (to.endpoint.trim()) location.endpoint = to.endpoint.trim();
      if (to.region.trim()) location.region = to.region.trim();
      return { location };
    }
    return { location: { type: 'download' } };
  }

  // --- launch ---------------------------------------------------------------------------

  /** The request body, or a message saying what is missing. */
  function body() {
    const kind = state.kind;
    if (state.groups.size === 0) return { missing: 'Select at least one group.' };
    const b = { kind, groups: [...state.groups.keys()], transitive: state.transitive };
    if (kind === 'assign' || kind === 'replace') {
      if (state.add.size === 0) {
        return { missing: kind === 'assign' ? 'Select at least one license to assign.' : 'Select at least one replacement license.' };
      }
      b.add_licenses = [...state.add.entries()].map(([sku_id, off]) => ({ sku_id, disabled_plans: [...off] }));
      let location = state.location === 'other' ? state.otherLocation.trim() : state.location;
      if (state.location === 'other' && !/^[A-Z]{2}$/.test(location)) {
        return { missing: 'Enter the location as a two-letter country code (ISO 3166-1 alpha-2), or choose No Change.' };
      }
      b.usage_location = location || null;
    }
    if (kind === 'remove' || (kind === 'replace' && !state.replaceAll)) {
      if (state.remove.size === 0) {
        return { missing: kind === 'remove' ? 'Select at least one license to remove.' : 'Select the licenses to be replaced, or Replace all of the licenses.' };
      }
      b.remove_licenses = [...state.remove];
    }
    if (kind === 'replace') b.replace_all = state.replaceAll;
    if (kind === 'assign') {
      if (state.expires.on) {
        const value = Number(state.expires.value);
        const max = EXPIRY_MAX[state.expires.unit];
        if (!Number.isInteger(value) || value < 1 || value > max) {
          return { missing: `License will expire in: enter a whole number of ${state.expires.unit} from 1 to ${max}.` };
        }
        b.expires_in = { value, unit: state.expires.unit };
      } else {
        b.expires_in = null;
      }
    }
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

  async function confirmRemoval(b) {
    const groups = b.groups.length === 1
      ? `the group ${[...state.groups.values()][0].displayName}`
      : `${b.groups.length} groups`;
    const what = b.replace_all
      ? 'every license they hold directly'
      : (b.remove_licenses || []).map(skuName).join(', ');
    return confirmDialog({
      title: b.kind === 'remove' ? 'Remove licenses?' : 'Replace licenses?',
      body: [
        h('p', {}, `${what} will be removed from the members of ${groups}${b.transitive ? ' and their nested groups' : ''}.`),
        h('p', {}, 'The users\' records associated with these licenses will also be removed from Microsoft 365. Do you want to proceed?'),
      ],
      yes: 'Yes',
      no: 'No',
      danger: true,
    });
  }

  async function launch() {
    replace(error);
    const { body: b, missing } = body();
    if (missing) {
      replace(error, h('div', { class: 'alert alert-error', role: 'alert' }, missing));
      error.scrollIntoView({ behavior: 'smooth', block: 'center' });
      return;
    }
    if ((b.kind === 'remove' || b.kind === 'replace') && !(await confirmRemoval(b))) return;
    // The same request retried keeps its key, so it cannot start a second job.
    const json = JSON.stringify(b);
    if (!state.attempt || state.attempt.json !== json) state.attempt = { json, key: newIdempotencyKey() };
    submit.disabled = true;
    try {
      const job = await api.post('/v1/jobs', b, { idempotencyKey: state.attempt.key });
      state.attempt = null;
      toast(`${KIND_LABELS[job.kind] || 'Job'} job started.`);
      ctx.navigate(`#/jobs/${job.id}`);
    } catch (err) {
      const p = err.problem || { title: 'The job was not started', detail: String(err) };
      if (err.code === 'no_licenses_available') {
        replace(error, problemBox({ ...p, title: 'No licenses available' },
          h('p', {}, `${p.sku_part_number || skuName(p.sku_id)}: ${num(p.available)} of ${num(p.enabled)} available (${num(p.consumed)} in use). `,
            'Free some units or buy more, then try again. No job was started.')));
      } else {
        replace(error, problemBox({ ...p, title: p.title || 'The job was not started' }));
      }
      error.scrollIntoView({ behavior: 'smooth', block: 'center' });
    } finally {
      submit.disabled = false;
    }
  }

  renderAll();
  searchGroups();
  loadSkus();

  return () => {
    state.stopped = true;
    clearTimeout(state.searchTimer);
  };
}
