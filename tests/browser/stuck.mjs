// A stuck job in the Job Monitor (headless Chromium): while a running job has made no progress
// for jobs.stuck_after_secs (1 s here, against a directory answering in seconds), its row in the
// jobs table and its page carry the "Stuck" badge ("Fastnat" in Swedish) with the time of its
// last progress. Started by tests/observability.rs with the environment of harness.mjs, while
// such a job runs.

import { URL_, VIEWER, DESKTOP, step, check, drive, signIn } from './harness.mjs';

async function api(path) {
  const resp = await fetch(`${URL_}${path}`, { headers: { Authorization: `Bearer ${VIEWER}` } });
  check(resp.ok, `GET ${path} answered ${resp.status}`);
  return resp.json();
}

await drive(async ({ newPage, shot }) => {
  step('the API flags the running job stuck');
  let job = null;
  for (let i = 0; i < 150 && !job; i += 1) {
    const running = await api('/v1/jobs?status=running');
    job = running.data.find((j) => j.stuck);
    if (!job) await new Promise((r) => setTimeout(r, 200));
  }
  check(job, 'a running job flagged stuck within 30 s');
  step(`job ${job.id} stuck since ${job.stuck_since} (last progress ${job.last_progress_at})`);

  const { page } = await newPage(DESKTOP, 'desktop');
  await signIn(page, VIEWER, 'Viewer');

  step('the jobs table: "Stuck" beside In Progress');
  const badge = page.locator(`#jobs-table tr[data-job-id="${job.id}"] [data-stuck="true"]`);
  await badge.waitFor({ timeout: 60_000 });
  check((await badge.innerText()).trim() === 'Stuck', `badge text: ${await badge.innerText()}`);
  const title = await badge.getAttribute('title');
  check(/^No progress since /.test(title), `badge title: ${title}`);
  await shot(page, 'stuck-list');

  step('the job page: the badge in its title, last progress and requeues in its facts');
  await page.goto(`${URL_}/#/jobs/${job.id}`);
  await page.locator('h1 [data-stuck="true"]').waitFor({ timeout: 60_000 });
  await page.locator('#job-requeues').waitFor();
  await page.getByText('Last progress').waitFor();
  await shot(page, 'stuck-job');

  step('in Swedish: "Fastnat"');
  await page.locator('#lang').selectOption('sv');
  await page.locator('h1 [data-stuck="true"]', { hasText: 'Fastnat' }).waitFor({ timeout: 60_000 });
  await page.getByText('Köat igen av avstämningen').waitFor();
  await shot(page, 'stuck-job-sv');
  await page.locator('#lang').selectOption('en');
});
