// Previews in the Job Monitor, driven through headless Chromium as a tenant admin at a desk and
// on a phone. Started by tests/preview_web.rs with, besides what harness.mjs reads:
//   EXPECTED_HELD      {"SKU part number": [direct, inherited], ...}: what Sales members hold,
//                      as the directory emulator says
//   SALES_MEMBERS      how many members Sales has
//   E5_FREE            free SPE_E5 units before the job, as the emulator says
//   ALL_STAFF_MEMBERS  how many members All Staff has
// Exits 0 when every step passed; otherwise prints the failed step and exits 1.

import {
  URL_, ADMIN, DESKTOP, PHONE, step, check, fitsWidth, drive, need,
} from './harness.mjs';

const EXPECTED_HELD = JSON.parse(need('EXPECTED_HELD'));
const SALES_MEMBERS = Number(need('SALES_MEMBERS'));
const E5_FREE = Number(need('E5_FREE'));
const ALL_STAFF_MEMBERS = Number(need('ALL_STAFF_MEMBERS'));
const JOB_DONE_MS = 480_000;
const PREVIEW_MS = 180_000;

const en = (n) => new Intl.NumberFormat('en-GB').format(n);
const sv = (n) => new Intl.NumberFormat('sv-SE').format(n);
const OUTCOME_STATUS = { would_succeed: 'succeeded', would_skip: 'skipped', would_fail: 'failed' };

async function apiGet(path) {
  const resp = await fetch(`${URL_}${path}`, { headers: { Authorization: `Bearer ${ADMIN}` } });
  check(resp.ok, `GET ${path} answered ${resp.status}`);
  return resp.json();
}

async function signIn(page) {
  await page.goto(`${URL_}/`);
  await page.getByRole('heading', { name: 'Sign in to the Job Monitor' }).waitFor();
  await page.fill('#token', ADMIN);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#session-role').filter({ hasText: 'Admin' }).waitFor();
}

async function newJob(page) {
  await page.evaluate(() => { window.location.hash = '#/new'; });
  await page.locator('#launch-submit').waitFor();
}

/** Choose the kind of job by its radio (whatever the language). */
async function kind(page, value) {
  await page.locator('.kind-picker label', { has: page.locator(`input[value="${value}"]`) }).click();
  check(await page.locator(`.kind-picker input[value="${value}"]`).isChecked(), `${value} chosen`);
}

async function pickGroup(page, name) {
  await page.fill('#group-search', name);
  const box = page.locator(`#group-results input[data-group="${name}"]`);
  await box.waitFor();
  await box.check();
  await page.locator('#groups-chosen .chip', { hasText: name }).waitFor();
}

async function dropGroup(page, name) {
  await page.locator('#groups-chosen .chip', { hasText: name }).locator('.chip-x').click();
  await page.locator('#groups-chosen .chip', { hasText: name }).waitFor({ state: 'detached' });
}

/** The Remove picker lists exactly what Sales members hold, with the emulator's counts. */
async function checkHeldList(page, note) {
  step('while the counts load, the page says so');
  await page.locator('#held-loading').waitFor();
  await page.locator('#remove-licenses input[data-sku]').first().waitFor();
  const listed = await page.locator('#remove-licenses input[data-sku]').evaluateAll((inputs) => inputs.map((i) => ({
    sku: i.dataset.sku, direct: Number(i.dataset.direct), inherited: Number(i.dataset.inherited),
    text: i.closest('li').innerText,
  })));
  step(`listed: ${listed.map((l) => `${l.sku} ${l.direct}/${l.inherited}`).join(', ')}`);
  const want = Object.keys(EXPECTED_HELD).sort();
  check(JSON.stringify(listed.map((l) => l.sku).sort()) === JSON.stringify(want),
    `the picker lists only what Sales members hold: ${listed.map((l) => l.sku)} vs ${want}`);
  for (const l of listed) {
    const [direct, inherited] = EXPECTED_HELD[l.sku];
    check(l.direct === direct && l.inherited === inherited, `${l.sku}: ${l.direct}/${l.inherited} listed, the directory says ${direct}/${inherited}`);
  }
  const text = await page.locator('#held-note').innerText();
  check(text === note, `the note says "${note}": "${text}"`);
  return listed;
}

/** The preview the open dialog shows, as the API has it. */
async function dialogPreview(page) {
  const dialog = page.locator('#preview-dialog');
  await dialog.locator('#preview-summary').waitFor({ timeout: PREVIEW_MS });
  const id = await dialog.getAttribute('data-job');
  check(/^[0-9a-f-]{36}$/.test(id || ''), `the dialog names its preview: ${id}`);
  const job = await apiGet(`/v1/jobs/${id}`);
  check(job.status === 'previewed', `the preview is previewed: ${job.status}`);
  return { dialog, id, job, p: job.preview };
}

/** The usage location picker's countries as the page lists them: `[[code, text], ...]`, without No Change and Other. */
async function countryOptions(page) {
  await page.locator('#usage-location').waitFor();
  const options = await page.locator('#usage-location option').evaluateAll((os) => os.map((o) => [o.value, o.textContent]));
  return options.filter(([code]) => /^[A-Z]{2}$/.test(code));
}

function countOf(p, code) {
  return (p.failures || []).find((f) => f.code === code)?.count || 0;
}

await drive(async ({ newPage, shot }) => {
  const { page } = await newPage(DESKTOP, 'desktop');
  step('sign in as admin; New job, Remove Licenses for Sales');
  await signIn(page);
  await newJob(page);
  await page.locator('.kind-picker label', { hasText: 'Remove Licenses' }).click();
  await page.locator('#remove-licenses', { hasText: 'Choose groups first' }).waitFor();
  await pickGroup(page, 'Sales');
  const listed = await checkHeldList(page, `Counted from all ${en(SALES_MEMBERS)} members.`);
  for (const l of listed) {
    const parts = [];
    if (l.direct) parts.push(`${en(l.direct)} member${l.direct === 1 ? '' : 's'} directly`);
    if (l.inherited) parts.push(`${en(l.inherited)} member${l.inherited === 1 ? '' : 's'} through a group`);
    check(l.text.includes(parts.join(' · ')), `${l.sku} reads "${parts.join(' · ')}": ${l.text}`);
  }
  await shot(page, 'remove-held-1280', { fullPage: true });

  // --- on a phone, in Swedish (before the job below changes what Sales members hold) --------
  step('phone 390×844 in Swedish: the Remove picker for Sales');
  const phone = (await newPage(PHONE, 'phone', { isMobile: true, hasTouch: true, deviceScaleFactor: 2 })).page;
  await signIn(phone);
  await phone.selectOption('#lang', 'sv');
  await newJob(phone);
  await kind(phone, 'remove');
  await pickGroup(phone, 'Sales');
  await checkHeldList(phone, `Räknat på alla ${sv(SALES_MEMBERS)} medlemmar.`);
  await fitsWidth(phone, 'Remove picker at 390');
  await shot(phone, 'remove-held-390', { fullPage: true });

  // --- back at the desk -----------------------------------------------------------------------
  step('Assign Licenses: SPE_E5 for All Staff; Add shows the preview being computed');
  await page.locator('.kind-picker label', { hasText: 'Assign Licenses' }).click();
  const enCountries = Object.fromEntries(await countryOptions(page));
  check(enCountries.SE === 'Sweden (SE)' && enCountries.DE === 'Germany (DE)', `English country names: ${enCountries.SE}, ${enCountries.DE}`);
  await dropGroup(page, 'Sales');
  await pickGroup(page, 'All Staff');
  await page.locator('#add-licenses input[data-sku="SPE_E5"]').check();
  const plans = (await page.locator('#add-licenses li.picked details.plans li').allTextContents()).map((p) => p.trim());
  check(plans.includes('TEAMS1') && plans.includes('MCOEV'), `SPE_E5's service plans by name: ${plans}`);
  await page.locator('#launch-submit', { hasText: 'Add' }).click();
  await page.locator('#preview-dialog #preview-computing').waitFor();
  await shot(page, 'preview-computing-1280');

  step('the summary and the shortage prompt, with the numbers of the API and the directory');
  const { dialog, id, p } = await dialogPreview(page);
  const e5 = p.skus.find((s) => s.sku_part_number === 'SPE_E5');
  check(p.members === ALL_STAFF_MEMBERS, `the preview has ${p.members} members, All Staff ${ALL_STAFF_MEMBERS}`);
  check(e5.free === E5_FREE, `the preview says ${e5.free} SPE_E5 units are free, the directory ${E5_FREE}`);
  check(e5.shortfall === e5.needed - e5.free && e5.shortfall > 0, `a shortfall: ${JSON.stringify(e5)}`);
  const failing = countOf(p, 'count_violation');
  const prompt = await dialog.locator('#shortage').innerText();
  step(`prompt: ${prompt.replace(/\s+/g, ' ')}`);
  const wanted = `Needs ${en(e5.shortfall)} more SPE_E5 units than are free: ${en(failing)} members would fail.`;
  check(prompt.includes('No more available licenses'), 'the prompt is the seed\'s "no more available licenses"');
  check(prompt.includes(wanted), `the prompt says "${wanted}"`);
  const fact = async (key) => (await dialog.locator(`[data-fact="${key}"]`).innerText()).trim();
  check((await fact('members')).startsWith(en(p.members)), `members: ${await fact('members')}`);
  check((await fact('would_fail')).startsWith(en(p.would_fail)), `would fail: ${await fact('would_fail')}`);
  check((await fact('would_succeed')).startsWith(en(p.would_succeed)), `would succeed: ${await fact('would_succeed')}`);
  check((await fact('no_location')).startsWith(en(p.usage_location.missing)), `no location: ${await fact('no_location')}`);
  check((await fact('already_done')).startsWith(en(p.already_done)) && p.already_done > 0, `already done: ${await fact('already_done')}`);
  const row = (await dialog.locator('#preview-skus tr[data-sku="SPE_E5"]').innerText()).replace(/\s+/g, ' ');
  check(row.includes(en(e5.needed)) && row.includes(en(e5.free)) && row.includes(en(e5.shortfall)), `the SKU row: ${row}`);
  for (const f of p.failures) {
    check((await dialog.locator(`#preview-failures li[data-code="${f.code}"]`).innerText()).includes(en(f.count)), `failures ${f.code}`);
  }
  const launchButton = dialog.locator('#preview-launch');
  check((await launchButton.innerText()) === 'Launch anyway', 'with failures predicted, the button says Launch anyway');
  await shot(page, 'preview-shortage-1280');

  step('Launch anyway opens the job page, which shows the run and the preview');
  await launchButton.click();
  await page.waitForURL(new RegExp(`#/jobs/${id}$`));
  await page.getByRole('heading', { name: /Assign Licenses/ }).waitFor();
  await page.locator('#preview h2', { hasText: 'Preview' }).waitFor();
  await page.locator('h1 [data-status="finished_with_exception"]').waitFor({ timeout: JOB_DONE_MS });
  await page.locator('#preview-when', { hasText: 'launched' }).waitFor();
  await page.locator('#runs-table tbody tr').first().waitFor();
  check(!(await page.locator('#errors').innerText()).includes('Nothing has run yet'), 'a launched job is no preview any more');

  step('each member\'s outcome is its prediction (failed members first, then all)');
  for (const filter of ['failed', 'all']) {
    await page.locator(`[data-item-status="${filter}"]`).click();
    await page.waitForFunction((f) => {
      const rows = [...document.querySelectorAll('#items-table tbody tr')];
      return rows.length > 0 && (f === 'all' || rows.every((r) => r.dataset.status === f));
    }, filter);
    const rows = await page.locator('#items-table tbody tr').evaluateAll((trs) => trs.map((tr) => ({
      status: tr.dataset.status,
      outcome: tr.querySelector('.prediction')?.dataset.outcome,
      code: tr.querySelector('.col-error code')?.textContent || '',
      predictedCode: tr.querySelector('.col-predicted code')?.textContent || '',
    })));
    check(rows.length > 0, `${filter}: rows`);
    for (const r of rows) {
      check(OUTCOME_STATUS[r.outcome] === r.status, `${filter}: predicted ${r.outcome}, ended ${r.status}`);
      if (r.status === 'failed') check(r.code === r.predictedCode, `predicted ${r.predictedCode}, failed with ${r.code}`);
    }
    step(`${filter}: ${rows.length} members as predicted`);
  }
  await shot(page, 'job-launched-1280', { fullPage: true });

  // --- on the phone, in Swedish, again ----------------------------------------------------
  step('the usage location picker in Swedish: the countries\' Swedish names, in Swedish order');
  await kind(phone, 'assign');
  const svCountries = await countryOptions(phone);
  const svNamed = Object.fromEntries(svCountries);
  check(svNamed.SE === 'Sverige (SE)', `SE is Sverige: ${svNamed.SE}`);
  check(svNamed.DE === 'Tyskland (DE)', `DE is Tyskland: ${svNamed.DE}`);
  check(svCountries.at(-1)?.[0] === 'AT' && svCountries.at(-1)?.[1] === 'Österrike (AT)', `Österrike comes last, after Z: ${JSON.stringify(svCountries.at(-1))}`);
  await phone.selectOption('#usage-location', 'SE');
  check((await phone.locator('#usage-location option:checked').innerText()) === 'Sverige (SE)', 'Sverige is shown once chosen');
  await phone.selectOption('#usage-location', '');

  step('the shortage prompt in Swedish; Cancel cancels the preview and stays in the form');
  await dropGroup(phone, 'Sales');
  await pickGroup(phone, 'All Staff');
  await phone.locator('#add-licenses input[data-sku="SPE_E5"]').check();
  await phone.locator('#launch-submit').click();
  const second = await dialogPreview(phone);
  const e5b = second.p.skus.find((s) => s.sku_part_number === 'SPE_E5');
  const svPrompt = await second.dialog.locator('#shortage').innerText();
  const svWanted = `Behöver ${sv(e5b.shortfall)} fler SPE_E5-enheter än det finns lediga: ${sv(countOf(second.p, 'count_violation'))} medlemmar skulle misslyckas.`;
  check(svPrompt.includes('Inga fler tillgängliga licenser'), `Swedish prompt title: ${svPrompt}`);
  check(svPrompt.includes(svWanted), `the Swedish prompt says "${svWanted}": ${svPrompt}`);
  check((await second.dialog.locator('#preview-launch').innerText()) === 'Starta ändå', 'Starta ändå');
  await fitsWidth(phone, 'preview at 390');
  await shot(phone, 'preview-shortage-390');

  step('two SKUs short: the Swedish prompt names each with the members who would fail for want of it');
  const two = await phone.evaluate(async () => {
    const { shortagePrompt } = await import('/assets/js/preview.js');
    const summary = {
      skus: [
        { sku_id: 'a', sku_part_number: 'SPE_E5', needed: 4900, free: 100, shortfall: 4800, short_members: 4700 },
        { sku_id: 'b', sku_part_number: 'EXCHANGESTANDARD', needed: 1051, free: 50, shortfall: 1001, short_members: 1 },
        { sku_id: 'c', sku_part_number: 'ENTERPRISEPACK', needed: 10, free: 20, shortfall: 0, short_members: 0 },
      ],
      failures: [{ code: 'count_violation', count: 4701 }],
    };
    const el = shortagePrompt(summary, (id) => id);
    return [...el.querySelectorAll('li[data-sku]')].map((li) => [li.dataset.sku, li.innerText]);
  });
  step(`lines: ${JSON.stringify(two)}`);
  check(two.length === 2, `one line per short SKU: ${JSON.stringify(two)}`);
  check(two[0][0] === 'SPE_E5' && two[0][1] === `Behöver ${sv(4800)} fler SPE_E5-enheter än det finns lediga: ${sv(4700)} medlemmar skulle misslyckas i brist på dem.`, `SPE_E5 line: ${two[0][1]}`);
  check(two[1][0] === 'EXCHANGESTANDARD' && two[1][1] === `Behöver ${sv(1001)} fler EXCHANGESTANDARD-enheter än det finns lediga: 1 medlem skulle misslyckas i brist på dem.`, `EXCHANGESTANDARD line: ${two[1][1]}`);

  step('meanwhile, the preview\'s own page at the desk: its summary, predictions, Launch anyway and Cancel');
  await page.evaluate((jobId) => { window.location.hash = `#/jobs/${jobId}`; }, second.id);
  await page.locator('h1 [data-status="previewed"]').waitFor();
  await page.locator('#preview #shortage').waitFor();
  check((await page.locator('#launch-preview').innerText()) === 'Launch anyway', 'the page offers Launch anyway');
  await page.locator('#cancel-preview').waitFor();
  const nothing = await page.locator('#errors').innerText();
  check(nothing.includes('Nothing has run yet: this is a preview.') && !nothing.includes('No member failed'), `errors card: ${nothing}`);
  await page.locator('#items-table tbody tr .col-predicted .prediction').first().waitFor();
  const runs = await apiGet(`/v1/jobs/${second.id}/runs`);
  check(runs.data[0].status === 'previewed' && runs.data[0].finished_at, `the preview's run has ended: ${JSON.stringify(runs.data[0])}`);
  await shot(page, 'job-previewed-1280', { fullPage: true });

  step('a member\'s history shows the preview\'s prediction, not Pending');
  const [item] = (await apiGet(`/v1/jobs/${second.id}/items?limit=1`)).data;
  const predicted = { would_succeed: 'Would succeed', would_skip: 'Would be skipped', would_fail: 'Would fail' }[item.prediction.outcome];
  await page.evaluate((u) => { window.location.hash = `#/members/${encodeURIComponent(u)}`; }, item.user_id);
  const entry = page.locator(`#history-table tbody tr[data-job-id="${second.id}"]`);
  await entry.waitFor();
  const outcome = await entry.locator('.col-outcome .item-status').innerText();
  check(outcome === predicted, `the history's outcome is the prediction: ${outcome} (${item.prediction.outcome})`);
  await second.dialog.locator('#preview-cancel').click();
  await phone.locator('#preview-dialog').waitFor({ state: 'detached' });
  check(/#\/new$/.test(phone.url()), `still in the form: ${phone.url()}`);
  const deadline = Date.now() + 10_000;
  let cancelled = await apiGet(`/v1/jobs/${second.id}`);
  while (cancelled.status !== 'cancelled' && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 200));
    cancelled = await apiGet(`/v1/jobs/${second.id}`);
  }
  check(cancelled.status === 'cancelled', `the preview was cancelled: ${cancelled.status}`);

  step('the launched job\'s page at 390');
  await phone.evaluate((jobId) => { window.location.hash = `#/jobs/${jobId}`; }, id);
  await phone.locator('#preview h2', { hasText: 'Förhandsvisning' }).waitFor();
  await phone.locator('#items-table tbody tr').first().waitFor();
  await fitsWidth(phone, 'job page at 390');
  await shot(phone, 'job-launched-390', { fullPage: true });
});
