// The job page's activity charts in headless Chromium: for a finished job, "Members done per
// minute" and "429s per minute" are drawn as inline SVG bars whose values are the API's
// per-minute counts (GET /v1/jobs/{id}/activity) and add up to the job's progress; the time
// axis runs from the first minute with activity to the job's finish, not past it; the texts
// follow the language switch. Started by tests/observability.rs with the environment of
// harness.mjs, after an assign job of the tenant has finished.

import {
  URL_, VIEWER, DESKTOP, PHONE, step, check, fitsWidth, drive,
} from './harness.mjs';

async function api(path) {
  const resp = await fetch(`${URL_}${path}`, { headers: { Authorization: `Bearer ${VIEWER}` } });
  check(resp.ok, `GET ${path} answered ${resp.status}`);
  return resp.json();
}

async function signIn(page) {
  await page.goto(`${URL_}/`);
  await page.fill('#token', VIEWER);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#session-role').filter({ hasText: 'Viewer' }).waitFor();
}

/** The bars' values of one chart, from the page. */
async function bars(page, id) {
  return page.locator(`#${id} g.bar`).evaluateAll((gs) => gs.map((g) => Number(g.dataset.value)));
}

await drive(async ({ newPage, shot }) => {
  const jobs = await api('/v1/jobs?status=finished,finished_with_exception');
  check(jobs.data.length === 1, `one finished job, got ${jobs.data.length}`);
  const job = jobs.data[0];
  const minutes = [];
  let cursor = '';
  do {
    const page = await api(`/v1/jobs/${job.id}/activity?limit=500${cursor ? `&cursor=${cursor}` : ''}`);
    minutes.push(...page.data);
    cursor = page.next_cursor;
  } while (cursor);
  const sum = (k) => minutes.reduce((n, m) => n + m[k], 0);
  const done = job.progress.succeeded + job.progress.failed + job.progress.skipped;
  step(`job ${job.id}: ${done} members done, ${sum('throttled')} 429s over ${minutes.length} minute(s)`);
  check(sum('succeeded') + sum('failed') + sum('skipped') === done, 'the API\'s minutes add up to the progress');

  const { page } = await newPage(DESKTOP, 'desktop');
  step('sign in as viewer and open the job page');
  await signIn(page);
  await page.goto(`${URL_}/#/jobs/${job.id}`);
  await page.getByRole('heading', { name: 'Activity' }).waitFor();
  await page.locator('#chart-done g.bar').first().waitFor();

  step('Members done per minute: one bar per minute up to the job\'s finish, adding up to the job\'s progress');
  const doneBars = await bars(page, 'chart-done');
  const first = Date.parse(minutes[0].minute);
  const last = Date.parse(minutes[minutes.length - 1].minute);
  const finished = Date.parse(job.finished_at);
  const finishMinute = Math.floor(finished / 60_000) * 60_000;
  check(finishMinute >= last, `the job finished (${job.finished_at}) after its last minute with activity`);
  check(doneBars.length === (finishMinute - first) / 60_000 + 1, `${doneBars.length} bars for minutes ${minutes[0].minute} … ${job.finished_at}`);

  step('the time axis ends at the job\'s finish');
  for (const chart of ['chart-done', 'chart-throttled']) {
    const axis = page.locator(`figure:has(#${chart}) .chart-axis`);
    const [from, to] = await axis.locator('time').evaluateAll((ts) => ts.map((x) => x.getAttribute('datetime')));
    check(Date.parse(from) === first, `${chart}: the axis starts at the first minute ${minutes[0].minute}: ${from}`);
    check(Date.parse(to) === finished, `${chart}: the axis ends at the job's finish ${job.finished_at}: ${to}`);
    const shown = await axis.locator('time').last().innerText();
    const want = await page.evaluate((iso) => new Date(iso).toLocaleTimeString('en-GB', { hour: '2-digit', minute: '2-digit' }), job.finished_at);
    check(shown === want, `${chart}: the axis' right end reads the finish time ${want}: ${shown}`);
  }
  check(doneBars.reduce((a, b) => a + b, 0) === done, `bars add up to ${done}: ${doneBars}`);
  check(await page.locator('#chart-done rect.fail').count() > 0, 'failed members drawn in their colour');
  check(await page.locator('#chart-done rect.ok').count() > 0, 'succeeded members drawn in their colour');
  const label = await page.locator('#chart-done').getAttribute('aria-label');
  check(label.includes(String(done)), `the chart's label says ${done}: ${label}`);

  step('429s per minute: the 429s the job met');
  const throttledBars = await bars(page, 'chart-throttled');
  check(throttledBars.reduce((a, b) => a + b, 0) === sum('throttled'), `429 bars add up to ${sum('throttled')}: ${throttledBars}`);
  check(sum('throttled') === 0 || await page.locator('#chart-throttled rect.throttled').count() > 0, '429s drawn');
  const box = await page.locator('#chart-done').boundingBox();
  check(box && box.width > 200 && box.height > 60, `the chart is visible: ${JSON.stringify(box)}`);
  await page.locator('#activity').scrollIntoViewIfNeeded();
  await shot(page, 'activity-desktop');

  step('in Swedish');
  await page.locator('#lang').selectOption('sv');
  await page.getByRole('heading', { name: 'Aktivitet' }).waitFor();
  await page.getByText('Medlemmar klara per minut').waitFor();
  await page.getByText('429:or per minut').waitFor();
  await shot(page, 'activity-desktop-sv');
  await page.locator('#lang').selectOption('en');

  step('on a phone the charts fit the width');
  const phone = await newPage(PHONE, 'phone');
  await signIn(phone.page);
  await phone.page.goto(`${URL_}/#/jobs/${job.id}`);
  await phone.page.locator('#chart-throttled').waitFor();
  await fitsWidth(phone.page, 'job page with charts');
  await phone.page.locator('#activity').scrollIntoViewIfNeeded();
  await shot(phone.page, 'activity-phone');
});
