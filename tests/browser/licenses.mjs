// The Licenses half of the web app driven through headless Chromium, following the seeds' flows
// (checkout to a user or an asset, out of stock, Used By → bulk checkin, reusable started
// licenses in Swedish, everything one asset holds), with the API's figures asserted after each
// step. Started by tests/licenses_web.rs with:
//   LICENSOR_URL            the running licensor (its tenant's directory is the demo scenario)
//   LICENSOR_TOKEN          an admin token
//   LICENSOR_OPERATOR_TOKEN an operator token
//   LICENSOR_VIEWER_TOKEN   a viewer token
//   SCREENSHOT_DIR          where the screenshots go
//   CHROMIUM                the browser (default /usr/bin/chromium)
// Exits 0 when every step passed; otherwise prints the failed step and exits 1.

import {
  URL_, ADMIN, OPERATOR, VIEWER, DESKTOP, PHONE, step, check, fitsWidth, drive,
} from './harness.mjs';

function eq(got, want, msg) {
  const g = JSON.stringify(got);
  const w = JSON.stringify(want);
  if (g !== w) throw new Error(`check failed: ${msg}: got ${g}, want ${w}`);
}

// --- the API, to set up and to assert what the pages did -------------------------------------

async function call(method, path, body, token = ADMIN) {
  const resp = await fetch(`${URL_}${path}`, {
    method,
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json', Accept: 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await resp.text();
  const json = text ? JSON.parse(text) : null;
  return { status: resp.status, json };
}

async function ok(method, path, body, token) {
  const r = await call(method, path, body, token);
  if (r.status >= 300) throw new Error(`${method} ${path} answered ${r.status}: ${JSON.stringify(r.json)}`);
  return r.json;
}

const license = (id) => ok('GET', `/v1/licenses/${id}`);
const usedBy = async (id) => (await ok('GET', `/v1/licenses/${id}/assignments?limit=500`)).data;
const startedSeats = (id) => ok('GET', `/v1/licenses/${id}/started`);
const held = async (type, id) => (await ok('GET', `/v1/assignees/${type}/${encodeURIComponent(id)}/assignments?limit=500`)).data;
const audit = async (id, action) => (await ok('GET', `/v1/audit?target_type=license&target_id=${id}&action=${action}&limit=500`)).data;

async function figures(id, want, what) {
  const l = await license(id);
  const got = {};
  for (const k of Object.keys(want)) got[k] = l[k];
  eq(got, want, `${what}: API figures of ${l.name}`);
  step(`  API: ${l.name} ${JSON.stringify(got)}`);
  return l;
}

/** A user of the demo directory, found through licensor's own directory search. */
async function directoryUser(prefix) {
  const page = await ok('GET', `/v1/directory/users?search=${encodeURIComponent(prefix)}&limit=5`);
  check(page.data.length > 0, `a directory user starts with ${prefix}`);
  return page.data[0];
}

/**
 * A term license with reusable started seats of two end dates: two seats start today, one is
 * checked in again (reusable, ending in `term` days); then the delivery date moves five months
 * back, so the other seats start by themselves a month ago with an earlier end date.
 */
async function termLicenseWithTwoEndDates(name, seats, holders) {
  const l = await ok('POST', '/v1/licenses', { name, seats, term_days: 365, notes: 'Digital lärobok' });
  const first = await ok('POST', `/v1/licenses/${l.id}/checkout`, { assignee: { type: 'user', id: holders[0].id, name: holders[0].display_name } });
  const second = await ok('POST', `/v1/licenses/${l.id}/checkout`, { assignee: { type: 'user', id: holders[1].id, name: holders[1].display_name } });
  await ok('POST', `/v1/licenses/${l.id}/checkin`, { assignment_ids: [second.id], notes: 'Bytt skola' });
  const d = new Date();
  d.setUTCMonth(d.getUTCMonth() - 5);
  await ok('PATCH', `/v1/licenses/${l.id}`, { delivered_on: d.toISOString().slice(0, 10) });
  const s = await startedSeats(l.id);
  eq(s.data.length, 2, `${name} has reusable started seats of two end dates`);
  eq(s.total, seats - 1, `${name}: every seat but the one held is started and reusable`);
  return { license: l, first, started: s };
}

// --- the browser ---------------------------------------------------------------------------

async function signIn(page, token, roleLabel, button = 'Sign in') {
  await page.goto(`${URL_}/`);
  await page.locator('#token').waitFor();
  await page.fill('#token', token);
  await page.getByRole('button', { name: button }).click();
  await page.locator('#session-role').filter({ hasText: roleLabel }).waitFor();
}

const row = (page, id) => page.locator(`#licenses-table tr[data-license-id="${id}"]`);

async function openLicenses(page) {
  await page.getByRole('link', { name: /^(Licenses|Licenser)$/ }).first().click();
  await page.locator('#licenses-table').waitFor();
}

await drive(async ({ newPage: open, shot }) => {
  const newPage = (viewport, label, extra = {}) => open(viewport, label, { locale: 'en-GB', ...extra });
  step('set up through the API: licenses of the seeds, users from the directory');
  const adele = await directoryUser('Adele');
  const alex = await directoryUser('Alex');
  const others = (await ok('GET', '/v1/directory/users?limit=12')).data.filter((u) => u.id !== adele.id && u.id !== alex.id);
  check(others.length >= 8, 'the demo directory has users');
  const cad = await ok('POST', '/v1/licenses', { name: 'CAD Suite 2026', seats: 10, notes: 'Design office' });
  await ok('POST', `/v1/licenses/${cad.id}/checkout`, { assignee: { type: 'user', id: alex.id, name: alex.display_name }, quantity: 1 });
  const visio = await ok('POST', '/v1/licenses', { name: 'Visio Plan 2', seats: 1 });
  const oem = await ok('POST', '/v1/licenses', { name: 'Windows 11 OEM', seats: 2, reassignable: false });
  await ok('POST', `/v1/licenses/${oem.id}/checkout`, { assignee: { type: 'asset', id: 'PC-0311', name: 'Reception PC' } });
  const fysik = await termLicenseWithTwoEndDates('Fysik 1a', 10, [others[0], others[1]]);
  const kemi = await termLicenseWithTwoEndDates('Kemi 1', 12, [others[2], others[3]]);
  await figures(cad.id, { seats: 10, assigned: 1, available: 9 }, 'set up');

  // --- the admin at a desk, in English --------------------------------------------------
  const { page } = await newPage(DESKTOP, 'desktop');
  step('sign in as admin; the Licenses screen lists every license with its figures');
  await signIn(page, ADMIN, 'Admin');
  await openLicenses(page);
  await row(page, cad.id).waitFor();
  check(await page.getByRole('heading', { name: 'Licenses', exact: true }).isVisible(), 'the screen is called Licenses');
  const cadRow = await row(page, cad.id).innerText();
  check(/CAD Suite 2026/.test(cadRow) && /Design office/.test(cadRow), 'the row shows name and notes');
  eq(await row(page, cad.id).locator('.col-available .avail-figure').innerText(), '9', 'CAD shows 9 available');
  eq(await row(page, cad.id).locator('.col-seats').innerText(), '10', 'CAD shows 10 seats');
  eq(await row(page, cad.id).locator('.col-assigned').innerText(), '1', 'CAD shows 1 assigned');
  check(/365 days/.test(await row(page, fysik.license.id).locator('.col-term').innerText()), 'the term is shown');
  eq(await row(page, oem.id).locator('.col-reassignable').innerText(), 'No', 'OEM is not reassignable');

  step('search narrows the list');
  await page.fill('#license-search', 'visio');
  await page.waitForFunction(() => {
    const rows = [...document.querySelectorAll('#licenses-table tbody tr')];
    return rows.length > 0 && rows.every((r) => /visio/i.test(r.dataset.name));
  });
  check(await row(page, visio.id).isVisible(), 'Visio is found');
  await page.fill('#license-search', '');
  await row(page, cad.id).waitFor();
  await fitsWidth(page, 'licenses at 1280');
  await shot(page, 'licenses-1280');

  step('seed 000/001: Checkout to User picked from the directory, quantity 2, notes');
  await row(page, cad.id).locator('[data-action="checkout"]').click();
  await page.getByRole('heading', { name: 'Checkout License' }).waitFor();
  check(await page.locator('input[name="checkout-to"][value="user"]').isChecked(), 'Checkout to User is the default');
  await page.fill('#user-search', 'Adele');
  await page.waitForFunction(() => {
    const found = [...document.querySelectorAll('#user-results input[name="user"]')];
    return found.length > 0 && found.every((i) => i.closest('label').innerText.startsWith('Adele'));
  });
  await page.locator(`#user-results input[value="${adele.id}"]`).check();
  await page.locator('#held h3', { hasText: 'Licenses checked out to' }).waitFor();
  await page.fill('#quantity', '2');
  // A note with a pasted text-direction override (invisible in the field) is refused, saying
  // what is wrong in the page's words rather than the HTTP reason phrase, and nothing is
  // checked out.
  await page.fill('#notes', 'Drafting \u202eand plotting');
  await page.locator('#checkout-submit').click();
  const refused = page.locator('#checkout-error .alert strong');
  await refused.waitFor();
  check(/not allowed/.test(await refused.innerText()) && !/Unprocessable/.test(await page.locator('#checkout-error').innerText()),
    `the refused note is explained: ${await page.locator('#checkout-error').innerText()}`);
  await page.locator('#checkout-error').getByText('Code: invalid_notes').waitFor();
  await figures(cad.id, { assigned: 1, available: 9 }, 'after the refused checkout');
  await page.fill('#notes', 'Drafting and plotting');
  await fitsWidth(page, 'checkout at 1280');
  await shot(page, 'checkout-1280', { top: true });
  await page.locator('#checkout-submit').click();
  await page.waitForURL(new RegExp(`#/licenses/${cad.id}/used-by$`));
  await page.locator(`#used-by-table tr[data-assignee="${adele.id}"]`).waitFor();
  await figures(cad.id, { assigned: 3, available: 7 }, 'after checkout to Adele');
  const adeleRow = (await usedBy(cad.id)).find((a) => a.assignee.id === adele.id);
  eq([adeleRow.quantity, adeleRow.notes, adeleRow.assignee.name], [2, 'Drafting and plotting', adele.display_name], 'Used By has Adele with 2 seats and the notes');
  check(/Drafting and plotting/.test(await page.locator(`#used-by-table tr[data-assignee="${adele.id}"]`).innerText()), 'the page shows the notes');

  step('Checkout to Asset: tag and name');
  await page.locator('#checkout-btn').click();
  await page.locator('.seg', { hasText: 'Asset' }).click();
  await page.fill('#asset-id', 'LT-9001');
  await page.fill('#asset-name', 'Survey laptop');
  await page.locator('#held', { hasText: 'No license is checked out to them.' }).waitFor();
  await page.locator('#checkout-submit').click();
  await page.locator('#used-by-table tr[data-assignee="LT-9001"]').waitFor();
  await figures(cad.id, { assigned: 4, available: 6 }, 'after checkout to LT-9001');
  eq((await held('asset', 'LT-9001')).map((a) => [a.license_id, a.quantity, a.assignee.name]), [[cad.id, 1, 'Survey laptop']], 'LT-9001 holds one CAD seat');

  step('the picker shows what a chosen asset already holds');
  await page.locator('#checkout-btn').click();
  await page.locator('.seg', { hasText: 'Asset' }).click();
  await page.fill('#asset-id', 'LT-9001');
  await page.locator('#held-list li', { hasText: 'CAD Suite 2026' }).waitFor();
  eq(await page.inputValue('#asset-name'), 'Survey laptop', 'a known asset keeps its name');
  await page.locator('#checkout-cancel').click();
  await page.waitForURL(new RegExp(`#/licenses/${cad.id}$`));

  step('out of stock: someone takes the last seat meanwhile; the form says so and keeps its values');
  await page.goto(`${URL_}/#/licenses/${visio.id}/checkout`);
  await page.getByRole('heading', { name: 'Checkout License' }).waitFor();
  await page.fill('#user-search', 'Adele');
  await page.locator(`#user-results input[value="${adele.id}"]`).check();
  await page.fill('#notes', 'Floor plans');
  await ok('POST', `/v1/licenses/${visio.id}/checkout`, { assignee: { type: 'asset', id: 'PC-0400', name: 'Planning PC' } });
  await page.locator('#checkout-submit').click();
  const refusal = page.locator('#checkout-error');
  await refusal.getByText('Licenses that are out of stock cannot be checked out.').waitFor();
  check(/out_of_stock/.test(await refusal.innerText()), 'the refusal shows its code');
  eq(await page.inputValue('#notes'), 'Floor plans', 'the notes are kept');
  check(await page.locator(`#user-results input[value="${adele.id}"]`).isChecked(), 'the user stays picked');
  await figures(visio.id, { assigned: 1, available: 0 }, 'the refused checkout changed nothing');
  eq((await usedBy(visio.id)).map((a) => a.assignee.id), ['PC-0400'], 'only the other checkout holds Visio');
  await openLicenses(page);
  const visioRow = row(page, visio.id);
  await visioRow.locator('.stock-out', { hasText: 'Out of stock' }).waitFor();
  check(await visioRow.locator('[data-action="checkout"]').isDisabled(), 'Checkout is disabled when out of stock');
  check(/Licenses that are out of stock cannot be checked out\./.test(await visioRow.innerText()), 'the row says why');

  step('Used By → tick two → bulk action bar → Checkin License with notes');
  await row(page, cad.id).locator('.license-link').click();
  await page.locator('#used-by-table').waitFor();
  check(await page.locator('#bulk-bar').count() === 0, 'no bulk bar before a tick');
  await page.locator(`#used-by-table tr[data-assignee="${adele.id}"] input.assignment-check`).check();
  await page.locator('#bulk-bar', { hasText: '1 selected' }).waitFor();
  await page.locator(`#used-by-table tr[data-assignee="${alex.id}"] input.assignment-check`).check();
  await page.locator('#bulk-bar', { hasText: '2 selected' }).waitFor();
  const barAbove = await page.evaluate(() => {
    const bar = document.getElementById('bulk-bar');
    const table = document.getElementById('used-by-table');
    return Boolean(bar.compareDocumentPosition(table) & Node.DOCUMENT_POSITION_FOLLOWING);
  });
  check(barAbove, 'the bulk action bar is above the Used By list');
  await fitsWidth(page, 'used by at 1280');
  await shot(page, 'used-by-bulk-1280');
  await page.locator('#bulk-checkin').click();
  await page.getByRole('heading', { name: 'Checkin License' }).waitFor();
  await page.locator('#checkin-list li').nth(1).waitFor();
  eq(await page.locator('#checkin-list li').count(), 2, 'the two picked assignments are listed');
  check(/3 seats return to the stock: available 6 → 9/.test(await page.locator('#checkin-effect').innerText()), 'the effect is stated');
  await page.fill('#checkin-notes', 'Project finished');
  await shot(page, 'checkin-1280', { top: true });
  await page.locator('#checkin-submit').click();
  await page.waitForURL(new RegExp(`#/licenses/${cad.id}/used-by$`));
  await page.locator('#used-by-table tbody tr').first().waitFor();
  await figures(cad.id, { assigned: 1, available: 9 }, 'after the bulk checkin (available up by 3)');
  const checkins = await audit(cad.id, 'license.checkin');
  eq([checkins[0].after.seats_returned, checkins[0].after.assignment_ids.length, checkins[0].after.notes], [3, 2, 'Project finished'], 'one audit entry for the bulk checkin');
  eq(await page.locator('[data-fact="available"] .avail-figure').innerText(), '9', 'the page shows 9 available');

  step('History: who, when, what, before/after counts');
  await page.locator('[data-tab="history"]').click();
  await page.locator('#history-table tr[data-action="license.checkin"]').first().waitFor();
  const hist = await page.locator('#history-table tr[data-action="license.checkin"]').first().innerText();
  check(/Checked in 3 seats/.test(hist) && /4 assigned · 6 available/.test(hist) && /1 assigned · 9 available/.test(hist), `the history row has the counts: ${hist}`);

  step('not reassignable: Used By says why it cannot be checked in');
  await page.goto(`${URL_}/#/licenses/${oem.id}/used-by`);
  await page.locator('#not-reassignable').waitFor();
  check(/not reassignable, so it cannot be checked in/.test(await page.locator('#not-reassignable').innerText()), 'the reason is shown');
  eq(await page.locator('input.assignment-check').count(), 0, 'no checkboxes on a license that cannot be checked in');

  step('seed 002: the info button shows new and started seats grouped by end date');
  await openLicenses(page);
  const fysikRow = row(page, fysik.license.id);
  await fysikRow.locator('.info-btn').click();
  const pop = fysikRow.locator('.info-pop');
  await pop.locator('.info-groups li').nth(1).waitFor();
  const s = await startedSeats(fysik.license.id);
  const l = await license(fysik.license.id);
  eq(await pop.locator('[data-count="started"]').innerText(), String(s.total), 'started reusable count');
  eq(await pop.locator('[data-count="new"]').innerText(), String(l.available - s.total), 'new (not started) count');
  const groups = await pop.locator('.info-groups li').evaluateAll((els) => els.map((e) => [e.dataset.endsOn, Number(e.dataset.count)]));
  eq(groups, s.data.map((g) => [g.ends_on, g.count]), 'the groups by end date are the API\'s');
  step(`  started seats by end date: ${JSON.stringify(groups)}`);
  await shot(page, 'started-info-1280');
  await page.keyboard.press('Escape');

  step('Reuse started license, choosing the later of two end dates');
  const later = s.data[s.data.length - 1];
  const earlier = s.data[0];
  check(later.ends_on !== earlier.ends_on, 'two end dates');
  await fysikRow.locator('[data-action="checkout"]').click();
  await page.locator('#reuse-box').waitFor();
  await page.locator('input[name="seat-kind"][value="reuse"]').check();
  await page.locator('#ends-on').selectOption(later.ends_on);
  await page.fill('#user-search', 'Alex');
  await page.locator(`#user-results input[value="${alex.id}"]`).check();
  await page.locator('#checkout-submit').click();
  await page.locator(`#used-by-table tr[data-assignee="${alex.id}"]`).waitFor();
  const reused = (await usedBy(fysik.license.id)).find((a) => a.assignee.id === alex.id);
  eq(reused.ends_on, later.ends_on, 'the seat handed out ends on the chosen date');
  const after = await startedSeats(fysik.license.id);
  eq(after.data.map((g) => [g.ends_on, g.count]), s.data.map((g) => [g.ends_on, g.ends_on === later.ends_on ? g.count - 1 : g.count]).filter(([, n]) => n > 0), 'one reusable seat of that date was taken');
  await figures(fysik.license.id, { assigned: 2, available: l.available - 1, started_reusable: s.total - 1 }, 'after reusing a started seat');

  step('check in everything held by one asset (reached from Used By)');
  // A seat of the earlier end date, so Kemi keeps reusable seats of two end dates.
  await ok('POST', `/v1/licenses/${kemi.license.id}/checkout`, { assignee: { type: 'asset', id: 'LT-9001', name: 'Survey laptop' }, reuse_started: { ends_on: kemi.started.data[0].ends_on } });
  eq((await held('asset', 'LT-9001')).length, 2, 'LT-9001 holds two licenses');
  await page.goto(`${URL_}/#/licenses/${cad.id}/used-by`);
  await page.locator('#used-by-table tr[data-assignee="LT-9001"] a.assignee-name').click();
  await page.waitForURL(/#\/assignees\/asset\/LT-9001$/);
  await page.locator('#held-table tbody tr').nth(1).waitFor();
  await page.fill('#holder-notes', 'Asset retired');
  await page.locator('#checkin-all').click();
  const dialog = page.locator('dialog.dialog');
  await dialog.waitFor();
  await dialog.locator('[data-answer="yes"]').click();
  await page.locator('#holder-done').waitFor();
  await page.locator('#holder-none').waitFor();
  eq((await held('asset', 'LT-9001')).length, 0, 'LT-9001 holds nothing any more');
  await figures(cad.id, { assigned: 0, available: 10 }, 'CAD after the asset was retired');
  for (const id of [cad.id, kemi.license.id]) {
    const entries = (await audit(id, 'license.checkin')).filter((e) => e.after.held_by?.id === 'LT-9001');
    eq(entries.length, 1, 'one audit entry per license for the asset');
    eq(entries[0].after.notes, 'Asset retired', 'the notes are recorded');
  }

  step('header switch: Svenska, remembered, and back');
  await openLicenses(page);
  await page.locator('#lang').selectOption('sv');
  await page.getByRole('heading', { name: 'Hantera licenser' }).waitFor();
  await page.reload();
  await page.getByRole('heading', { name: 'Hantera licenser' }).waitFor();
  check(/Jobb/.test(await page.locator('#nav').innerText()), 'the navigation is Swedish too');
  await page.locator('#lang').selectOption('en');
  await page.getByRole('heading', { name: 'Licenses', exact: true }).waitFor();
  await page.context().close();

  // --- a Swedish school administrator: reusable started licenses -------------------------
  step('Swedish browser: Hantera licenser, info button, Återanvänd startad licens');
  const sv = await newPage(DESKTOP, 'svenska', { locale: 'sv-SE' });
  await signIn(sv.page, ADMIN, 'Administratör', 'Logga in');
  await sv.page.getByRole('link', { name: 'Licenser' }).click();
  await sv.page.getByRole('heading', { name: 'Hantera licenser' }).waitFor();
  const kemiRow = row(sv.page, kemi.license.id);
  await kemiRow.waitFor();
  eq(await sv.page.locator('#licenses-table thead th').nth(7).innerText(), 'TILLDELA/DRA TILLBAKA', 'the Checkin/Checkout column in Swedish');
  await kemiRow.locator('.info-btn').click();
  const svPop = kemiRow.locator('.info-pop');
  await svPop.locator('.info-groups li').nth(1).waitFor();
  const ks = await startedSeats(kemi.license.id);
  const kl = await license(kemi.license.id);
  check(/Startade, återanvändbara/.test(await svPop.innerText()) && /Nya \(ej startade\)/.test(await svPop.innerText()), 'the info is in Swedish');
  eq(await svPop.locator('[data-count="started"]').innerText(), String(ks.total), 'startade återanvändbara');
  eq(await svPop.locator('[data-count="new"]').innerText(), String(kl.available - ks.total), 'nya');
  await shot(sv.page, 'started-info-sv-1280');
  await sv.page.keyboard.press('Escape');
  await kemiRow.locator('[data-action="checkout"]').click();
  await sv.page.getByRole('heading', { name: 'Tilldela licens' }).waitFor();
  check(/Tilldela till/.test(await sv.page.locator('.checkout').innerText()), 'Tilldela till');
  await sv.page.locator('label', { hasText: 'Återanvänd startad licens' }).click();
  const early = ks.data[0];
  await sv.page.locator('#ends-on').selectOption(early.ends_on);
  await sv.page.fill('#user-search', others[4].display_name);
  await sv.page.locator(`#user-results input[value="${others[4].id}"]`).check();
  await shot(sv.page, 'checkout-reuse-sv-1280');
  await sv.page.getByRole('button', { name: 'Skicka' }).click();
  await sv.page.locator(`#used-by-table tr[data-assignee="${others[4].id}"]`).waitFor();
  check(/Används av/.test(await sv.page.locator('.tabs').innerText()), 'Används av');
  const svSeat = (await usedBy(kemi.license.id)).find((a) => a.assignee.id === others[4].id);
  eq(svSeat.ends_on, early.ends_on, 'the Swedish checkout reused a seat ending on the chosen date');
  await figures(kemi.license.id, { assigned: 2, started_reusable: ks.total - 1 }, 'after Återanvänd startad licens');
  await sv.context.close();

  // --- on a phone ------------------------------------------------------------------------
  step('phone 390×844: the same screens stack into cards');
  const phone = await newPage(PHONE, 'phone', { isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
  await signIn(phone.page, ADMIN, 'Admin');
  await phone.page.goto(`${URL_}/#/licenses`);
  await row(phone.page, cad.id).waitFor();
  await fitsWidth(phone.page, 'licenses at 390');
  await shot(phone.page, 'licenses-390');
  await row(phone.page, fysik.license.id).locator('.info-btn').click();
  await row(phone.page, fysik.license.id).locator('.info-groups li').first().waitFor();
  await shot(phone.page, 'started-info-390');
  await phone.page.keyboard.press('Escape');
  await phone.page.goto(`${URL_}/#/licenses/${cad.id}/checkout`);
  await phone.page.fill('#user-search', 'Adele');
  await phone.page.locator(`#user-results input[value="${adele.id}"]`).check();
  await phone.page.locator('#held h3').waitFor();
  await fitsWidth(phone.page, 'checkout at 390');
  await shot(phone.page, 'checkout-390', { top: true });
  await phone.page.fill('#quantity', '2');
  await phone.page.locator('#checkout-submit').click();
  await phone.page.locator(`#used-by-table tr[data-assignee="${adele.id}"]`).waitFor();
  await figures(cad.id, { assigned: 2, available: 8 }, 'after the phone checkout');
  await phone.page.locator(`#used-by-table tr[data-assignee="${adele.id}"] input.assignment-check`).check();
  await phone.page.locator('#bulk-bar').waitFor();
  await fitsWidth(phone.page, 'used by at 390');
  await shot(phone.page, 'used-by-bulk-390');
  await phone.context.close();

  // --- an operator checks in, a viewer reads ---------------------------------------------
  step('operator: checks in, checks out nothing');
  const op = await newPage(DESKTOP, 'operator');
  await signIn(op.page, OPERATOR, 'Operator');
  await op.page.goto(`${URL_}/#/licenses`);
  await row(op.page, cad.id).waitFor();
  eq(await op.page.locator('[data-action="checkout"]').count(), 0, 'an operator has no Checkout');
  eq(await op.page.locator('#new-license').count(), 0, 'an operator creates no license');
  await row(op.page, cad.id).locator('[data-action="checkin"]').click();
  await op.page.locator(`#used-by-table tr[data-assignee="${adele.id}"] input.assignment-check`).check();
  await op.page.locator('#bulk-checkin').click();
  await op.page.locator('#checkin-submit:not([disabled])').click();
  await op.page.waitForURL(new RegExp(`#/licenses/${cad.id}/used-by$`));
  await op.page.locator('#tab-panel', { hasText: 'The license is not checked out to anyone.' }).waitFor();
  await figures(cad.id, { assigned: 0, available: 10 }, 'after the operator\'s checkin');
  await op.page.goto(`${URL_}/#/licenses/${cad.id}/checkout`);
  await op.page.locator('#needs-admin').waitFor();
  eq((await call('POST', `/v1/licenses/${cad.id}/checkout`, { assignee: { type: 'user', id: 'x' } }, OPERATOR)).status, 403, 'the API refuses an operator\'s checkout');
  await op.context.close();

  step('viewer: reads only');
  const viewer = await newPage(DESKTOP, 'viewer');
  await signIn(viewer.page, VIEWER, 'Viewer');
  await viewer.page.goto(`${URL_}/#/licenses`);
  await row(viewer.page, cad.id).waitFor();
  eq(await viewer.page.locator('[data-action="checkout"], [data-action="checkin"], #new-license, .edit-link').count(), 0, 'a viewer has no Checkout, Checkin, New or Edit');
  await viewer.page.goto(`${URL_}/#/licenses/${fysik.license.id}/used-by`);
  await viewer.page.locator('#used-by-table tbody tr').first().waitFor();
  eq(await viewer.page.locator('input.assignment-check').count(), 0, 'a viewer has no checkboxes');
  await viewer.page.goto(`${URL_}/#/assignees/user/${alex.id}`);
  await viewer.page.locator('#held-table').waitFor();
  check(await viewer.page.locator('#holder-action').isHidden(), 'a viewer cannot check in everything');
  eq((await call('POST', `/v1/assignees/user/${alex.id}/checkin`, {}, VIEWER)).status, 403, 'the API refuses a viewer\'s checkin');
  await viewer.context.close();
});
