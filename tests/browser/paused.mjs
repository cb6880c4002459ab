// A paused job's page in the Job Monitor (headless Chromium): its canary paused it, so no clock
// runs — the facts say "Paused" ("Pausad" in Swedish) where a running job says "Running for",
// and the page says the same a few seconds later. Started by tests/monitor.rs with the
// environment of harness.mjs and PAUSED_JOB, the id of a job its canary has paused.

import { URL_, VIEWER, DESKTOP, need, step, check, drive, signIn } from './harness.mjs';

const JOB = need('PAUSED_JOB');

await drive(async ({ newPage, shot }) => {
  const { page } = await newPage(DESKTOP, 'desktop');
  await signIn(page, VIEWER, 'Viewer');

  step('the job page of the paused job: "Paused", no running clock');
  await page.goto(`${URL_}/#/jobs/${JOB}`);
  const runTime = page.locator('#run-time');
  await runTime.waitFor({ timeout: 60_000 });
  const said = (await runTime.innerText()).trim();
  check(said.startsWith('Paused'), `run time: ${said}`);
  const summary = page.locator('dl.facts');
  check(!(await summary.innerText()).includes('Running for'), 'no "Running for" on a paused job');
  await shot(page, 'paused-job');

  step('a few seconds later: still no clock');
  await page.waitForTimeout(2_500);
  check((await runTime.innerText()).trim() === said, `run time now: ${await runTime.innerText()}`);
  check(!(await summary.innerText()).includes('Running for'), 'no "Running for" later either');

  step('in Swedish: "Pausad", no "Har pågått"');
  await page.locator('#lang').selectOption('sv');
  await page.locator('#run-time', { hasText: 'Pausad' }).waitFor({ timeout: 60_000 });
  check(!(await summary.innerText()).includes('Har pågått'), 'no "Har pågått" on a paused job');
  await shot(page, 'paused-job-sv');
  await page.locator('#lang').selectOption('en');
});
