// Pieces the license pages share: the available figure with its started-seats info button,
// whom a license is checked out to, and the licenses one user or asset holds.

import { api } from './api.js';
import { h, replace, problemBox } from './dom.js';
import { num, day, when } from './format.js';
import { t } from './i18n.js';

/** "Out of stock" or nothing. */
export function stockBadge(license) {
  return license.available > 0 ? null : h('span', { class: 'stock-out' }, t('lic.outOfStock'));
}

/**
 * The available figure. On a term license an info button next to it opens the new (not started)
 * and started reusable seats, the started ones grouped by end date with counts.
 */
export function availableFigure(license) {
  const figure = h('span', { class: 'avail-figure' }, num(license.available));
  if (license.term_days == null) return h('span', { class: 'avail-cell' }, figure, stockBadge(license));
  const pop = h('div', { class: 'info-pop', role: 'dialog', hidden: true, 'aria-label': t('lic.info.title') });
  const button = h('button', {
    type: 'button',
    class: 'info-btn',
    'aria-label': t('lic.info.open'),
    'aria-expanded': 'false',
    title: t('lic.info.open'),
    onclick: async (e) => {
      e.stopPropagation();
      const open = pop.hidden;
      pop.hidden = !open;
      button.setAttribute('aria-expanded', String(open));
      if (open) await fillStarted(pop, license, () => {
        pop.hidden = true;
        button.setAttribute('aria-expanded', 'false');
        button.focus();
      });
    },
  }, 'i');
  return h('span', { class: 'avail-cell' }, figure, button, stockBadge(license), pop);
}

async function fillStarted(pop, license, close) {
  replace(pop, h('p', { class: 'loading' }, t('lic.info.loading')));
  try {
    const started = await api.get(`/v1/licenses/${license.id}/started`);
    const fresh = Math.max(0, license.available - started.total);
    replace(pop,
      h('div', { class: 'info-head' },
        h('strong', {}, t('lic.info.title')),
        h('button', { type: 'button', class: 'chip-x', 'aria-label': t('common.close'), onclick: close }, '×')),
      h('dl', { class: 'info-counts' },
        h('dt', {}, t('lic.info.new')), h('dd', { dataset: { count: 'new' } }, num(fresh)),
        h('dt', {}, t('lic.info.started')), h('dd', { dataset: { count: 'started' } }, num(started.total))),
      started.data.length
        ? h('ul', { class: 'info-groups' }, started.data.map((g) => h('li', { dataset: { endsOn: g.ends_on, count: String(g.count) } },
          h('span', {}, t('lic.info.endsOn', { date: day(g.ends_on) })),
          h('span', { class: 'info-n' }, t('lic.seatsN', { n: g.count })),
          h('span', { class: 'muted small' }, t('lic.info.daysLeft', { n: g.days_left })))))
        : h('p', { class: 'muted small' }, t('lic.info.noneStarted')),
      license.auto_starts_on
        ? h('p', { class: 'muted small' }, t(license.auto_starts_on <= new Date().toISOString().slice(0, 10) ? 'lic.info.autoStarted' : 'lic.info.autoStart', { date: day(license.auto_starts_on) }))
        : null,
    );
  } catch (err) {
    replace(pop, problemBox(err.problem || { title: t('lic.info.failed'), detail: String(err) }));
  }
}

/** Close any open info popover on a click elsewhere or Escape. */
document.addEventListener('click', (e) => {
  for (const pop of document.querySelectorAll('.info-pop:not([hidden])')) {
    if (!pop.contains(e.target)) {
      pop.hidden = true;
      pop.parentElement?.querySelector('.info-btn')?.setAttribute('aria-expanded', 'false');
    }
  }
});
document.addEventListener('keydown', (e) => {
  if (e.key !== 'Escape') return;
  for (const pop of document.querySelectorAll('.info-pop:not([hidden])')) pop.hidden = true;
});

/** The link to everything a user or asset holds. */
export function holderHref(assignee) {
  return `#/assignees/${assignee.type}/${encodeURIComponent(assignee.id)}`;
}

/** Whom an assignment is for: name (or id), a User/Asset tag and, under an asset's name, its tag. */
export function assigneeCell(assignee, { link = true } = {}) {
  const name = assignee.name || assignee.id;
  const label = link
    ? h('a', { href: holderHref(assignee), class: 'assignee-name', title: assignee.id }, name)
    : h('span', { class: 'assignee-name', title: assignee.id }, name);
  return h('div', { class: 'assignee' },
    h('div', { class: 'assignee-line' }, h('span', { class: `kind-tag kind-${assignee.type}` }, t(`lic.type.${assignee.type}`)), label),
    assignee.name && assignee.type === 'asset' ? h('div', { class: 'muted small mono assignee-id' }, assignee.id) : null,
  );
}

/** The licenses a user or asset holds, as a compact list (checkout picker). */
export async function heldSummary(container, assignee) {
  replace(container, h('p', { class: 'loading' }, t('lic.held.loading')));
  try {
    const page = await api.get(`/v1/assignees/${assignee.type}/${encodeURIComponent(assignee.id)}/assignments`, { limit: 50 });
    const title = h('h3', {}, t(assignee.type === 'user' ? 'lic.held.titleUser' : 'lic.held.titleAsset', { name: assignee.name || assignee.id }));
    const all = h('a', { href: holderHref(assignee), class: 'small' }, t(assignee.type === 'user' ? 'lic.held.allUser' : 'lic.held.allAsset'));
    replace(container, title,
      page.data.length === 0
        ? h('p', { class: 'muted' }, t('lic.held.none'))
        : h('ul', { class: 'held-list', id: 'held-list' }, page.data.map((a) => h('li', { dataset: { licenseId: a.license_id } },
          h('a', { href: `#/licenses/${a.license_id}` }, a.license_name),
          h('span', { class: 'muted small' }, ` · ${t('lic.seatsN', { n: a.quantity })} · `, when(a.checked_out_at))))),
      all);
    return page.data;
  } catch (err) {
    replace(container, problemBox(err.problem || { title: t('lic.held.failed'), detail: String(err) }));
    return [];
  }
}

/** A problem from a license change, with the out-of-stock refusal in the seed's words. */
export function licenseProblem(err, fallbackTitle) {
  const p = err.problem || { title: fallbackTitle, detail: String(err) };
  if (err.code === 'out_of_stock') {
    return problemBox({ ...p, heading: t('lic.outOfStockTitle') },
      h('p', {}, t('lic.outOfStockRule')),
      typeof p.available === 'number' ? h('p', {}, t('lic.outOfStockFigures', { requested: p.requested, available: p.available })) : null);
  }
  if (err.code === 'not_reassignable') {
    return problemBox({ ...p, heading: t('lic.notReassignableTitle') });
  }
  return problemBox({ ...p, title: p.title || fallbackTitle });
}
