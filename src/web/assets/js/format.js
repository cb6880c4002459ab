// Words and shapes shared by the views: status labels, times, progress bars.

import { h } from './dom.js';
import { t, labels, locale, has, english } from './i18n.js';

export const STATUS_LABELS = labels({
  queued: 'status.queued',
  running: 'status.running',
  finished: 'status.finished',
  finished_with_exception: 'status.finished_with_exception',
  failed: 'status.failed',
  cancelled: 'status.cancelled',
  previewed: 'status.previewed',
  paused: 'status.paused',
});

export const STATUSES = Object.keys(STATUS_LABELS);

export const KIND_LABELS = labels({
  assign: 'kind.assign',
  remove: 'kind.remove',
  replace: 'kind.replace',
  export: 'kind.export',
});

export const KINDS = Object.keys(KIND_LABELS);

export const ITEM_STATUS_LABELS = labels({
  pending: 'item.pending',
  succeeded: 'item.succeeded',
  failed: 'item.failed',
  skipped: 'item.skipped',
});

/**
 * What an item's or a job's error code means, in the language of the moment: the catalogue's
 * `code.<code>` (its English words are those of core/src/jobs/codes.rs, checked by a test in
 * src/web/mod.rs); for a code the catalogue does not know, `fallback` (e.g. the server's own
 * explanation).
 */
export function codeExplanation(code, fallback = null) {
  return code && has(`code.${code}`) ? t(`code.${code}`) : fallback;
}

/**
 * An item's error: its code, what the code means in the language of the moment, and the
 * server's detail — free text (the directory's words, SKU ids) shown as written, left out where
 * it is only the code's explanation in English (a cancelled member's).
 */
export function itemError(error) {
  const explained = codeExplanation(error.code);
  const detail = error.detail && error.detail !== english(`code.${error.code}`) ? error.detail : null;
  return [
    h('code', { class: 'error-code-name' }, error.code),
    explained ? h('div', { class: 'error-explained small' }, explained) : null,
    detail ? h('div', { class: 'error-detail muted small' }, detail) : null,
  ];
}

/**
 * An item's note in the language of the moment: one made of licensor's fixed notes alone comes
 * with their codes (`note_codes`, see core/src/jobs/notes.rs) and is shown from the catalogue
 * (`note.<code>`, joined as the server joins them); one with free text is shown as written.
 */
export function noteText(note, codes) {
  if (codes && codes.length && codes.every((c) => has(`note.${c}`))) return codes.map((c) => t(`note.${c}`)).join('; ');
  return note;
}

/** Statuses a job can still leave on its own. */
export function isActive(status) {
  return status === 'queued' || status === 'running';
}

/**
 * A cancelled job whose members licensor may have written are still being read before they
 * are called done or cancelled: its counts move and `finished_at` is still empty.
 */
export function isSettling(job) {
  return job.status === 'cancelled' && !job.finished_at;
}

/** Statuses an operator can rerun from the monitor. */
export function isRerunnable(status) {
  return status === 'failed' || status === 'finished_with_exception' || status === 'cancelled';
}

export function statusBadge(status) {
  return h('span', { class: `status status-${status}`, dataset: { status } },
    STATUS_LABELS[status] || status);
}

/** A member's item status (Succeeded, Failed, …); `title` as its tooltip (e.g. the error). */
export function itemStatusBadge(status, title = null) {
  return h('span', { class: `item-status item-${status}`, title }, ITEM_STATUS_LABELS[status] || status);
}

/** "Stuck" beside a running job's status when no worker has moved it for the stuck setting. */
export function stuckBadge(job) {
  if (!job.stuck) return null;
  return h('span', {
    class: 'status status-stuck',
    dataset: { stuck: 'true' },
    title: t('status.stuckTitle', { time: fullTime(job.last_progress_at) }),
  }, t('status.stuck'));
}

// Formats follow the page's language; made again when it changes.
const formats = { locale: null };
function fmt() {
  const l = locale();
  if (formats.locale !== l) {
    formats.locale = l;
    formats.dateTime = new Intl.DateTimeFormat(l, {
      year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit',
    });
    formats.timeOnly = new Intl.DateTimeFormat(l, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
    formats.date = new Intl.DateTimeFormat(l, { year: 'numeric', month: 'short', day: 'numeric', timeZone: 'UTC' });
    formats.number = new Intl.NumberFormat(l);
  }
  return formats;
}

/** A calendar date (`YYYY-MM-DD`) in the page's language, e.g. "3 Mar 2027". */
export function day(isoDate) {
  if (!isoDate) return '—';
  const d = new Date(`${isoDate}T00:00:00Z`);
  return Number.isNaN(d.getTime()) ? isoDate : fmt().date.format(d);
}

/** A time as a `<time>` element: today's as a clock time, others with their date. */
export function when(iso) {
  if (!iso) return h('span', { class: 'muted' }, '—');
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return h('span', {}, iso);
  const today = new Date();
  const sameDay = d.toDateString() === today.toDateString();
  const { dateTime, timeOnly } = fmt();
  return h('time', { datetime: iso, title: dateTime.format(d) }, sameDay ? timeOnly.format(d) : dateTime.format(d));
}

export function fullTime(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : fmt().dateTime.format(d);
}

/** "1 m 12 s" between two instants (to now when the end is missing). */
export function duration(startIso, endIso) {
  if (!startIso) return null;
  const start = new Date(startIso).getTime();
  const end = endIso ? new Date(endIso).getTime() : Date.now();
  let s = Math.max(0, Math.round((end - start) / 1000));
  const hours = Math.floor(s / 3600);
  s -= hours * 3600;
  const minutes = Math.floor(s / 60);
  s -= minutes * 60;
  if (hours) return t('duration.h', { h: hours, m: minutes });
  if (minutes) return t('duration.m', { m: minutes, s });
  return t('duration.s', { s });
}

export function num(n) {
  return typeof n === 'number' ? fmt().number.format(n) : '—';
}

/**
 * A job's progress: a stacked bar (succeeded, skipped, failed) and its counts. While the job
 * still reads its groups (`expanding`), the total is only what was read so far: the counts say
 * so instead of "N / N", so the job never looks complete.
 */
export function progressBar(progress, { compact = false, expanding = false } = {}) {
  const p = progress || { total: 0, succeeded: 0, failed: 0, skipped: 0, pending: 0 };
  const total = p.total || 0;
  const done = p.succeeded + p.failed + p.skipped;
  const bar = h('div', {
    class: 'progress',
    role: 'progressbar',
    'aria-valuemin': '0',
    'aria-valuemax': String(total),
    'aria-valuenow': String(done),
    'aria-label': t('progress.aria', { done, total }),
  });
  for (const [key, value] of [['succeeded', p.succeeded], ['skipped', p.skipped], ['failed', p.failed]]) {
    if (!value || !total) continue;
    const seg = h('span', { class: `progress-seg seg-${key}` });
    seg.style.width = `${(100 * value) / total}%`;
    bar.appendChild(seg);
  }
  const counts = h('div', { class: 'progress-counts' },
    h('span', { class: 'count count-succeeded', title: t('item.succeeded') }, h('i', { 'aria-hidden': 'true' }), t('progress.succeeded', { n: num(p.succeeded) })),
    h('span', { class: 'count count-failed', title: t('item.failed') }, h('i', { 'aria-hidden': 'true' }), t('progress.failed', { n: num(p.failed) })),
    h('span', { class: 'count count-skipped', title: t('item.skipped') }, h('i', { 'aria-hidden': 'true' }), t('progress.skipped', { n: num(p.skipped) })),
    h('span', { class: 'count count-total' },
      expanding ? t('progress.reading', { n: num(total) })
        : total ? `${num(done)} / ${num(total)}` : t('progress.none')),
  );
  return h('div', { class: compact ? 'progress-wrap compact' : 'progress-wrap' }, bar, counts);
}

// Group names seen in this tab (picked in the launch form or read by a job), for jobs that have
// not read their groups from the directory yet.
const groupNameCache = new Map();

/** Remember `id → name` pairs from the directory's groups or from jobs (`display_name`). */
export function rememberGroups(groups) {
  for (const g of groups || []) {
    const name = g.display_name;
    if (g.id && name) groupNameCache.set(g.id, name);
  }
}

function jobGroups(job) {
  const groups = job.groups || (job.request?.groups || []).map((id) => ({ id, display_name: null }));
  rememberGroups(groups);
  return groups.map((g) => ({ id: g.id, name: g.display_name || groupNameCache.get(g.id) || null }));
}

/** Group names of a job ("Sales, Engineering +2"), short ids where the name is not known. */
export function groupNames(job, max = 2) {
  const names = jobGroups(job).map((g) => g.name || shortId(g.id));
  if (names.length <= max) return names.join(', ');
  return `${names.slice(0, max).join(', ')} +${names.length - max}`;
}

export function allGroupNames(job) {
  return jobGroups(job).map((g) => g.name || g.id).join(', ');
}

export function groupName(id) {
  return groupNameCache.get(id) || shortId(id);
}

export function shortId(id) {
  return id ? String(id).slice(0, 8) : '—';
}

/**
 * A job's short id: its first 13 characters. Job ids are time-ordered (UUIDv7), so 8 characters
 * are the same for every job made within about a minute; these 13 are its creation millisecond,
 * and they work as `id_prefix` in a search.
 */
export function jobShortId(id) {
  return id ? String(id).slice(0, 13) : '—';
}

/** Who started a job: the token's name, else a short token id. */
export function createdBy(job) {
  if (job.created_by_name) return job.created_by_name;
  if (job.created_by) return t('createdBy.token', { id: shortId(job.created_by) });
  return t('createdBy.system');
}

/** "License will expire in 2 weeks" wording for a request's `expires_in`. */
export function expiry(expiresIn) {
  if (!expiresIn) return t('expiry.never');
  const { value, unit } = expiresIn;
  return t('expiry.in', { value, unit: t(`unit.${unit}`, { n: value }) });
}

export function usageLocation(code) {
  if (!code) return t('location.noChange');
  const name = countryName(code);
  return name === code ? code : `${name} (${code})`;
}

/** Common countries for the usage location picker; any other ISO 3166-1 alpha-2 code can be typed. */
const COUNTRY_CODES = [
  'AR', 'AU', 'AT', 'BE', 'BR', 'CA', 'CL', 'CN', 'CO', 'CZ', 'DK', 'EE', 'FI', 'FR', 'DE', 'GR',
  'HK', 'HU', 'IS', 'IN', 'ID', 'IE', 'IL', 'IT', 'JP', 'KR', 'LV', 'LT', 'LU', 'MY', 'MX', 'NL',
  'NZ', 'NO', 'PH', 'PL', 'PT', 'RO', 'SA', 'SG', 'SK', 'SI', 'ZA', 'ES', 'SE', 'CH', 'TW', 'TH',
  'TR', 'UA', 'AE', 'GB', 'US', 'VN',
];

// The browser's names of countries, one list per locale.
const regionNames = new Map();

/**
 * A country's name in the language of the moment ("Sverige" for SE in Swedish), from the
 * browser's own list of region names; the code itself where the browser has no name for it.
 */
export function countryName(code) {
  const loc = locale();
  try {
    if (!regionNames.has(loc)) regionNames.set(loc, new Intl.DisplayNames([loc], { type: 'region', fallback: 'none' }));
    return regionNames.get(loc).of(code) || code;
  } catch {
    // no Intl.DisplayNames in this browser, or not a region code
    return code;
  }
}

/** The usage location picker's countries as `[code, name]`, named and sorted in the language of the moment. */
export function countries() {
  const loc = locale();
  return COUNTRY_CODES.map((code) => [code, countryName(code)])
    .sort(([, a], [, b]) => a.localeCompare(b, loc));
}
