// The Job Monitor's search box and "Select all N matching", driven through headless Chromium as
// an operator. Started by tests/operator_web.rs after it ran assign → replace → remove on the
// group Team and made 30 failed jobs. Environment: see harness.mjs.
// Exits 0 when every step passed; otherwise prints the failed step and exits 1.

import {
  URL_, ADMIN, OPERATOR, DESKTOP, PHONE, step, check, fitsWidth, drive,
} from './harness.mjs';

async function apiGet(path) {
  const resp = await fetch(`${URL_}${path}`, { headers: { Authorization: `Bearer ${ADMIN}` } });
  check(resp.ok, `GET ${path} answered ${resp.status}`);
  return resp.json();
}

async function signIn(page, token, role) {
  await page.goto(`${URL_}/`);
  await page.getByRole('heading', { name: 'Sign in to the Job Monitor' }).waitFor();
  await page.fill('#token', token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#session-role').filter({ hasText: role }).waitFor();
  await page.getByRole('heading', { name: 'Job Monitor', exact: true }).waitFor();
}

async function search(page, text) {
  await page.fill('#monitor-search', text);
  await page.press('#monitor-search', 'Enter');
}

await drive(async ({ newPage, shot }) => {
  // A member the assign wrote for, found through the API as a helpdesk would be told it.
  const assigns = await apiGet('/v1/jobs?kind=assign&status=finished');
  check(assigns.data.length === 1, `one finished assign job: ${assigns.data.length}`);
  const items = await apiGet(`/v1/jobs/${assigns.data[0].id}/items?status=succeeded&limit=1`);
  const upn = items.data[0].user_principal_name;
  check(Boolean(upn), 'the member has a user principal name');

  const { page } = await newPage(DESKTOP, 'desktop');
  step('sign in as operator');
  await signIn(page, OPERATOR, 'Operator');

  step(`search box: ${upn.toUpperCase()} opens the member's history`);
  await search(page, upn.toUpperCase());
  await page.waitForURL(/#\/members\//);
  await page.getByRole('heading', { name: /History of/ }).waitFor();
  const rows = page.locator('#history-table tbody tr');
  await rows.first().waitFor();
  const kinds = await rows.evaluateAll((trs) => trs.map((tr) => tr.dataset.kind));
  check(JSON.stringify(kinds) === JSON.stringify(['remove', 'replace', 'assign']),
    `three jobs newest first: ${kinds}`);
  const outcomes = await rows.evaluateAll((trs) => trs.map((tr) => tr.dataset.status));
  check(outcomes.every((s) => s === 'succeeded'), `each succeeded: ${outcomes}`);
  const first = await rows.first().innerText();
  check(/Remove Licenses/.test(first) && /Succeeded/.test(first), `the remove row reads: ${first}`);
  check(/ENTERPRISEPACK/.test(first), `the remove row shows the license before: ${first}`);
  await shot(page, 'history-1280', { fullPage: true });

  step('a job link in the history opens the job');
  const removeId = await rows.first().getAttribute('data-job-id');
  await rows.first().locator('a.job-link').click();
  await page.waitForURL(new RegExp(`#/jobs/${removeId}$`));

  step('search box: a whole job id opens the job, a group name lists its jobs');
  await page.goto(`${URL_}/#/`);
  await page.locator('#monitor-search').waitFor();
  await search(page, assigns.data[0].id);
  await page.waitForURL(new RegExp(`#/jobs/${assigns.data[0].id}$`));
  await page.goto(`${URL_}/#/`);
  await page.locator('#monitor-search').waitFor();
  await search(page, 'Team');
  await page.waitForURL(/#\/\?group=/);
  await page.locator('.filter-chip', { hasText: 'Group: Team' }).waitFor();
  await page.waitForFunction(() => document.querySelectorAll('#jobs-table tbody tr').length === 3);

  step('status Failed: "Select all 30 matching", then Start asks "Rerun 30 jobs?"');
  await page.goto(`${URL_}/#/?status=failed`);
  const selectMatching = page.locator('#select-all-matching');
  await selectMatching.waitFor();
  check((await selectMatching.innerText()) === 'Select all 30 matching', `offer: ${await selectMatching.innerText()}`);
  await selectMatching.click();
  await page.locator('#select-matching', { hasText: 'All 30 matching jobs are selected.' }).waitFor();
  check((await page.locator('#start').innerText()) === 'Start (30)', 'Start counts all matching');
  await page.locator('#start').click();
  const dialog = page.locator('dialog.dialog');
  await dialog.waitFor();
  check((await dialog.locator('h2').innerText()) === 'Rerun 30 jobs?', `dialog: ${await dialog.locator('h2').innerText()}`);
  await shot(page, 'rerun-confirm-1280');
  await dialog.getByRole('button', { name: 'Keep as is' }).click();
  await dialog.waitFor({ state: 'detached' });

  step('in Swedish the selection stays and the confirmation says "Kör om 30 jobb?"');
  await page.selectOption('#lang', 'sv');
  await page.locator('#select-matching', { hasText: 'Alla 30 matchande jobb är valda.' }).waitFor();
  await page.locator('#start', { hasText: 'Starta (30)' }).click();
  await dialog.waitFor();
  check((await dialog.locator('h2').innerText()) === 'Kör om 30 jobb?', `dialog: ${await dialog.locator('h2').innerText()}`);
  await shot(page, 'rerun-confirm-sv-1280');
  await dialog.getByRole('button', { name: 'Låt vara' }).click();
  await dialog.waitFor({ state: 'detached' });
  await page.selectOption('#lang', 'en');

  step('confirming reruns the 30 and says so');
  await page.locator('#select-matching', { hasText: 'All 30 matching jobs are selected.' }).waitFor();
  await page.locator('#start', { hasText: 'Start (30)' }).click();
  await dialog.waitFor();
  await dialog.getByRole('button', { name: 'Start' }).click();
  const outcome = page.locator('#bulk-outcome');
  await outcome.waitFor();
  check(/Started again: 30 jobs\./.test(await outcome.innerText()), `outcome: ${await outcome.innerText()}`);
  await shot(page, 'rerun-outcome-1280');

  step('the history fits a phone');
  const phone = await newPage(PHONE, 'phone');
  await signIn(phone.page, OPERATOR, 'Operator');
  await search(phone.page, upn);
  await phone.page.locator('#history-table tbody tr').first().waitFor();
  await fitsWidth(phone.page, 'history at 390 px');
  await shot(phone.page, 'history-390', { fullPage: true });
});
