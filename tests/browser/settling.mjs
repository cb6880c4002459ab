// A cancelled job whose members licensor may have written, read before they are called anything
// (headless Chromium): while the directory cannot answer, its page says it has not finished —
// how many members are still being read, in English and Swedish — and keeps refreshing; once
// the directory answers, the page shows when it finished, without a reload. Started by
// tests/jobs.rs while such a job waits, with JOB_ID and EMULATOR_URL set besides harness.mjs's
// environment.

import { URL_, VIEWER, DESKTOP, need, step, check, drive, signIn } from './harness.mjs';

const JOB_ID = need('JOB_ID');
const EMULATOR_URL = need('EMULATOR_URL').replace(/\/$/, '');

await drive(async ({ newPage, shot }) => {
  const { page } = await newPage(DESKTOP, 'desktop');
  await signIn(page, VIEWER, 'Viewer');

  step('the cancelled job: not finished while members are still being read');
  await page.goto(`${URL_}/#/jobs/${JOB_ID}`);
  await page.locator('h1 [data-status="cancelled"]').waitFor();
  const settling = page.locator('#settling');
  await settling.waitFor();
  const text = (await settling.innerText()).trim();
  check(/^Not yet: (\d+ members are|1 member is) being read before (they are|it is) called done or cancelled$/.test(text),
    `settling text: ${text}`);
  await shot(page, 'cancel-settling');

  step('in Swedish');
  await page.locator('#lang').selectOption('sv');
  await page.locator('#settling', { hasText: 'Inte än:' }).waitFor();
  await shot(page, 'cancel-settling-sv');
  await page.locator('#lang').selectOption('en');
  await page.locator('#settling', { hasText: 'Not yet:' }).waitFor();

  step('the directory answers again: the page shows when the job finished, by itself');
  const resp = await fetch(`${EMULATOR_URL}/_emulator/faults`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: '{}',
  });
  check(resp.ok, `clearing the directory's faults answered ${resp.status}`);
  // The Finished row shows a time (not "Not yet", not "—") once the page has refreshed.
  await page.waitForFunction(() => {
    const dt = [...document.querySelectorAll('dt')].find((d) => d.textContent.trim() === 'Finished');
    const shown = dt?.nextElementSibling?.textContent.trim() || '';
    return /\d/.test(shown) && !shown.startsWith('Not yet');
  }, null, { timeout: 60_000 });
  check(await settling.count() === 0, 'no "Not yet" once the job has finished');
  const job = await (await fetch(`${URL_}/v1/jobs/${JOB_ID}`, { headers: { Authorization: `Bearer ${VIEWER}` } })).json();
  check(job.finished_at && job.progress.pending === 0, `the job ended: ${JSON.stringify(job.progress)} ${job.finished_at}`);
  await shot(page, 'cancel-settled');
});
