// A job's activity over its life: members done per minute and 429s per minute, drawn as two
// small inline SVG bar charts from GET /v1/jobs/{id}/activity (no chart library).

import { api } from './api.js';
import { h, replace } from './dom.js';
import { num, isActive, isSettling } from './format.js';
import { t, locale } from './i18n.js';

const SVG = 'http://www.w3.org/2000/svg';
const WIDTH = 600;
const HEIGHT = 120;
const PAD_TOP = 8;
/** Pages of 500 minutes read at most (about 33 hours of activity). */
const MAX_PAGES = 4;
/** A bar is at most a tenth of the chart wide, so a short job's bars stay bars. */
const MAX_BAR_WIDTH = WIDTH / 10;

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

/** The start of the minute `ms` (a time in milliseconds) falls in. */
function minuteOf(ms) {
  return Math.floor(ms / 60_000) * 60_000;
}

/**
 * Where the time axis ends: a job that ended, at its `finished_at`; a running one (or a
 * cancelled one still settling), now; any other (paused, previewed), at its last minute with
 * activity. Never before that minute.
 */
function axisEnd(job, series) {
  const last = Date.parse(series[series.length - 1].minute);
  let end = last;
  if (job?.finished_at) end = Date.parse(job.finished_at);
  else if (job && (isActive(job.status) || isSettling(job))) end = Date.now();
  return Math.max(end, last);
}

/**
 * Every minute from the first with activity to the one the axis ends in (`end`, ms), gaps
 * filled with zeros, so the bars stand on a true time axis that stops where the job did.
 */
function fill(series, end) {
  if (series.length === 0) return [];
  const byMinute = new Map(series.map((m) => [Date.parse(m.minute), m]));
  const first = Date.parse(series[0].minute);
  const last = minuteOf(end);
  const out = [];
  for (let at = first; at <= last; at += 60_000) {
    out.push(byMinute.get(at) || { minute: new Date(at).toISOString(), succeeded: 0, failed: 0, skipped: 0, throttled: 0 });
  }
  return out;
}

/**
 * A bar chart: one bar per minute, stacked from `parts` ([key, css class] bottom up), on an
 * axis from the first minute to `end` (ms: the job's end, see axisEnd). A short job's few
 * minutes keep bars no wider than a tenth of the chart, each in the middle of its minute.
 * `label(m)` is each bar's tooltip.
 */
function barChart(id, title, minutes, end, parts, label) {
  const totals = minutes.map((m) => parts.reduce((n, [k]) => n + m[k], 0));
  const max = Math.max(1, ...totals);
  const sum = totals.reduce((a, b) => a + b, 0);
  const step = WIDTH / minutes.length;
  const gap = step > 4 ? 1 : 0;
  const width = Math.max(Math.min(step - gap, MAX_BAR_WIDTH - gap), 0.5);
  const scale = (HEIGHT - PAD_TOP) / max;
  const bars = minutes.map((m, i) => {
    let y = HEIGHT;
    const x = i * step + (step - gap - width) / 2;
    return s('g', { class: 'bar', 'data-minute': m.minute, 'data-value': totals[i] },
      s('title', {}, label(m)),
      parts.map(([k, cls]) => {
        if (!m[k]) return null;
        const height = m[k] * scale;
        y -= height;
        return s('rect', { class: cls, x: Math.max(x, 0).toFixed(2), y: y.toFixed(2), width: width.toFixed(2), height: height.toFixed(2) });
      }));
  });
  const from = minutes[0].minute;
  const to = new Date(end).toISOString();
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
  return h('figure', { class: 'chart-box' },
    h('figcaption', {},
      h('span', { class: 'chart-title' }, title),
      h('span', { class: 'muted small' }, `${t('activity.total', { n: num(sum) })} · ${t('activity.max', { n: num(max) })}`)),
    svg,
    h('div', { class: 'chart-axis muted small' },
      h('time', { class: 'axis-start', datetime: from }, clock(from)),
      h('time', { class: 'axis-end', datetime: to }, clock(to))),
  );
}

/**
 * The job page's Activity card; `load(job)` reads the series again and redraws it up to the
 * job's end (see axisEnd).
 */
export function activityCard(jobId) {
  const body = h('div');
  const card = h('div', { class: 'card activity', id: 'activity' },
    h('h2', {}, t('activity.title')),
    h('p', { class: 'muted small' }, t('activity.intro')),
    body);

  async function load(job) {
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
    if (series.length === 0) {
      replace(body, h('p', { class: 'muted' }, t('activity.none')));
      return;
    }
    const end = axisEnd(job, series);
    const minutes = fill(series, end);
    replace(body, h('div', { class: 'charts' },
      barChart('chart-done', t('activity.done'), minutes, end,
        [['succeeded', 'ok'], ['skipped', 'skip'], ['failed', 'fail']],
        (m) => t('activity.minuteDone', { time: clock(m.minute), succeeded: num(m.succeeded), skipped: num(m.skipped), failed: num(m.failed) })),
      barChart('chart-throttled', t('activity.throttled'), minutes, end,
        [['throttled', 'throttled']],
        (m) => t('activity.minute', { time: clock(m.minute), n: num(m.throttled) }))),
      h('ul', { class: 'chart-legend muted small' },
        [['ok', 'activity.succeeded'], ['skip', 'activity.skipped'], ['fail', 'activity.failed']]
          .map(([cls, key]) => h('li', {}, h('span', { class: `swatch ${cls}` }), t(key)))),
    );
  }

  return { card, load };
}
