// A member's history and a job's errors in English and Swedish: the usage location a job set
// for a member ("Usage location: — → NO"), a verified write's note, and each error code's
// explanation — in the language of the screen, from the codes (the server's free-text details
// stay as written). Then the history's heading on a phone: a long user principal name breaks
// only after its @ and before its dots, never inside a name, and the page does not scroll
// sideways. Started by tests/drafts_web.rs with, besides what harness.mjs reads:
//   JOB_ID          an assign job that set usage location NO and ended Finished with Exception
//   MEMBER_LOCATED  the user principal name of a member it gave usage location NO and wrote for
//   MEMBER_FAILED   the user principal name of a member that failed with count_violation
// Exits 0 when every step passed; otherwise prints the failed step and exits 1.

import {
  URL_, ADMIN, DESKTOP, PHONE, step, check, fitsWidth, drive, need, signIn, eventually, switchTo, go,
} from './harness.mjs';

const JOB = need('JOB_ID');
const LOCATED = need('MEMBER_LOCATED');
const FAILED = need('MEMBER_FAILED');

/** The explanation of count_violation: core/src/jobs/codes.rs, and the Swedish catalogue's. */
const COUNT_VIOLATION = {
  en: 'no free units of the license were left; buy more licenses or free some up, then rerun',
  sv: 'det fanns inga lediga enheter kvar av licensen; köp fler licenser eller frigör några och kör sedan om',
};

const text = (page, sel, want, msg) => eventually(
  async () => (await page.locator(sel).first().innerText()).replace(/\s+/g, ' ').trim(), want, msg || `${sel} reads`);

const memberHash = (upn) => `#/members/${encodeURIComponent(upn)}`;
const jobRow = `#history-table tbody tr[data-job-id="${JOB}"]`;

/**
 * Where the page's heading breaks its lines: for each break, the characters either side of
 * it, read from where each character is drawn.
 */
async function headingBreaks(page) {
  return page.locator('.history-page h1').evaluate((h1) => {
    const chars = [];
    const walker = document.createTreeWalker(h1, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      for (let i = 0; i < node.data.length; i += 1) {
        const range = document.createRange();
        range.setStart(node, i);
        range.setEnd(node, i + 1);
        const rect = range.getBoundingClientRect();
        chars.push({ c: node.data[i], top: rect.width > 0 ? Math.round(rect.top) : null });
      }
    }
    const breaks = [];
    let last = null;
    for (const [i, ch] of chars.entries()) {
      if (ch.top === null) continue;
      if (last !== null && ch.top > chars[last].top) {
        breaks.push({ before: chars.slice(Math.max(0, i - 12), i).map((x) => x.c).join(''), after: chars.slice(i, i + 12).map((x) => x.c).join('') });
      }
      last = i;
    }
    return { text: h1.textContent, breaks, right: h1.getBoundingClientRect().right };
  });
}

await drive(async ({ newPage, shot }) => {
  const { page } = await newPage(DESKTOP, 'desktop', { locale: 'en-GB' });
  await signIn(page, ADMIN, 'Admin');

  step(`the history of ${LOCATED}: the usage location the job set and its verified write`);
  await go(page, memberHash(LOCATED), jobRow);
  await text(page, `${jobRow} .location-set`, 'Usage location: — → NO');
  await text(page, `${jobRow} .item-note`, 'verified');
  await switchTo(page, 'sv');
  await text(page, `${jobRow} .location-set`, 'Användningsplats: — → NO');
  await text(page, `${jobRow} .item-note`, 'kontrollerad', 'the fixed note in Swedish, by its code');
  await shot(page, 'history-location-sv');

  step(`the history of ${FAILED}: its error code explained in Swedish`);
  await go(page, memberHash(FAILED), jobRow);
  await text(page, `${jobRow} .item-error .error-code-name`, 'count_violation');
  await text(page, `${jobRow} .item-error .error-explained`, COUNT_VIOLATION.sv);

  step('the job page: the errors by code and each failed member explained in Swedish, then English');
  await go(page, `#/jobs/${JOB}`, '.error-group[data-code="count_violation"]');
  await text(page, '.error-group[data-code="count_violation"] .error-explanation', COUNT_VIOLATION.sv);
  await page.locator('#items-table tbody tr[data-status="failed"]').first().waitFor();
  await text(page, '#items-table tbody tr[data-status="failed"] .col-error .error-explained', COUNT_VIOLATION.sv);
  await shot(page, 'job-errors-sv', { fullPage: true });
  await switchTo(page, 'en');
  await text(page, '.error-group[data-code="count_violation"] .error-explanation', COUNT_VIOLATION.en);
  await page.locator('#items-table tbody tr[data-status="failed"]').first().waitFor();
  await text(page, '#items-table tbody tr[data-status="failed"] .col-error .error-explained', COUNT_VIOLATION.en);

  step('the heading on a phone: a user principal name breaks after its @ and before its dots only');
  const phone = await newPage(PHONE, 'phone', { locale: 'en-GB' });
  await signIn(phone.page, ADMIN, 'Admin');
  const long = 'karljohan.vasterberglindqvist@contosoengineering.onmicrosoft.com';
  for (const lang of ['en', 'sv']) {
    if (await phone.page.evaluate(() => document.documentElement.lang) !== lang) await switchTo(phone.page, lang);
    for (const upn of [long, LOCATED]) {
      await go(phone.page, '#/', '#monitor-search');
      await go(phone.page, memberHash(upn), '.history-page h1');
      await phone.page.locator('#member-history :is(.empty, #history-table)').first().waitFor();
      const { text: heading, breaks, right } = await headingBreaks(phone.page);
      check(heading.includes(upn), `the heading names ${upn}: ${heading}`);
      if (upn === long) check(breaks.length >= 2, `the long heading wraps (${lang}): ${JSON.stringify(breaks)}`);
      for (const b of breaks) {
        const ok = b.before.endsWith(' ') || b.before.endsWith('@') || b.after.startsWith('.') || b.after.startsWith(' ');
        check(ok, `${lang}: "${heading}" breaks inside a name, between "${b.before}" and "${b.after}"`);
      }
      check(right <= PHONE.width, `the heading stays in the window (${right} px)`);
      await fitsWidth(phone.page, `the history of ${upn} at 390 px (${lang})`);
      if (upn === long) await shot(phone.page, `history-heading-390-${lang}`);
    }
  }
});
