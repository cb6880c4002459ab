// A job's activity over its life: members done per minute and 429s per minute, drawn as two
// small inline SVG bar charts from GET /v1/jobs/{id}/activity (no chart library).

import { api } from './api.js';
import { h, replace } from './dom.js';
import { num } from './format.js';
import { t, locale } from './i18n.js';

const SVG = 'http://www.w3.org/2000/svg';
const WIDTH = 600;
const HEIGHT = 120;
const PAD_TOP = 8;
/** Pages of 500 minutes read at most (about 33 hours of activity). */
const MAX_PAGES = 4;
/** The time axis spans at least this many minutes, so a short job's bars stay bars. */
const MIN_SLOTS = 10;

/** An SVG element with attributes and children. */
function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== null && v !== undefined) el.setAttribute(k, String(v));
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function clock(iso) {
  return new Date(iso).toLocaleTimeString(locale(), { hour: '2-digit', minute: '2-digit' });
}

/**
 * Every minute from the first to the last with activity, gaps filled with zeros, so the bars
 * stand on a true time axis.
 */
function fill(series) {
  if (series.length === 0) return [];
  const byMinute = new Map(series.map((m) => [Date.parse(m.minute), m]));
  const first = Date.parse(series[0].minute);
  const last = Date.parse(series[series.length - 1].minute);
  const out = [];
  for (let at = first; at <= last; at += 60_000) {
    out.push(byMinute.get(at) || { minute: new Date(at).toISOString(), succeeded: 0, failed: 0, skipped: 0, throttled: 0 });
  }
  return out;
}

/**
 * A bar chart: one bar per minute, stacked from `parts` ([key, css class] bottom up).
 * `label(m)` is each bar's tooltip.
 */
function barChart(id, title, minutes, parts, label) {
  const totals = minutes.map((m) => parts.reduce((n, [k]) => n + m[k], 0));
  const max = Math.max(1, ...totals);
  const sum = totals.reduce((a, b) => a + b, 0);
  const slots = Math.max(minutes.length, MIN_SLOTS);
  const step = WIDTH / slots;
  const gap = step > 4 ? 1 : 0;
  const scale = (HEIGHT - PAD_TOP) / max;
  const bars = minutes.map((m, i) => {
    let y = HEIGHT;
    const x = i * step;
    return s('g', { class: 'bar', 'data-minute': m.minute, 'data-value': totals[i] },
      s('title', {}, label(m)),
      parts.map(([k, cls]) => {
        if (!m[k]) return null;
        const height = m[k] * scale;
        y -= height;
        return s('rect', { class: cls, x: x.toFixed(2), y: y.toFixed(2), width: Math.max(step - gap, 0.5).toFixed(2), height: height.toFixed(2) });
      }));
  });
  const svg = s('svg', {
    class: 'chart',
    id,
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    preserveAspectRatio: 'none',
    role: 'img',
    'aria-label': `${title}: ${t('activity.total', { n: num(sum) })}, ${t('activity.max', { n: num(max) })}`,
  },
  s('line', { class: 'axis', x1: 0, y1: HEIGHT - 0.5, x2: WIDTH, y2: HEIGHT - 0.5 }),
  bars);
  const first = minutes[0];
  // The axis' right end: the last minute, or the minute the padded axis ends at.
  const end = first ? new Date(Date.parse(first.minute) + (slots - 1) * 60_000).toISOString() : null;
  return h('figure', { class: 'chart-box' },
    h('figcaption', {},
      h('span', { class: 'chart-title' }, title),
      h('span', { class: 'muted small' }, `${t('activity.total', { n: num(sum) })} · ${t('activity.max', { n: num(max) })}`)),
    svg,
    h('div', { class: 'chart-axis muted small' },
      h('span', {}, first ? clock(first.minute) : ''),
      h('span', {}, end ? clock(end) : '')),
  );
}

/** The job page's Activity card; `load()` reads the series again and redraws. */
export function activityCard(jobId) {
  const body = h('div');
  const card = h('div', { class: 'card activity', id: 'activity' },
    h('h2', {}, t('activity.title')),
    h('p', { class: 'muted small' }, t('activity.intro')),
    body);

  async function load() {
    let series = [];
    try {
      let cursor = '';
      for (let page = 0; page < MAX_PAGES; page += 1) {
        const res = await api.get(`/v1/jobs/${jobId}/activity`, { limit: 500, cursor });
        series = series.concat(res.data);
        if (!res.next_cursor) break;
        cursor = res.next_cursor;
      }
    } catch (err) {
      replace(body, h('p', { class: 'alert alert-warn', role: 'status' }, t('activity.loadFailed', { message: err.message })));
      return;
    }
    const minutes = fill(series);
    if (minutes.length === 0) {
      replace(body, h('p', { class: 'muted' }, t('activity.none')));
      return;
    }
    replace(body, h('div', { class: 'charts' },
      barChart('chart-done', t('activity.done'), minutes,
        [['succeeded', 'ok'], ['skipped', 'skip'], ['failed', 'fail']],
        (m) => t('activity.minuteDone', { time: clock(m.minute), succeeded: num(m.succeeded), skipped: num(m.skipped), failed: num(m.failed) })),
      barChart('chart-throttled', t('activity.throttled'), minutes,
        [['throttled', 'throttled']],
        (m) => t('activity.minute', { time: clock(m.minute), n: num(m.throttled) }))),
      h('ul', { class: 'chart-legend muted small' },
        [['ok', 'activity.succeeded'], ['skip', 'activity.skipped'], ['fail', 'activity.failed']]
          .map(([cls, key]) => h('li', {}, h('span', { class: `swatch ${cls}` }), t(key)))),
    );
  }

  return { card, load };
}
