// The Job Monitor driven through headless Chromium, as a tenant admin, an operator on a phone
// and a viewer would use it. Started by tests/monitor.rs with:
//   LICENSOR_URL            the running licensor (its tenant's directory is the demo scenario)
//   LICENSOR_TOKEN          an admin token
//   LICENSOR_OPERATOR_TOKEN an operator token
//   LICENSOR_VIEWER_TOKEN   a viewer token
//   SCREENSHOT_DIR          where the screenshots go
//   CHROMIUM                the browser (default /usr/bin/chromium)
// Exits 0 when every step passed; otherwise prints the failed step and exits 1.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import {
  URL_, ADMIN, OPERATOR, VIEWER, SHOTS, DESKTOP, PHONE, step, check, fitsWidth, drive,
} from './harness.mjs';

const JOB_DONE_MS = 240_000;

async function signIn(page, token, role) {
  await page.goto(`${URL_}/`);
  await page.getByRole('heading', { name: 'Sign in to the Job Monitor' }).waitFor();
  await page.fill('#token', token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#session-role').filter({ hasText: role }).waitFor();
  await page.getByRole('heading', { name: 'Job Monitor', exact: true }).waitFor();
}

function row(page, jobId) {
  return page.locator(`#jobs-table tr[data-job-id="${jobId}"]`);
}

await drive(async ({ newPage, shot }) => {
  // --- the admin at a desk --------------------------------------------------------------
  const { page } = await newPage(DESKTOP, 'desktop', { acceptDownloads: true });

  step('served with a strict content security policy');
  const resp = await page.goto(`${URL_}/`);
  check(resp.status() === 200, `GET / answered ${resp.status()}`);
  check(/text\/html/.test(resp.headers()['content-type'] || ''), 'GET / is text/html');
  check(resp.headers()['content-security-policy'] === "default-src 'self'", 'GET / sends CSP default-src \'self\'');

  step('a wrong token is refused');
  await page.fill('#token', 'not-a-token');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByText('This token is not valid').waitFor();

  step('sign in as admin');
  await signIn(page, ADMIN, 'Admin');
  await page.locator('#jobs-table, .empty').first().waitFor();

  step('launch form: Assign Licenses of SPE_E5 to Sales, location No Change');
  await page.getByRole('link', { name: 'New job' }).first().click();
  await page.getByRole('heading', { name: 'New job' }).waitFor();
  check(await page.locator('input[name="kind"][value="assign"]').isChecked(), 'assign is the default kind');
  await page.fill('#group-search', 'Sales');
  await page.waitForFunction(() => {
    const found = [...document.querySelectorAll('#group-results input[data-group]')];
    return found.length > 0 && found.every((i) => i.dataset.group.startsWith('Sales'));
  });
  const sales = page.locator('#group-results input[data-group="Sales"]');
  await sales.check();
  await page.locator('#groups-chosen .chip', { hasText: 'Sales' }).waitFor();
  const e5 = page.locator('#add-licenses input[data-sku="SPE_E5"]');
  await e5.waitFor();
  const e5Row = page.locator('#add-licenses > li', { has: page.locator('input[data-sku="SPE_E5"]') });
  check(/100 of 100 available/.test(await e5Row.innerText()), 'SPE_E5 shows 100 of 100 units available');
  await e5.check();
  check(await page.locator('#usage-location').inputValue() === '', 'usage location defaults to No Change');
  check((await page.locator('#usage-location option:checked').innerText()) === 'No Change', 'No Change is shown');
  await page.locator('#expires-on').waitFor();
  check(/License will expire in/.test(await page.locator('.expiry').innerText()), 'temporary license option is offered');
  await shot(page, 'launch-1280', { fullPage: true });
  await page.locator('#launch-submit', { hasText: 'Add' }).click();
  step('Add shows the preview first: 250 members for 100 free units, so Launch anyway');
  const confirm = page.locator('#preview-dialog');
  await confirm.locator('#shortage').waitFor({ timeout: 60000 });
  check(/SPE_E5/.test(await confirm.locator('#shortage').innerText()), 'the shortage prompt names SPE_E5');
  await confirm.locator('#preview-launch', { hasText: 'Launch anyway' }).click();
  await page.waitForURL(/#\/jobs\/[0-9a-f-]{36}$/);
  const jobId = page.url().split('/').pop();
  step(`job ${jobId} started; its page shows it live`);
  await page.getByRole('heading', { name: /Assign Licenses/ }).waitFor();
  await page.locator('.facts', { hasText: 'No Change' }).waitFor();

  step('the jobs table follows it live until Finished with Exception');
  await page.getByRole('link', { name: 'Jobs', exact: true }).click();
  await row(page, jobId).waitFor();
  await row(page, jobId).locator('.status', { hasText: 'Finished with Exception' }).waitFor({ timeout: JOB_DONE_MS });
  check(/Sales/.test(await row(page, jobId).locator('.col-groups').innerText()), 'the row names the group Sales');
  const firstCounts = await row(page, jobId).locator('.progress-counts').innerText();
  step(`first run: ${firstCounts.replace(/\s+/g, ' ')}`);
  check(/\d+ succeeded/.test(firstCounts) && /\d+ failed/.test(firstCounts), 'counts are shown');
  check(/250 \/ 250/.test(firstCounts), 'all 250 members of Sales were processed');

  step('select it by its checkbox and press Start');
  await page.evaluate(() => {
    // Remember every status a row shows from now on.
    window.seenStatuses = [];
    const section = document.querySelector('.jobs-page');
    new MutationObserver(() => {
      for (const tr of section.querySelectorAll('tr[data-job-id]')) {
        window.seenStatuses.push(`${tr.dataset.jobId}:${tr.dataset.status}`);
      }
    }).observe(section, { childList: true, subtree: true, attributes: true });
  });
  const box = row(page, jobId).locator('input.job-check');
  await box.check();
  await page.locator('#start', { hasText: 'Start (1)' }).waitFor();
  await page.locator('#start').click();
  await page.locator('#rerun-result', { hasText: 'Started again: 1 job' }).waitFor();
  await page.waitForFunction(
    (id) => window.seenStatuses.some((s) => s === `${id}:queued` || s === `${id}:running`),
    jobId,
    { timeout: 15_000 },
  );
  step('the row went back to Waiting / In Progress');
  await row(page, jobId).locator('.runs-note', { hasText: 'run 2' }).waitFor();
  await row(page, jobId).locator('.status', { hasText: /^(Finished with Exception|Failed|Finished)$/ })
    .waitFor({ timeout: JOB_DONE_MS });
  step(`second run ended: ${await row(page, jobId).locator('.status').innerText()}`);
  await fitsWidth(page, 'jobs table at 1280');
  await shot(page, 'jobs-1280');

  step('the job page: two runs, errors grouped by code');
  await row(page, jobId).locator('a.job-link').click();
  await page.waitForURL(new RegExp(`#/jobs/${jobId}$`));
  await page.locator('#runs-table tbody tr').nth(1).waitFor();
  check(await page.locator('#runs-table tbody tr').count() === 2, 'two runs are listed');
  const countViolation = page.locator('.error-group[data-code="count_violation"]');
  await countViolation.waitFor();
  const groups = await page.locator('.error-group').evaluateAll((els) => els.map((e) => e.innerText.replace(/\s+/g, ' ')));
  step(`errors by code: ${groups.join(' | ')}`);
  check(/member/.test(await countViolation.innerText()), 'count_violation has a count');
  check((await countViolation.locator('.error-explanation').innerText()).trim().length > 0, 'count_violation is explained');
  await page.locator('#items-table tbody tr').first().waitFor();
  await fitsWidth(page, 'job page at 1280');
  await shot(page, 'job-1280');
  await shot(page, 'job-1280-full', { fullPage: true });

  step('Show these members filters the items by the code');
  await countViolation.getByRole('button', { name: 'Show these members' }).click();
  await page.locator('.chip', { hasText: 'count_violation' }).waitFor();
  await page.waitForFunction(() => {
    const rows = [...document.querySelectorAll('#items-table tbody tr')];
    return rows.length > 0 && rows.every((r) => r.dataset.status === 'failed' && r.innerText.includes('count_violation'));
  });

  step('download the report as CSV with the bearer token');
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.locator('[data-report="csv"]').click(),
  ]);
  const csvPath = join(SHOTS, 'report.csv');
  await download.saveAs(csvPath);
  const csv = readFileSync(csvPath, 'utf8');
  const lines = csv.trim().split(/\r?\n/);
  step(`report ${download.suggestedFilename()}: ${lines.length} lines; header ${lines[0]}`);
  check(download.suggestedFilename().endsWith('.csv'), 'the report is a .csv file');
  check(lines.length >= 251, 'the report has a line per member');

  step('the change ledger lists what was written; Undo asks with the number of members');
  await page.locator('#changes-table tbody tr').first().waitFor();
  const ledgerCount = (await page.locator('#changes .count-pill').innerText()).trim();
  check(Number(ledgerCount.replace(/\D/g, '')) > 0, 'the ledger counts the members written');
  const ledgerText = await page.locator('#changes-table tbody').innerText();
  step(`first ledger row: ${(await page.locator('#changes-table tbody tr').first().innerText()).replace(/\s+/g, ' ')}`);
  check(ledgerText.includes('SPE_E5'), 'the ledger names the licenses written by their part number');
  await page.locator('#undo-job').click();
  const undoDialog = page.locator('dialog.dialog');
  await undoDialog.waitFor();
  check((await undoDialog.innerText()).includes(`${ledgerCount} member`), 'the undo confirmation states how many members it touches');
  await undoDialog.getByRole('button', { name: 'Keep as is' }).click();
  await undoDialog.waitFor({ state: 'detached' });

  step('with SPE_E5 used up, a new assign shows the "no more available licenses" prompt; Cancel starts nothing');
  await page.getByRole('link', { name: 'New job' }).first().click();
  await page.fill('#group-search', 'Sales');
  await page.locator('#group-results input[data-group="Sales"]').check();
  await page.locator('#add-licenses input[data-sku="SPE_E5"]').check();
  check(/No licenses available/.test(await page.locator('#add-licenses > li', { hasText: 'SPE_E5' }).innerText()),
    'the SKU list says SPE_E5 has no free unit');
  await page.locator('#launch-submit').click();
  const shortage = page.locator('#preview-dialog #shortage');
  await shortage.waitFor({ timeout: 60000 });
  check(/No more available licenses/.test(await shortage.innerText()), 'the prompt says no more licenses are available');
  check(/SPE_E5/.test(await shortage.innerText()), 'the prompt names SPE_E5');
  await page.locator('#preview-cancel').click();
  await page.locator('#preview-dialog').waitFor({ state: 'detached' });

  step('a remove shows its preview with the warning first; Cancel starts nothing');
  await page.locator('.kind-picker label', { hasText: 'Remove Licenses' }).click();
  await page.locator('#remove-licenses input[data-sku="SPE_E5"]').check();
  await page.locator('#launch-submit', { hasText: 'Remove' }).click();
  const dialog = page.locator('#preview-dialog');
  await dialog.locator('#preview-summary').waitFor({ timeout: 60000 });
  check(/removed from Microsoft 365/.test(await dialog.innerText()), 'the warning says what is removed');
  await dialog.locator('#preview-cancel').click();
  await dialog.waitFor({ state: 'detached' });
  check(/#\/new$/.test(page.url()), 'still on the form after No');

  step('Export Results: a result format and an export location; a drive that does not exist fails the job with its code');
  await page.locator('.kind-picker label', { hasText: 'Export Results' }).click();
  await page.locator('input[name="export-format"][value="xlsx"]').check();
  await page.locator('input[name="export-location"][value="sharepoint"]').check();
  await page.fill('#export-drive_id', 'b!no-such-drive');
  await page.fill('#export-folder_path', '/Reports/');
  await page.locator('#launch-submit', { hasText: 'Export' }).click();
  await page.waitForURL(/#\/jobs\/[0-9a-f-]{36}$/);
  await page.locator('.facts', { hasText: 'SharePoint/OneDrive drive b!no-such-drive, folder /Reports/' }).waitFor();
  await page.locator('.alert-error', { hasText: 'export_location_unreachable' }).waitFor({ timeout: 60000 });
  await page.getByRole('link', { name: 'New job' }).first().click();
  await page.getByRole('heading', { name: 'New job' }).waitFor();

  step('Undo is a job of its own: labelled Undo in the list and linked to the job it undoes');
  await page.evaluate((id) => { window.location.hash = `#/jobs/${id}`; }, jobId);
  await page.locator('#undo-job').click();
  const undoAsk = page.locator('dialog.dialog');
  await undoAsk.getByRole('button', { name: /^Undo for / }).click();
  await page.waitForURL((url) => /#\/jobs\/[0-9a-f-]{36}$/.test(url.hash) && !url.hash.endsWith(jobId));
  const undoId = page.url().split('/').pop();
  const undoesRow = page.locator('.facts', { hasText: 'Undoes job' });
  await undoesRow.waitFor();
  check(await undoesRow.locator(`a[href="#/jobs/${jobId}"]`).count() === 1, 'the undo job links the job it undoes');
  await page.evaluate(() => { window.location.hash = '#/'; });
  await row(page, undoId).waitFor();
  check((await row(page, undoId).locator('.col-kind').innerText()).includes('Undo'), 'the jobs list labels the undo job');
  await page.getByRole('link', { name: 'New job' }).first().click();
  await page.getByRole('heading', { name: 'New job' }).waitFor();

  // --- an operator on a phone -------------------------------------------------------------
  step('phone 390×844 as operator');
  const phone = await newPage(PHONE, 'phone', { isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
  await signIn(phone.page, OPERATOR, 'Operator');
  await row(phone.page, jobId).waitFor();
  check(await phone.page.getByRole('link', { name: 'New job' }).isHidden(), 'an operator has no New job');
  check(await phone.page.locator('#start').isVisible(), 'an operator has Start');
  check(await row(phone.page, jobId).locator('input.job-check').count() === 1, 'an operator can select a rerunnable job');
  await fitsWidth(phone.page, 'jobs at 390');
  await shot(phone.page, 'jobs-390');
  await shot(phone.page, 'jobs-390-full', { fullPage: true });
  await row(phone.page, jobId).locator('a.job-link').click();
  await phone.page.locator('#runs-table tbody tr').nth(1).waitFor();
  await phone.page.locator('.error-group').first().waitFor();
  await phone.page.locator('#items-table tbody tr').first().waitFor();
  check(await phone.page.locator('#rerun-job').isVisible(), 'an operator can rerun from the job page');
  await fitsWidth(phone.page, 'job page at 390');
  await shot(phone.page, 'job-390');
  await phone.page.locator('#items').evaluate((el) => el.scrollIntoView());
  await shot(phone.page, 'job-390-members');
  await shot(phone.page, 'job-390-full', { fullPage: true });
  await phone.context.close();

  // --- a viewer ---------------------------------------------------------------------------
  step('viewer: reads, launches and reruns nothing');
  const viewer = await newPage(DESKTOP, 'viewer');
  await signIn(viewer.page, VIEWER, 'Viewer');
  await row(viewer.page, jobId).waitFor();
  check(await viewer.page.locator('#start').count() === 0, 'a viewer has no Start');
  check(await viewer.page.locator('input.job-check').count() === 0, 'a viewer has no checkboxes');
  check(await viewer.page.getByRole('link', { name: 'New job' }).isHidden(), 'a viewer has no New job');
  await row(viewer.page, jobId).locator('a.job-link').click();
  await viewer.page.locator('#runs-table').waitFor();
  check(await viewer.page.locator('#rerun-job, #cancel-job').count() === 0, 'a viewer has no Rerun or Cancel');

  step('sign out forgets the token');
  await viewer.page.getByRole('button', { name: 'Sign out' }).click();
  await viewer.page.getByRole('heading', { name: 'Sign in to the Job Monitor' }).waitFor();
  await viewer.page.reload();
  await viewer.page.getByRole('heading', { name: 'Sign in to the Job Monitor' }).waitFor();
  await viewer.context.close();
});
