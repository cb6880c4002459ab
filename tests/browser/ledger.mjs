// The Changes card of a job that set usage locations (headless Chromium): members given the
// job's usage location show it under "After" ("Usage location set to SE", "Plats satt till SE"
// in Swedish), also those whose license write then failed; each row's Status says how the
// member ended ("Failed" with its error code, "Succeeded"; "Misslyckades", "Lyckades"); Before and
// After name each license (its part number, or its id); the Undo button asks for the members
// an undo takes back — those that succeeded — not every row of the card. Started by
// tests/jobs.rs with JOB_ID set besides harness.mjs's environment, once the job has ended.

import { URL_, ADMIN, DESKTOP, need, step, check, drive, signIn } from './harness.mjs';

const JOB_ID = need('JOB_ID');

async function api(path) {
  const resp = await fetch(`${URL_}${path}`, { headers: { Authorization: `Bearer ${ADMIN}` } });
  check(resp.ok, `GET ${path} answered ${resp.status}`);
  return resp.json();
}

/** Every entry of the job's ledger (all pages), and the first page's counts. */
async function ledger() {
  const first = await api(`/v1/jobs/${JOB_ID}/changes?limit=500`);
  const data = [...first.data];
  for (let cursor = first.next_cursor; cursor;) {
    const page = await api(`/v1/jobs/${JOB_ID}/changes?limit=500&cursor=${encodeURIComponent(cursor)}`);
    data.push(...page.data);
    cursor = page.next_cursor;
  }
  return { ...first, data };
}

await drive(async ({ newPage, shot }) => {
  const changes = await ledger();
  const skuNames = new Map((await api('/v1/directory/skus')).data.map((s) => [s.sku_id, s.sku_part_number]));
  const located = changes.data.filter((c) => c.usage_location);
  const failed = located.filter((c) => c.status === 'failed');
  check(located.length > 0 && failed.length > 0, `entries with a usage location: ${located.length}, failed: ${failed.length}`);
  check(changes.undoable < changes.total, `undoable ${changes.undoable} of ${changes.total}`);

  const { page } = await newPage(DESKTOP, 'desktop');
  await signIn(page, ADMIN, 'Admin');
  // The Changes card's row of a member. Rows come 50 at a time, in member order: Load more until
  // the member's is there (which members fail, and so where they stand, differs from run to run).
  const rowOf = async (entry) => {
    const row = page.locator(`#changes-table tbody tr[data-user="${entry.user_id}"]`);
    while (await row.count() === 0) {
      const more = page.locator('#changes .more button');
      check(await more.isVisible(), `no row for ${entry.user_id} and no more to load`);
      const before = await page.locator('#changes-table tbody tr').count();
      await more.click();
      await page.waitForFunction((n) => document.querySelectorAll('#changes-table tbody tr').length > n, before);
    }
    return row;
  };

  step('the Changes card: the usage location under After, for a member that succeeded and one that failed');
  await page.goto(`${URL_}/#/jobs/${JOB_ID}`);
  await page.locator('#changes-table tbody tr').first().waitFor();
  for (const entry of [located.find((c) => c.status === 'succeeded'), failed[0]]) {
    check(entry, 'an entry of each kind');
    const row = await rowOf(entry);
    // The row as shown, read at once (nothing in it is still loading).
    const shown = await row.evaluate((tr) => ({
      location: tr.querySelector('.location-set')?.innerText.trim() ?? null,
      status: tr.querySelector('.item-status')?.innerText.trim() ?? null,
      code: tr.querySelector('.error-code')?.innerText.trim() ?? null,
      html: tr.innerHTML,
    }));
    const about = `${entry.status} member ${JSON.stringify(entry)}, row ${shown.html}`;
    for (const [column, list] of [[2, entry.before], [3, entry.after]]) {
      const cell = await row.locator('td').nth(column).innerText();
      for (const l of list) {
        check(cell.includes(l.sku_id) || cell.includes(skuNames.get(l.sku_id)), `license ${l.sku_id} named in column ${column + 1}: ${cell}; ${about}`);
      }
    }
    check(shown.location === 'Usage location set to SE', `location: ${shown.location}; ${about}`);
    const label = { succeeded: 'Succeeded', failed: 'Failed' }[entry.status];
    check(shown.status === label, `status: ${shown.status}; ${about}`);
    check(shown.code === (entry.status === 'failed' ? entry.error?.code : null) && (entry.status !== 'failed' || shown.code),
      `error code: ${shown.code}; ${about}`);
  }
  // Every row shown says it exactly when its entry has one.
  const rows = await page.locator('#changes-table tbody tr').evaluateAll((trs) =>
    trs.map((tr) => [tr.dataset.user, tr.querySelector('.location-set') !== null,
      [...tr.querySelector('.item-status').classList].find((c) => c.startsWith('item-') && c !== 'item-status')]));
  const byUser = new Map(changes.data.map((c) => [c.user_id, c]));
  for (const [user, says, status] of rows) {
    const entry = byUser.get(user);
    check(entry && (entry.usage_location !== null && entry.usage_location !== undefined) === says, `row of ${user}: says a location was set: ${says}`);
    check(status === `item-${entry.status}`, `row of ${user}: ${status}, entry ${entry.status}`);
  }
  step(`${rows.length} rows checked; ${rows.filter(([, says]) => says).length} say a location was set`);
  await page.locator('#changes-table tbody tr', { has: page.locator('.location-set') }).last().scrollIntoViewIfNeeded();
  await shot(page, 'ledger-location');

  step('Undo asks for the members an undo takes back');
  await page.locator('#undo-job').click();
  const dialog = page.locator('dialog.dialog');
  await dialog.waitFor();
  const asked = await dialog.innerText();
  check(asked.includes(`gives ${changes.undoable} members back`), `the confirmation: ${asked}`);
  await dialog.getByRole('button', { name: 'Keep as is' }).click();
  await dialog.waitFor({ state: 'detached' });

  step('in Swedish');
  await page.locator('#lang').selectOption('sv');
  await page.locator('#changes-table .location-set', { hasText: 'Plats satt till SE' }).first().waitFor();
  // The card is drawn again in Swedish, from its first rows.
  const failedRow = await rowOf(failed[0]);
  const svStatus = (await failedRow.locator('.item-status').innerText()).trim();
  check(svStatus === 'Misslyckades', `a failed member's status in Swedish: ${svStatus}`);
  await shot(page, 'ledger-location-sv');
  await page.locator('#lang').selectOption('en');
});
