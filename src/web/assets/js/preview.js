// Previews: what a job would do before it runs. The summary (seat math per SKU, usage
// locations, licenses held through a group, members already done, predicted failures, the
// licenses the members hold) as the New job confirmation and the job page both show it, the
// "no more available licenses" prompt naming the shortfall per SKU, and each member's
// predicted outcome.

import { h, replace, problemBox } from './dom.js';
import { num, usageLocation, progressBar, codeExplanation } from './format.js';
import { t } from './i18n.js';

/** A member's predicted outcome, as a label. */
export function predictionLabel(prediction) {
  if (!prediction) return null;
  return t(`preview.outcome.${prediction.outcome}`);
}

/** A member's prediction as a table cell's content: the outcome, its code and why. */
export function predictionCell(prediction) {
  if (!prediction) return h('span', { class: 'muted' }, '—');
  return [
    h('span', { class: `prediction prediction-${prediction.outcome}`, dataset: { outcome: prediction.outcome } },
      predictionLabel(prediction)),
    prediction.code ? [' ', h('code', {}, prediction.code)] : null,
    codeExplanation(prediction.code) ? h('div', { class: 'error-explained small' }, codeExplanation(prediction.code)) : null,
    prediction.detail ? h('div', { class: 'muted small' }, prediction.detail) : null,
  ];
}

/**
 * The SKUs the job adds that run short: `[{ sku, short, members }]` (units short, members who
 * would fail for want of them), in the request's order.
 */
export function shortages(summary, skuName = (id) => id) {
  return (summary?.skus || [])
    .filter((s) => s.shortfall > 0)
    .map((s) => ({ sku: s.sku_part_number || skuName(s.sku_id), short: s.shortfall, members: s.short_members || 0 }));
}

/** Members predicted to fail with `code`. */
function failing(summary, code) {
  return (summary.failures || []).find((f) => f.code === code)?.count || 0;
}

/**
 * The seed's "no more available licenses" prompt, naming the shortfall per SKU and how many
 * members would fail for it; null when every SKU has enough free units.
 */
export function shortagePrompt(summary, skuName) {
  const short = shortages(summary, skuName);
  if (short.length === 0) return null;
  const failed = failing(summary, 'count_violation');
  const lines = short.length === 1
    ? [h('p', {}, t('preview.shortOne', { short: num(short[0].short), sku: short[0].sku, n: failed === 1 ? 1 : num(failed) }))]
    : [
      h('ul', {}, short.map((s) => h('li', { dataset: { sku: s.sku } },
        t('preview.shortSkuMembers', { short: num(s.short), sku: s.sku, n: s.members === 1 ? 1 : num(s.members) })))),
      h('p', {}, t('preview.shortMany', { n: failed === 1 ? 1 : num(failed) })),
    ];
  return h('div', { class: 'alert alert-warn shortage', role: 'alert', id: 'shortage' },
    h('strong', {}, t('preview.noMoreLicenses')),
    lines,
    h('p', { class: 'muted small' }, t('preview.shortHint')));
}

/** One count of the summary: label, number, and the key tests and styles hang on. */
function fact(key, label, value, extra = null) {
  return [h('dt', {}, label), h('dd', { dataset: { fact: key } }, value, extra ? [' ', extra] : null)];
}

/**
 * The preview summary as one block (the confirmation and the job page show the same).
 * `skuName(id)` names a SKU the summary does not name; `request` is the job's request.
 */
export function previewSummary(summary, { skuName = (id) => id, request = {} } = {}) {
  const s = summary;
  const loc = s.usage_location || { missing: 0, fixed_by_request: false };
  const locText = loc.missing === 0
    ? null
    : h('span', { class: 'muted small' }, loc.fixed_by_request
      ? t('preview.locationFixed', { location: usageLocation(request.usage_location) })
      : t('preview.locationNotFixed'));
  const n = (v) => num(v || 0);
  const facts = h('dl', { class: 'facts preview-facts' },
    fact('members', t('preview.members'), n(s.members)),
    fact('would_succeed', t('preview.wouldSucceed'), n(s.would_succeed)),
    fact('would_skip', t('preview.wouldSkip'), n(s.would_skip)),
    fact('would_fail', t('preview.wouldFail'), h('span', { class: s.would_fail > 0 ? 'preview-bad' : null }, n(s.would_fail))),
    fact('already_done', t('preview.alreadyDone'), n(s.already_done)),
    fact('no_location', t('preview.noLocation'), n(loc.missing), locText),
    fact('inherited_only', t('preview.inheritedOnly'), n(s.inherited_only)),
  );
  const skus = (s.skus || []).length === 0 ? null : h('div', { class: 'table-wrap' },
    h('table', { class: 'preview-skus', id: 'preview-skus' },
      h('caption', {}, t('preview.seats')),
      h('thead', {}, h('tr', {},
        h('th', { scope: 'col' }, t('preview.col.sku')),
        ['needed', 'free', 'shortfall'].map((k) => h('th', { scope: 'col', class: 'num' }, t(`preview.col.${k}`))))),
      h('tbody', {}, s.skus.map((k) => h('tr', { dataset: { sku: k.sku_part_number || k.sku_id }, class: k.shortfall > 0 ? 'short' : null },
        h('td', { 'data-label': t('preview.col.sku') }, k.sku_part_number || skuName(k.sku_id)),
        h('td', { 'data-label': t('preview.col.needed'), class: 'num' }, num(k.needed)),
        h('td', { 'data-label': t('preview.col.free'), class: 'num' }, num(k.free)),
        h('td', { 'data-label': t('preview.col.shortfall'), class: 'num' }, num(k.shortfall)))))));
  const failures = (s.failures || []).length === 0 ? null : h('div', { class: 'preview-failures' },
    h('h3', {}, t('preview.failuresByCode')),
    h('ul', { class: 'error-groups', id: 'preview-failures' }, s.failures.map((f) => h('li', { dataset: { code: f.code } },
      h('code', {}, f.code), ' ', h('span', { class: 'error-count' }, t('job.nMembers', { n: f.count === 1 ? 1 : num(f.count) }))))));
  const held = (s.held || []).length === 0 ? null : h('details', { class: 'preview-held' },
    h('summary', {}, t('preview.heldTitle', { n: s.held.length })),
    h('ul', {}, s.held.map((l) => h('li', { dataset: { sku: l.sku_part_number || l.sku_id } },
      h('strong', {}, l.sku_part_number || skuName(l.sku_id)), ' ', heldCounts(l)))));
  return h('div', { class: 'preview-summary', id: 'preview-summary' }, facts, skus, failures, held);
}

/** "120 directly · 30 through a group" for one held SKU. */
export function heldCounts(l) {
  const parts = [];
  if (l.direct > 0) parts.push(t('preview.heldDirect', { n: l.direct === 1 ? 1 : num(l.direct) }));
  if (l.inherited > 0) parts.push(t('preview.heldInherited', { n: l.inherited === 1 ? 1 : num(l.inherited) }));
  return h('span', { class: 'muted small held-counts' }, parts.join(' · '));
}

/**
 * The New job confirmation. It opens at once; `computing(job)` shows the preview being worked
 * out (what was read so far) with Cancel, `waitOrCancel(ms)` resolves true when Cancel was
 * pressed meanwhile; `ask({...})` shows the summary and resolves 'launch' or 'cancel';
 * `failed(problem)` shows why it went no further; `close()` removes it.
 */
export function previewDialog(title) {
  const body = h('div', { class: 'dialog-body', 'aria-live': 'polite' });
  const actions = h('div', { class: 'dialog-actions' });
  const dialog = h('dialog', { class: 'dialog preview-dialog', id: 'preview-dialog', 'aria-labelledby': 'dialog-title' },
    h('h2', { id: 'dialog-title' }, title), body, actions);
  let cancelled = false;
  let wake = null;
  let answer = null;
  const pressCancel = () => {
    if (answer) {
      const resolve = answer;
      answer = null;
      resolve('cancel');
      return;
    }
    cancelled = true;
    if (wake) wake();
  };
  dialog.addEventListener('cancel', (e) => {
    e.preventDefault();
    pressCancel();
  });
  const cancelButton = (label = t('preview.cancel')) => h('button', { type: 'button', class: 'btn', id: 'preview-cancel', onclick: pressCancel }, label);
  document.body.appendChild(dialog);
  dialog.showModal();

  return {
    element: dialog,
    get cancelled() { return cancelled; },
    computing(job) {
      const p = job?.progress;
      replace(body,
        h('p', { class: 'loading', id: 'preview-computing' }, p && p.total > 0
          ? t('preview.computingN', { n: p.total === 1 ? 1 : num(p.total) })
          : t('preview.computing')),
        progressBar(p, { expanding: true }),
        h('p', { class: 'muted small' }, t('preview.computingHelp')));
      replace(actions, cancelButton());
    },
    waitOrCancel(ms) {
      if (cancelled) return Promise.resolve(true);
      return new Promise((resolve) => {
        const timer = setTimeout(() => { wake = null; resolve(cancelled); }, ms);
        wake = () => { clearTimeout(timer); wake = null; resolve(true); };
      });
    },
    ask({ content, launchLabel, danger }) {
      replace(body, content);
      return new Promise((resolve) => {
        answer = resolve;
        replace(actions,
          cancelButton(),
          h('button', {
            type: 'button',
            class: danger ? 'btn btn-danger' : 'btn btn-primary',
            id: 'preview-launch',
            dataset: { answer: 'yes' },
            onclick: (e) => {
              e.currentTarget.disabled = true;
              if (answer) {
                answer = null;
                resolve('launch');
              }
            },
          }, launchLabel));
      });
    },
    failed(problem, extra = null) {
      replace(body, problemBox(problem), extra);
      replace(actions, h('button', { type: 'button', class: 'btn', id: 'preview-close', onclick: () => this.close() }, t('common.close')));
    },
    close() {
      if (dialog.open) dialog.close();
      dialog.remove();
    },
  };
}
