// A change of language keeps what the user entered: every form of the web app is filled in, the
// language switched (English ↔ Swedish, the #lang select), and each entry must still be there
// with the labels in the new language; a request already sent keeps its Idempotency-Key; an error
// shown stays, in the new language where the web app knows it (its own messages, refusals it
// knows by code). Then a member's history on a phone: the job status badge never overlaps the Groups value and the
// status words stay on one line, in English and Swedish. Started by tests/drafts_web.rs with,
// besides what harness.mjs reads:
//   HISTORY_MEMBER  the user principal name of a member a Finished with Exception job wrote for
// Exits 0 when every step passed; otherwise prints the failed step and exits 1.

import {
  URL_, ADMIN, DESKTOP, PHONE, step, check, fitsWidth, drive, need, eventually, switchTo, go,
} from './harness.mjs';

const MEMBER = need('HISTORY_MEMBER');

// --- the API, to set up -------------------------------------------------------------------------

async function ok(method, path, body) {
  const resp = await fetch(`${URL_}${path}`, {
    method,
    headers: { Authorization: `Bearer ${ADMIN}`, 'Content-Type': 'application/json', Accept: 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await resp.text();
  if (resp.status >= 300) throw new Error(`${method} ${path} answered ${resp.status}: ${text}`);
  return text ? JSON.parse(text) : null;
}

/** A term license whose reusable started seats end on two dates (see licenses.mjs). */
async function termLicenseWithTwoEndDates(name, holders) {
  const l = await ok('POST', '/v1/licenses', { name, seats: 6, term_days: 365 });
  await ok('POST', `/v1/licenses/${l.id}/checkout`, { assignee: { type: 'user', id: holders[0].id, name: holders[0].display_name } });
  const second = await ok('POST', `/v1/licenses/${l.id}/checkout`, { assignee: { type: 'user', id: holders[1].id, name: holders[1].display_name } });
  await ok('POST', `/v1/licenses/${l.id}/checkin`, { assignment_ids: [second.id] });
  const d = new Date();
  d.setUTCMonth(d.getUTCMonth() - 5);
  await ok('PATCH', `/v1/licenses/${l.id}`, { delivered_on: d.toISOString().slice(0, 10) });
  const started = await ok('GET', `/v1/licenses/${l.id}/started`);
  check(started.data.length === 2, `${name} has reusable started seats of two end dates`);
  return { license: l, started };
}

// --- the browser ----------------------------------------------------------------------------------

const value = (page, sel, want, msg) => eventually(() => page.locator(sel).inputValue(), want, msg || `${sel} keeps its value`);
const checked = (page, sel, want, msg) => eventually(() => page.locator(sel).isChecked(), want, msg || `${sel} ${want ? 'stays ticked' : 'stays unticked'}`);
const text = (page, sel, want, msg) => eventually(async () => (await page.locator(sel).first().innerText()).replace(/\s+/g, ' ').trim(), want, msg || `${sel} reads`);

async function signIn(page) {
  await page.goto(`${URL_}/`);
  await page.locator('#token').waitFor();
  await page.fill('#token', ADMIN);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#session-role').filter({ hasText: 'Admin' }).waitFor();
}

/**
 * Answer the next requests to `path` (POST) with a 503 and note their Idempotency-Key headers:
 * what a request sent but lost looks like to the page.
 */
async function failPosts(page, path) {
  const keys = [];
  const matcher = (url) => url.pathname === path;
  const handler = async (route) => {
    if (route.request().method() !== 'POST') return route.continue();
    keys.push(route.request().headers()['idempotency-key'] || null);
    return route.fulfill({
      status: 503,
      contentType: 'application/problem+json',
      body: JSON.stringify({ type: 'about:blank', title: 'Service Unavailable', status: 503, code: 'unavailable', detail: 'try again' }),
    });
  };
  await page.route(matcher, handler);
  return { keys, stop: () => page.unroute(matcher, handler) };
}

/** Send the form twice around a change of language: both sends carry the same key. */
async function sameKeyAcrossSwitch(page, path, submit, errorBox, lang) {
  const posts = await failPosts(page, path);
  await page.click(submit);
  await page.locator(`${errorBox} :is(.problem, .alert)`).first().waitFor();
  await eventually(() => posts.keys.length, 1, `${path} was sent once`);
  await switchTo(page, lang);
  // The refusal shown stays: the server's words as they were, the page's own (its heading, not
  // the HTTP reason phrase) in the new language.
  await text(page, `${errorBox} .alert`, `${lang === 'sv' ? 'Begäran misslyckades' : 'Request failed'} try again ${lang === 'sv' ? 'Kod' : 'Code'}: unavailable`,
    `${errorBox} still shows the error after the switch`);
  await page.click(submit);
  await eventually(() => posts.keys.length, 2, `${path} was sent again`);
  await posts.stop();
  check(Boolean(posts.keys[0]), `${path} carries an Idempotency-Key`);
  check(posts.keys[0] === posts.keys[1], `${path} sent again after the switch keeps its Idempotency-Key: ${posts.keys}`);
}

async function chips(page) {
  return page.locator('#groups-chosen .chip').evaluateAll((cs) => cs.map((c) => c.firstChild.textContent));
}

async function skusTicked(page, list) {
  return page.locator(`${list} input[data-sku]:checked`).evaluateAll((is) => is.map((i) => i.dataset.sku).sort());
}

await drive(async ({ newPage: open, shot }) => {
  const newPage = (viewport, label) => open(viewport, label, { locale: 'en-GB' });
  step('set up through the API: licenses with seats held, a term license with started seats');
  const users = (await ok('GET', '/v1/directory/users?limit=6')).data;
  check(users.length >= 4, 'the demo directory has users');
  const seats = await ok('POST', '/v1/licenses', { name: 'Draft Seats', seats: 8, notes: 'to check out' });
  const edited = await ok('POST', '/v1/licenses', { name: 'Edit Me', seats: 3, notes: 'before' });
  const back = await ok('POST', '/v1/licenses', { name: 'Draft Checkin', seats: 5 });
  const few = await ok('POST', '/v1/licenses', { name: 'Two Seats', seats: 2 });
  const a1 = await ok('POST', `/v1/licenses/${back.id}/checkout`, { assignee: { type: 'asset', id: 'LT-A1', name: 'Laptop A1' } });
  const a2 = await ok('POST', `/v1/licenses/${back.id}/checkout`, { assignee: { type: 'asset', id: 'LT-A2', name: 'Laptop A2' } });
  const term = await termLicenseWithTwoEndDates('Draft Term', [users[0], users[1]]);

  const { page } = await newPage(DESKTOP, 'desktop');
  // Each form is a section of its own: one that fails is reported and the next still runs, in
  // English with no request held back.
  const failed = [];
  const section = async (name, body, on = page) => {
    step(name);
    try {
      await body();
    } catch (e) {
      failed.push(`${name}: ${e.message.split('\n')[0]}`);
      console.error(`  FAILED: ${e.message}`);
      await on.unrouteAll({ behavior: 'ignoreErrors' });
      if (await on.evaluate(() => document.documentElement.lang) !== 'en') await switchTo(on, 'en');
    }
  };

  // --- sign-in ---------------------------------------------------------------------------------
  await section('sign-in: the token typed stays through a switch', async () => {
    await page.goto(`${URL_}/`);
    await page.locator('#token').waitFor();
    await page.fill('#token', 'not-yet-sent');
    await switchTo(page, 'sv');
    await page.getByRole('heading', { name: 'Logga in i jobbövervakningen' }).waitFor();
    await value(page, '#token', 'not-yet-sent');
    await switchTo(page, 'en');
  });
  await signIn(page);

  // --- New job -----------------------------------------------------------------------------
  const packItem = page.locator('#add-licenses li.sku:has(input[data-sku="ENTERPRISEPACK"])');
  let planName = null;
  const assignKept = async (lang) => {
    const sv = lang === 'sv';
    await text(page, 'h1', sv ? 'Nytt jobb' : 'New job');
    await checked(page, '.kind-picker input[value="assign"]', true);
    await text(page, '.kind-picker label:has(input[value="assign"])', sv ? 'Tilldela licenser' : 'Assign Licenses');
    await text(page, '#launch-submit', sv ? 'Lägg till' : 'Add');
    await eventually(() => chips(page), ['Sales', 'Platform Team'], 'the groups chosen');
    await checked(page, '#transitive', true);
    await text(page, 'label.check:has(#transitive)', sv
      ? 'Ta med underliggande grupper (medlemmar i grupper inuti de valda grupperna)'
      : 'Include nested groups (members of groups inside the selected groups)');
    await eventually(() => skusTicked(page, '#add-licenses'), ['ENTERPRISEPACK', 'EXCHANGESTANDARD'], 'the licenses to add');
    check(await packItem.locator('details.plans').evaluate((d) => d.open), 'the service plans stay unfolded');
    await checked(page, `#add-licenses li.sku:has(input[data-sku="ENTERPRISEPACK"]) details.plans li:has-text("${planName}") input`, false, `plan ${planName} stays off`);
    const summary = await packItem.locator('details.plans summary').innerText();
    check(sv ? /^Tjänsteplaner: \d+ av \d+ på$/.test(summary) : /^Service plans: \d+ of \d+ on$/.test(summary), `plans summary in ${lang}: ${summary}`);
    await checked(page, '#expires-on', true);
    await value(page, '#expires-value', '14');
    await value(page, '#expires-unit', 'weeks');
    await text(page, '#expires-unit option:checked', sv ? 'veckor' : 'weeks');
    await text(page, 'label.check:has(#expires-on)', sv ? 'Licensen upphör om' : 'License will expire in');
    await checked(page, '#canary-on', true);
    await text(page, 'label.check:has(#canary-on)', sv ? 'Prova på 50 medlemmar först' : 'Try on 50 members first');
    await value(page, '#usage-location', 'other');
    await text(page, '#usage-location option:checked', sv ? 'Annan landskod…' : 'Other country code…');
    await value(page, '#usage-location-code', 'XK');
    await value(page, '#group-search', 'Eng');
    await page.locator('#group-results input[data-group="Engineering"]').waitFor();
  };
  await section('New job, Assign: groups, nesting, licenses and a plan off, expiry, canary, other location, search text', async () => {
    await go(page, '#/new', '#launch-submit');
    for (const name of ['Sales', 'Platform Team']) {
      await page.fill('#group-search', name);
      const box = page.locator(`#group-results input[data-group="${name}"]`);
      await box.waitFor();
      await box.check();
      await page.locator('#groups-chosen .chip', { hasText: name }).waitFor();
    }
    await page.check('#transitive');
    const pack = page.locator('#add-licenses input[data-sku="ENTERPRISEPACK"]');
    await pack.check();
    await page.locator('#add-licenses input[data-sku="EXCHANGESTANDARD"]').check();
    await packItem.locator('details.plans summary').click();
    const plan = packItem.locator('details.plans li input').first();
    planName = (await packItem.locator('details.plans li').first().innerText()).trim();
    await plan.uncheck();
    await page.check('#expires-on');
    await page.fill('#expires-value', '14');
    await page.selectOption('#expires-unit', 'weeks');
    await page.check('#canary-on');
    await page.selectOption('#usage-location', 'other');
    await page.fill('#usage-location-code', 'xk');
    await page.fill('#group-search', 'Eng');
    await page.locator('#group-results input[data-group="Engineering"]').waitFor();

    await switchTo(page, 'sv');
    await assignKept('sv');
    await shot(page, 'new-job-assign-sv-1280', { fullPage: true });
    await switchTo(page, 'en');
    await assignKept('en');
  });

  await section('New job, Replace: some licenses picked from what the members hold, then Replace all', async () => {
    await page.locator('.kind-picker label:has(input[value="replace"])').click();
    const held = page.locator('#remove-licenses input[type="checkbox"]');
    await held.first().waitFor();
    const replaced = await held.first().getAttribute('data-sku');
    await held.first().check();
    await switchTo(page, 'sv');
    await text(page, '#licenses h2', 'Licenser att ersätta');
    await checked(page, '.kind-picker input[value="replace"]', true);
    await checked(page, 'input[name="replace-mode"][value="some"]', true);
    await eventually(() => skusTicked(page, '#remove-licenses'), [replaced], 'the license picked to be replaced');
    await eventually(() => skusTicked(page, '#add-licenses'), ['ENTERPRISEPACK', 'EXCHANGESTANDARD'], 'the replacements');
    await eventually(() => chips(page), ['Sales', 'Platform Team'], 'the groups chosen');
    await page.locator('label.check:has(input[name="replace-mode"][value="all"])').click();
    await switchTo(page, 'en');
    await checked(page, 'input[name="replace-mode"][value="all"]', true);
    await text(page, 'label.check:has(input[name="replace-mode"][value="all"])', 'Replace all of the licenses');
    await page.locator('label.check:has(input[name="replace-mode"][value="some"])').click();
    await eventually(() => skusTicked(page, '#remove-licenses'), [replaced], 'the license picked to be replaced, after Replace all and back');
  });

  await section('New job, Export: format and an S3 location; a request sent again after a switch keeps its key', async () => {
    await page.locator('.kind-picker label:has(input[value="export"])').click();
    await page.locator('label.check:has(input[name="export-format"][value="json"])').click();
    await page.locator('label.check:has(input[name="export-location"][value="s3"])').click();
    await page.fill('#export-bucket', 'licensor-exports');
    await page.fill('#export-prefix', 'drafts/');
    await switchTo(page, 'sv');
    await checked(page, '.kind-picker input[value="export"]', true);
    await text(page, '#launch-submit', 'Exportera');
    await checked(page, 'input[name="export-format"][value="json"]', true);
    await checked(page, 'input[name="export-location"][value="s3"]', true);
    await text(page, '#options legend >> nth=1', 'Exportplats');
    await value(page, '#export-bucket', 'licensor-exports');
    await value(page, '#export-prefix', 'drafts/');
    await sameKeyAcrossSwitch(page, '/v1/jobs', '#launch-submit', '#launch-error', 'en');
    await page.locator('.kind-picker label:has(input[value="assign"])').click();
    await assignKept('en');
  });

  // --- the license form --------------------------------------------------------------------
  await section('New license: every field stays through a switch; a create sent again keeps its key', async () => {
    await go(page, '#/licenses/new', '#lic-name');
    await page.fill('#lic-name', 'Draft CAD');
    await page.fill('#lic-seats', '7');
    await page.uncheck('#lic-reassignable');
    await page.fill('#lic-term', '30');
    await page.fill('#lic-delivered', '2026-01-15');
    await page.fill('#lic-notes', 'Ritkontoret');
    const licenseKept = async (lang) => {
      const sv = lang === 'sv';
      await text(page, 'h1', sv ? 'Ny licens' : 'New license');
      await text(page, 'label[for="lic-name"]', sv ? 'Namn' : 'Name');
      await text(page, 'label[for="lic-seats"]', sv ? 'Licenser' : 'Seats');
      await text(page, 'label[for="lic-term"]', sv ? 'Licenstid (dagar)' : 'Term (days)');
      await value(page, '#lic-name', 'Draft CAD');
      await value(page, '#lic-seats', '7');
      await checked(page, '#lic-reassignable', false);
      await value(page, '#lic-term', '30');
      await value(page, '#lic-delivered', '2026-01-15');
      await value(page, '#lic-notes', 'Ritkontoret');
    };
    await switchTo(page, 'sv');
    await licenseKept('sv');
    await sameKeyAcrossSwitch(page, '/v1/licenses', '#license-submit', '#license-error', 'en');
    await licenseKept('en');
  });

  await section('Edit license: the changes stay, not overwritten by the license read again', async () => {
    await go(page, `#/licenses/${edited.id}/edit`, '#lic-name');
    await value(page, '#lic-name', 'Edit Me', 'the license is read into the form');
    await page.fill('#lic-name', 'Edited Name');
    await page.fill('#lic-notes', 'after');
    await page.fill('#lic-seats', '4');
    await switchTo(page, 'sv');
    await text(page, 'h1', 'Ändra licens');
    await value(page, '#lic-name', 'Edited Name');
    await value(page, '#lic-notes', 'after');
    await value(page, '#lic-seats', '4');
    await page.waitForTimeout(500);
    await value(page, '#lic-name', 'Edited Name', 'the name stays after the license was read again');
    await switchTo(page, 'en');
  });

  // --- checkout ------------------------------------------------------------------------------
  await section('Checkout to an asset: tag, name, quantity, notes stay; then a user picked stays', async () => {
    await go(page, `#/licenses/${seats.id}/checkout`, '#checkout-submit');
    await page.locator('#checkout-figures .license-name').waitFor();
    await page.locator('label.seg:has(input[value="asset"])').click();
    await page.fill('#asset-id', 'LT-77');
    await page.fill('#asset-name', 'Laptop 77');
    await page.fill('#quantity', '2');
    await page.fill('#notes', 'Projekt X');
    const assetKept = async (lang) => {
      const sv = lang === 'sv';
      await text(page, 'h1', sv ? 'Tilldela licens' : 'Checkout License');
      await text(page, 'label[for="asset-id"]', sv ? 'Inventarienummer eller ID' : 'Asset tag or ID');
      await text(page, 'label[for="quantity"]', sv ? 'Antal' : 'Quantity');
      await value(page, '#asset-id', 'LT-77');
      await value(page, '#asset-name', 'Laptop 77');
      await value(page, '#quantity', '2');
      await value(page, '#notes', 'Projekt X');
    };
    await switchTo(page, 'sv');
    await checked(page, 'input[name="checkout-to"][value="asset"]', true);
    await text(page, 'label.seg:has(input[value="asset"])', 'Enhet');
    await assetKept('sv');
    await page.locator('label.seg:has(input[value="user"])').click();
    await page.fill('#user-search', users[2].display_name);
    const pick = page.locator(`#user-results input[value="${users[2].id}"]`);
    await pick.waitFor();
    await pick.check();
    await page.locator('#user-chosen .chip').waitFor();
    await switchTo(page, 'en');
    await checked(page, 'input[name="checkout-to"][value="user"]', true);
    await text(page, 'label.seg:has(input[value="user"])', 'User');
    await eventually(() => page.locator('#user-chosen .chip').evaluate((c) => c.firstChild.textContent), users[2].display_name, 'the user picked');
    await value(page, '#user-search', users[2].display_name);
    check(await page.locator('#user-results').isHidden(), 'the user list stays folded away once a user is picked');
    await value(page, '#quantity', '2');
    await value(page, '#notes', 'Projekt X');
    await page.locator('label.seg:has(input[value="asset"])').click();
    await assetKept('en');
    await sameKeyAcrossSwitch(page, `/v1/licenses/${seats.id}/checkout`, '#checkout-submit', '#checkout-error', 'sv');
    await assetKept('sv');
    await switchTo(page, 'en');
  });

  await section('Checkout of a term license: Reuse started license and the end date chosen stay', async () => {
    const [early, later] = term.started.data;
    await go(page, `#/licenses/${term.license.id}/checkout`, '#checkout-submit');
    await page.locator('#reuse-box input[value="reuse"]').waitFor();
    await page.locator('#reuse-box label.check:has(input[value="reuse"])').click();
    await page.selectOption('#ends-on', later.ends_on);
    await switchTo(page, 'sv');
    await checked(page, '#reuse-box input[value="reuse"]', true);
    await text(page, '#reuse-box label.check:has(input[value="reuse"])', `Återanvänd startad licens (${later.count + early.count})`);
    await value(page, '#ends-on', later.ends_on);
    await text(page, 'label[for="ends-on"]', 'Slutdatum');
    await switchTo(page, 'en');
    await value(page, '#ends-on', later.ends_on);
  });

  await section('Checkout reusing the last started seat of an end date, its answer lost: sent again (after a switch), the same request and key, one checkout', async () => {
    const lost = await termLicenseWithTwoEndDates('Lost Answer Term', [users[2], users[3]]);
    const last = lost.started.data.find((g) => g.count === 1);
    check(Boolean(last), 'an end date with one started seat');
    await go(page, `#/licenses/${lost.license.id}/checkout`, '#checkout-submit');
    await page.locator('#checkout-figures .license-name').waitFor();
    await page.locator('label.seg:has(input[value="asset"])').click();
    await page.fill('#asset-id', 'LT-LOST');
    await page.locator('#reuse-box input[value="reuse"]').waitFor();
    await page.locator('#reuse-box label.check:has(input[value="reuse"])').click();
    await page.selectOption('#ends-on', last.ends_on);
    // The first send reaches the server and is carried out; its answer is lost (a 503 instead).
    const sent = [];
    const path = `/v1/licenses/${lost.license.id}/checkout`;
    const matcher = (url) => url.pathname === path;
    await page.route(matcher, async (route) => {
      if (route.request().method() !== 'POST') return route.continue();
      sent.push({ key: route.request().headers()['idempotency-key'], body: route.request().postData() });
      if (sent.length === 1) {
        await route.fetch();
        return route.fulfill({
          status: 503,
          contentType: 'application/problem+json',
          body: JSON.stringify({ type: 'about:blank', title: 'Service Unavailable', status: 503, code: 'unavailable', detail: 'try again' }),
        });
      }
      return route.continue();
    });
    await page.click('#checkout-submit');
    await page.locator('#checkout-error :is(.problem, .alert)').first().waitFor();
    await eventually(() => sent.length, 1, 'the checkout was sent once');
    // The page reads the license again: the date chosen has no started seat left now.
    await switchTo(page, 'sv');
    await value(page, '#ends-on', last.ends_on, 'the end date chosen stays chosen, though its seat is gone');
    await page.click('#checkout-submit');
    await eventually(() => sent.length, 2, 'the checkout was sent again');
    await page.unrouteAll({ behavior: 'ignoreErrors' });
    check(sent[0].key && sent[0].key === sent[1].key, `sent again with the same Idempotency-Key: ${sent.map((x) => x.key)}`);
    check(sent[0].body === sent[1].body, `sent again with the same request: ${sent[0].body} / ${sent[1].body}`);
    const held = await ok('GET', `/v1/assignees/asset/LT-LOST/assignments`);
    const seats = held.data.filter((a) => a.license_id === lost.license.id).reduce((n, a) => n + a.quantity, 0);
    check(seats === 1, `the asset holds one seat of the license, not ${seats}`);
    await switchTo(page, 'en');
  });

  // --- Used By and checkin -------------------------------------------------------------------
  await section('Used By: the rows ticked stay ticked; Checkin License: the notes stay, a checkin sent again keeps its key', async () => {
    await go(page, `#/licenses/${back.id}/used-by`, '.assignment-check');
    await page.locator(`tr[data-assignment-id="${a1.id}"] .assignment-check`).check();
    await page.locator(`tr[data-assignment-id="${a2.id}"] .assignment-check`).check();
    await switchTo(page, 'sv');
    await text(page, '#bulk-bar .bulk-count', '2 valda');
    await checked(page, `tr[data-assignment-id="${a1.id}"] .assignment-check`, true);
    await checked(page, `tr[data-assignment-id="${a2.id}"] .assignment-check`, true);
    await switchTo(page, 'en');
    await text(page, '#bulk-bar .bulk-count', '2 selected');
    await page.click('#bulk-checkin');
    await page.locator('#checkin-list li').first().waitFor();
    await page.fill('#checkin-notes', 'Tillbaka till förrådet');
    await switchTo(page, 'sv');
    await text(page, 'h1', 'Dra tillbaka licens');
    await text(page, 'label[for="checkin-notes"]', 'Anteckningar');
    await value(page, '#checkin-notes', 'Tillbaka till förrådet');
    await eventually(() => page.locator('#checkin-list li').count(), 2, 'both assignments are still to be checked in');
    await sameKeyAcrossSwitch(page, `/v1/licenses/${back.id}/checkin`, '#checkin-submit', '#checkin-error', 'en');
    await value(page, '#checkin-notes', 'Tillbaka till förrådet');
    await text(page, 'h1', 'Checkin License');
  });

  await section('Everything an asset holds: the notes stay', async () => {
    await go(page, '#/assignees/asset/LT-A1', '#holder-notes');
    await page.fill('#holder-notes', 'Utrangerad');
    await switchTo(page, 'sv');
    await text(page, '#holder-action h2', 'Dra tillbaka allt som enheten har');
    await value(page, '#holder-notes', 'Utrangerad');
    await switchTo(page, 'en');
    await value(page, '#holder-notes', 'Utrangerad');
  });

  await section('Licenses: the search text stays, searched for even when typed just before the switch', async () => {
    await go(page, '#/licenses', '#licenses-table');
    await page.fill('#license-search', 'Draft Seats');
    await switchTo(page, 'sv');
    await text(page, 'h1', 'Hantera licenser');
    await value(page, '#license-search', 'Draft Seats');
    await eventually(() => page.locator('#licenses-table tbody tr').evaluateAll((rs) => rs.every((r) => r.dataset.name === 'Draft Seats') && rs.length > 0),
      true, 'the list holds what the search finds');
    await switchTo(page, 'en');
    await value(page, '#license-search', 'Draft Seats');
  });

  // --- the Job Monitor -----------------------------------------------------------------------
  await section('Job Monitor: the search text and a job ticked stay; the job page keeps its members filter', async () => {
    await go(page, '#/', '#jobs-table .job-check');
    await page.fill('#monitor-search', 'sales');
    const job = page.locator('#jobs-table .job-check').first();
    const jobId = await page.locator('#jobs-table tr:has(.job-check)').first().getAttribute('data-job-id');
    await job.check();
    await switchTo(page, 'sv');
    await text(page, 'h1', 'Jobbövervakning');
    await value(page, '#monitor-search', 'sales');
    await checked(page, `#jobs-table tr[data-job-id="${jobId}"] .job-check`, true);
    await text(page, '#start', 'Starta (1)');
    await switchTo(page, 'en');
    await text(page, '#start', 'Start (1)');
    await go(page, `#/jobs/${jobId}`, '[data-item-status="all"]');
    await eventually(() => page.locator('[data-item-status="failed"]').getAttribute('aria-pressed'), 'true', 'a job with failures opens on its failed members');
    await page.click('[data-item-status="all"]');
    await eventually(() => page.locator('[data-item-status="all"]').getAttribute('aria-pressed'), 'true', 'All members shown');
    await switchTo(page, 'sv');
    await page.locator('#items').first().waitFor();
    await page.waitForTimeout(500);
    await eventually(() => page.locator('[data-item-status="all"]').getAttribute('aria-pressed'), 'true', 'All members still shown after the switch');
    await switchTo(page, 'en');
  });

  // --- errors shown on forms ----------------------------------------------------------------
  await section('An error shown stays through a switch, in the new language: the web app\'s own message and a refusal it knows by code', async () => {
    await go(page, '#/', '#monitor-search');
    await go(page, '#/new', '#launch-submit');
    await page.click('#launch-submit');
    await text(page, '#launch-error .alert', 'Select at least one group.');
    await switchTo(page, 'sv');
    await text(page, '#launch-error .alert', 'Välj minst en grupp.', 'the message shown, in Swedish');
    await switchTo(page, 'en');
    await text(page, '#launch-error .alert', 'Select at least one group.', 'the message shown, in English again');

    await go(page, `#/licenses/${few.id}/checkout`, '#checkout-submit');
    await page.locator('#checkout-figures .license-name').waitFor();
    await page.locator('label.seg:has(input[value="asset"])').click();
    await page.fill('#asset-id', 'LT-OOS');
    await page.fill('#quantity', '3');
    await page.click('#checkout-submit');
    await text(page, '#checkout-error .alert strong', 'Out of stock');
    await switchTo(page, 'sv');
    await text(page, '#checkout-error .alert strong', 'Slut i lager', 'out_of_stock, known by its code, in Swedish');
    await page.locator('#checkout-error').getByText('Licenser som är slut i lager kan inte tilldelas.').waitFor();
    await page.locator('#checkout-error').getByText('Kod: out_of_stock').waitFor();
    await value(page, '#quantity', '3');
    await switchTo(page, 'en');
    await text(page, '#checkout-error .alert strong', 'Out of stock');
  });

  // --- a member's history on a phone ----------------------------------------------------------
  const phone = await newPage(PHONE, 'phone');
  await signIn(phone.page);
  for (const lang of ['en', 'sv']) {
    await section(`member history at 390 px in ${lang}: the status badge clear of the Groups value, status words on one line (${MEMBER})`, async () => {
      if (await phone.page.evaluate(() => document.documentElement.lang) !== lang) await switchTo(phone.page, lang);
      await go(phone.page, `#/members/${encodeURIComponent(MEMBER)}`, '#history-table tbody tr');
      await text(phone.page, '#history-table tbody tr td:nth-child(4) .status',
        lang === 'sv' ? 'Klart med undantag' : 'Finished with Exception');
      await text(phone.page, '#history-table tbody tr td:nth-child(6) .item-status', lang === 'sv' ? 'Lyckades' : 'Succeeded');
      // The 4th cell is the job status, the 5th the groups, the 6th the member's outcome.
      const boxes = await phone.page.locator('#history-table tbody tr').evaluateAll((rows) => rows.map((tr) => {
        const box = (el) => {
          const r = el.getBoundingClientRect();
          return { left: r.left, right: r.right, top: r.top, bottom: r.bottom };
        };
        /** How many lines an element's text takes. */
        const lines = (el) => {
          const range = document.createRange();
          range.selectNodeContents(el);
          return new Set([...range.getClientRects()].filter((r) => r.width > 0).map((r) => Math.round(r.top))).size;
        };
        const badge = tr.querySelector('td:nth-child(4) .status');
        const groups = tr.querySelector('td:nth-child(5)');
        const outcome = tr.querySelector('td:nth-child(6) .item-status');
        return {
          badge: box(badge), groups: box(groups), badgeLines: lines(badge), badgeText: badge.textContent,
          outcomeLines: lines(outcome), outcomeText: outcome.textContent, row: box(tr),
        };
      }));
      for (const [i, b] of boxes.entries()) {
        const apart = b.badge.right <= b.groups.left || b.groups.right <= b.badge.left
          || b.badge.bottom <= b.groups.top || b.groups.bottom <= b.badge.top;
        check(apart, `row ${i}: the badge ${JSON.stringify(b.badge)} overlaps the Groups value ${JSON.stringify(b.groups)}`);
        check(b.badgeLines === 1, `row ${i}: "${b.badgeText}" on one line (${b.badgeLines})`);
        check(b.outcomeLines === 1, `row ${i}: "${b.outcomeText}" on one line (${b.outcomeLines})`);
        check(b.badge.left >= b.row.left && b.badge.right <= b.row.right, `row ${i}: the badge stays inside its card`);
      }
      await fitsWidth(phone.page, `history at 390 px (${lang})`);
      await shot(phone.page, `history-390-${lang}`, { fullPage: true });
    }, phone.page);
  }
  // --- the header at every width, in both languages -------------------------------------------
  for (const width of [1024, 860, 800, 768, 700, 390, 360, 320]) {
    await section(`the header at ${width} px: the language picker in view, no sideways scroll, in English and Swedish`, async () => {
      await phone.page.setViewportSize({ width, height: 800 });
      for (const lang of ['en', 'sv']) {
        if (await phone.page.evaluate(() => document.documentElement.lang) !== lang) await switchTo(phone.page, lang);
        await go(phone.page, '#/', '#nav a[data-nav="jobs"]');
        const lang_ = await phone.page.locator('#lang').boundingBox();
        check(lang_ && lang_.x >= 0 && lang_.x + lang_.width <= width + 1, `${width} px, ${lang}: the language picker ${JSON.stringify(lang_)} is in view`);
        const navLines = await phone.page.locator('#nav a').evaluateAll((links) => links.map((a) => {
          const range = document.createRange();
          range.selectNodeContents(a);
          return new Set([...range.getClientRects()].filter((r) => r.width > 0).map((r) => Math.round(r.top))).size;
        }));
        check(navLines.every((n) => n === 1), `${width} px, ${lang}: each section link on one line (${navLines})`);
        await fitsWidth(phone.page, `the Job Monitor at ${width} px (${lang})`);
      }
      await switchTo(phone.page, 'en');
    }, phone.page);
  }
  await phone.page.setViewportSize(PHONE);

  check(failed.length === 0, `every section passed; these did not:\n  ${failed.join('\n  ')}`);
});
