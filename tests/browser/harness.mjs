// What the browser scripts share: their environment, steps and checks, headless Chromium with
// script errors and CSP violations watched, screenshots, and the failure report.
//
// A script reads LICENSOR_URL, LICENSOR_TOKEN (admin), LICENSOR_OPERATOR_TOKEN,
// LICENSOR_VIEWER_TOKEN, SCREENSHOT_DIR and CHROMIUM (default /usr/bin/chromium) and calls
// `drive(async ({ newPage, shot }) => { ... })`, which exits 0 when every step passed; otherwise
// it prints the failed step, saves failure screenshots and exits 1.

import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

export function need(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`${process.argv[1]}: ${name} is not set`);
    process.exit(2);
  }
  return v;
}

export const URL_ = need('LICENSOR_URL').replace(/\/$/, '');
export const ADMIN = need('LICENSOR_TOKEN');
export const OPERATOR = need('LICENSOR_OPERATOR_TOKEN');
export const VIEWER = need('LICENSOR_VIEWER_TOKEN');
export const SHOTS = need('SCREENSHOT_DIR');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

export const DESKTOP = { width: 1280, height: 800 };
export const PHONE = { width: 390, height: 844 };

const started = Date.now();
export function step(msg) {
  console.log(`[${((Date.now() - started) / 1000).toFixed(1).padStart(6)} s] ${msg}`);
}

export function check(cond, msg) {
  if (!cond) throw new Error(`check failed: ${msg}`);
}

/** Open the app on `page` and sign in with `token`; waits for the header to show `role`. */
export async function signIn(page, token, role) {
  await page.goto(`${URL_}/`);
  await page.fill('#token', token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#session-role').filter({ hasText: role }).waitFor();
}

/** No sideways scrolling of the whole page (tables scroll or stack inside it). */
/** Poll `get` until it answers `want` (compared as JSON), for up to 15 s. */
export async function eventually(get, want, msg) {
  const w = JSON.stringify(want);
  let g;
  for (let i = 0; i < 75; i += 1) {
    g = JSON.stringify(await get());
    if (g === w) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`check failed: ${msg}: got ${g}, want ${w}`);
}

/** Switch the language with the header's select; the page is built again in it. */
export async function switchTo(page, code) {
  step(`  switch to ${code === 'sv' ? 'Swedish' : 'English'}`);
  await page.selectOption('#lang', code);
  await page.waitForFunction((c) => document.documentElement.lang === c, code);
}

/** Go to `hash` in the web app and wait for `ready` (a selector) to show. */
export async function go(page, hash, ready) {
  await page.evaluate((h) => { window.location.hash = h; }, hash);
  await page.locator(ready).first().waitFor();
}

export async function fitsWidth(page, what) {
  const { scroll, inner } = await page.evaluate(() => ({
    scroll: document.documentElement.scrollWidth,
    inner: window.innerWidth,
  }));
  check(scroll <= inner + 1, `${what}: page is ${scroll}px wide in a ${inner}px window`);
}

/** Run `body` with a browser; page errors and CSP violations fail the run. */
export async function drive(body) {
  mkdirSync(SHOTS, { recursive: true });
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
  const problems = [];
  const watch = (page, label) => {
    page.on('pageerror', (e) => problems.push(`${label}: uncaught ${e.message}`));
    page.on('console', (m) => {
      if (m.type() !== 'error') return;
      const text = m.text();
      if (/Content Security Policy/i.test(text)) problems.push(`${label}: ${text}`);
      else console.log(`  (${label} console) ${text}`);
    });
  };
  const newPage = async (viewport, label, extra = {}) => {
    const context = await browser.newContext({ viewport, ...extra });
    const page = await context.newPage();
    page.setDefaultTimeout(30_000);
    watch(page, label);
    return { context, page };
  };
  /** A screenshot without the messages of earlier steps; `top` scrolls up first. */
  const shot = async (page, name, { fullPage = false, top = fullPage } = {}) => {
    const path = join(SHOTS, `${name}.png`);
    await page.evaluate(() => document.getElementById('toasts')?.replaceChildren());
    if (top) await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path, fullPage });
    step(`screenshot ${path}`);
  };
  let failed = false;
  try {
    await body({ browser, newPage, shot });
    check(problems.length === 0, `no script error or CSP violation:\n  ${problems.join('\n  ')}`);
    step('all steps passed');
  } catch (e) {
    failed = true;
    console.error(`FAILED: ${e.message}`);
    for (const p of problems) console.error(`  ${p}`);
    try {
      for (const ctx of browser.contexts()) {
        for (const [i, p] of ctx.pages().entries()) {
          await p.screenshot({ path: join(SHOTS, `failure-${i}.png`), fullPage: true });
          console.error(`  failure screenshot ${join(SHOTS, `failure-${i}.png`)} (${p.url()})`);
        }
      }
    } catch {
      // the browser may be gone
    }
  } finally {
    await browser.close();
  }
  process.exit(failed ? 1 : 0);
}
