// The web app: sign-in, session, language and hash routes (#/, #/jobs/{id}, #/new, #/licenses...).
//
// A view is built by a function that returns its cleanup (or null). Called with
// `{ keepDraft: true }`, as on a change of language, the cleanup also hands back what the user
// entered (a plain object, with the error a form shows as a function that builds it: see
// errorBox in dom.js); the view rebuilt in the new language finds it as `ctx.draft`.
// Navigating elsewhere starts every view afresh.

import { api, getToken, setToken, setUnauthorizedHandler, ApiProblem } from './api.js';
import { h, replace, problemBox, errorBox } from './dom.js';
import { jobsView } from './jobs.js';
import { jobView } from './job.js';
import { historyView } from './history.js';
import { launchView } from './launch.js';
import { licensesView, licenseFormView } from './licenses.js';
import { licenseView } from './license.js';
import { checkoutView } from './checkout.js';
import { checkinView } from './checkin.js';
import { holderView } from './holder.js';
import { t, lang, setLang, onLangChange, LANGUAGES } from './i18n.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const session = document.getElementById('session');

let me = null;
let cleanup = null;
let signInNote = null;

const langSelect = document.getElementById('lang');

/** The texts of the page shell (header, navigation) in the current language. */
function applyShellTexts() {
  document.documentElement.lang = lang();
  for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const el of document.querySelectorAll('[data-i18n-aria]')) el.setAttribute('aria-label', t(el.dataset.i18nAria));
  langSelect.replaceChildren(...Object.entries(LANGUAGES).map(([code, name]) => h('option', { value: code, selected: code === lang() }, name)));
  langSelect.setAttribute('aria-label', t('lang.label'));
  if (me) showSession();
}

langSelect.addEventListener('change', () => setLang(langSelect.value));
onLangChange(() => {
  applyShellTexts();
  // The same page again in the new language, with what was entered so far.
  route({ keepDraft: true });
});

function context(draft = null) {
  const role = me?.role;
  return {
    me,
    draft,
    canOperate: role === 'admin' || role === 'operator',
    canLaunch: role === 'admin',
    navigate: (hash) => {
      if (location.hash === hash) route();
      else location.hash = hash;
    },
  };
}

function showSession() {
  const signedIn = Boolean(me);
  nav.hidden = !signedIn;
  session.hidden = !signedIn;
  if (!signedIn) return;
  document.getElementById('session-tenant').textContent = me.tenant?.name || '';
  const role = document.getElementById('session-role');
  role.textContent = t(`role.${me.role}`);
  role.className = `badge badge-${me.role}`;
  for (const link of nav.querySelectorAll('[data-role="admin"]')) link.hidden = me.role !== 'admin';
}

function markNav(name) {
  for (const link of nav.querySelectorAll('[data-nav]')) {
    if (link.dataset.nav === name) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
}

function signOut(note = null) {
  setToken(null);
  me = null;
  signInNote = note;
  showSession();
  route();
}

setUnauthorizedHandler(() => {
  if (me) signOut(t('signin.rejected'));
});

document.getElementById('sign-out').addEventListener('click', () => signOut());

function signInView(container, draft = null) {
  const input = h('input', {
    id: 'token', name: 'token', type: 'password', autocomplete: 'off', spellcheck: 'false',
    required: true, placeholder: t('signin.placeholder'), 'aria-describedby': 'token-help',
  });
  // A refused sign-in's error stays through a change of language (see errorBox).
  const shown = errorBox({ class: 'form-error' });
  const error = shown.el;
  const button = h('button', { type: 'submit', class: 'btn btn-primary' }, t('signin.button'));
  const form = h('form', {
    class: 'card signin',
    onsubmit: async (e) => {
      e.preventDefault();
      const token = input.value.trim();
      if (!token) return;
      button.disabled = true;
      shown.clear();
      try {
        me = await api.whoami(token);
        setToken(token);
        signInNote = null;
        showSession();
        route();
      } catch (err) {
        shown.show(() => {
          const problem = err instanceof ApiProblem ? err.problem : { title: t('signin.failed'), detail: String(err) };
          return problemBox(err.status === 401 ? { ...problem, title: t('signin.invalid') } : problem);
        });
      } finally {
        button.disabled = false;
      }
    },
  },
  h('h1', {}, t('signin.title')),
  h('p', { class: 'muted' }, t('signin.lead')),
  signInNote ? h('div', { class: 'alert alert-warn', role: 'status' }, signInNote) : null,
  h('label', { for: 'token' }, t('signin.token')),
  input,
  h('p', { id: 'token-help', class: 'muted small' },
    t('signin.help1'), h('code', {}, 'licensor token create'),
    t('signin.help2')),
  error,
  h('div', { class: 'form-actions' }, button),
  );
  if (draft?.token) input.value = draft.token;
  if (draft?.error) shown.show(draft.error);
  replace(container, h('div', { class: 'signin-wrap' }, form));
  input.focus();
  return (opts) => (opts?.keepDraft ? { token: input.value, error: shown.kept() } : undefined);
}

/** Build the view of the current hash; `keepDraft` rebuilds the same view with what was entered. */
async function route(opts) {
  const keepDraft = opts?.keepDraft === true;
  let draft = null;
  if (cleanup) {
    const kept = keepDraft ? cleanup({ keepDraft: true }) : cleanup();
    cleanup = null;
    if (kept && typeof kept === 'object') draft = kept;
  }
  const scrollY = window.scrollY;
  if (!keepDraft) window.scrollTo(0, 0);
  await show(draft);
  // A language change leaves the reader where they were on the page.
  if (keepDraft) window.scrollTo(0, scrollY);
}

/** Build the view of the current hash, handing it `draft` (see `route`). */
async function show(draft) {
  if (!getToken()) {
    me = null;
    showSession();
    markNav(null);
    cleanup = signInView(main, draft);
    return;
  }
  if (!me) {
    replace(main, h('p', { class: 'loading' }, t('signin.signingIn')));
    try {
      me = await api.whoami(getToken());
    } catch (err) {
      if (err.status === 401) {
        signOut(t('signin.savedRejected'));
      } else {
        replace(main, problemBox(err.problem || { title: t('common.unreachable'), detail: String(err) }),
          h('button', { class: 'btn', type: 'button', onclick: route }, t('common.tryAgain')));
      }
      return;
    }
    showSession();
  }
  const hash = location.hash.replace(/^#/, '') || '/';
  const ctx = context(draft);
  const [path, qs] = hash.split('?');
  const params = new URLSearchParams(qs || '');
  const brand = document.getElementById('brand-sub');
  const inLicenses = path.startsWith('/licenses') || path.startsWith('/assignees/');
  brand.dataset.i18n = inLicenses ? 'app.sub.licenses' : 'app.sub';
  brand.textContent = t(brand.dataset.i18n);
  if (inLicenses) {
    markNav('licenses');
    const lic = /^\/licenses\/([0-9a-fA-F-]{36})(?:\/(used-by|history|checkout|checkin|edit))?$/.exec(path);
    const holder = /^\/assignees\/(user|asset)\/([^/]+)$/.exec(path);
    document.title = `${t('lic.title')} · licensor`;
    if (path === '/licenses') cleanup = licensesView(main, ctx, params);
    else if (path === '/licenses/new') cleanup = licenseFormView(main, ctx, null);
    else if (holder) cleanup = holderView(main, ctx, holder[1], decodeURIComponent(holder[2]));
    else if (lic && lic[2] === 'checkout') cleanup = checkoutView(main, ctx, lic[1], params);
    else if (lic && lic[2] === 'checkin') cleanup = checkinView(main, ctx, lic[1], params);
    else if (lic && lic[2] === 'edit') cleanup = licenseFormView(main, ctx, lic[1]);
    else if (lic) cleanup = licenseView(main, ctx, lic[1], lic[2] || 'used-by');
    else ctx.navigate('#/licenses');
    return;
  }
  const jobMatch = /^\/jobs\/([0-9a-fA-F-]{36})$/.exec(hash);
  const memberMatch = /^\/members\/([^/?]+)$/.exec(path);
  if (memberMatch) {
    markNav('jobs');
    let member = memberMatch[1];
    try {
      member = decodeURIComponent(member);
    } catch {
      // shown as typed
    }
    document.title = t('title.history', { member });
    cleanup = historyView(main, ctx, member);
  } else if (jobMatch) {
    markNav('jobs');
    document.title = t('title.job');
    cleanup = jobView(main, ctx, jobMatch[1]);
  } else if (hash === '/new') {
    markNav('new');
    document.title = t('title.new');
    if (!ctx.canLaunch) {
      replace(main, h('div', { class: 'alert alert-warn' },
        t('new.needsAdmin'), h('a', { href: '#/' }, t('new.backToJobs'))));
      return;
    }
    cleanup = launchView(main, ctx);
  } else {
    markNav('jobs');
    document.title = t('title.jobs');
    cleanup = jobsView(main, ctx, params);
  }
}

window.addEventListener('hashchange', route);
applyShellTexts();
route();
