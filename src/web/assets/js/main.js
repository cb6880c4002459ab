// The Job Monitor: sign-in, session and hash routes (#/, #/jobs/{id}, #/new).

import { api, getToken, setToken, setUnauthorizedHandler, ApiProblem } from './api.js';
import { h, replace, problemBox } from './dom.js';
import { jobsView } from './jobs.js';
import { jobView } from './job.js';
import { launchView } from './launch.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const session = document.getElementById('session');

let me = null;
let cleanup = null;
let signInNote = null;

const ROLE_LABELS = { admin: 'Admin', operator: 'Operator', viewer: 'Viewer' };

function context() {
  const role = me?.role;
  return {
    me,
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
  role.textContent = ROLE_LABELS[me.role] || me.role;
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
  if (me) signOut('The token was rejected (revoked or expired). Sign in again.');
});

document.getElementById('sign-out').addEventListener('click', () => signOut());

function signInView(container) {
  const input = h('input', {
    id: 'token', name: 'token', type: 'password', autocomplete: 'off', spellcheck: 'false',
    required: true, placeholder: 'API token', 'aria-describedby': 'token-help',
  });
  const error = h('div', { class: 'form-error' });
  const button = h('button', { type: 'submit', class: 'btn btn-primary' }, 'Sign in');
  const form = h('form', {
    class: 'card signin',
    onsubmit: async (e) => {
      e.preventDefault();
      const token = input.value.trim();
      if (!token) return;
      button.disabled = true;
      replace(error);
      try {
        me = await api.whoami(token);
        setToken(token);
        signInNote = null;
        showSession();
        route();
      } catch (err) {
        const problem = err instanceof ApiProblem ? err.problem : { title: 'Sign-in failed', detail: String(err) };
        if (err.status === 401) problem.title = 'This token is not valid';
        replace(error, problemBox(problem));
      } finally {
        button.disabled = false;
      }
    },
  },
  h('h1', {}, 'Sign in to the Job Monitor'),
  h('p', { class: 'muted' }, 'Follow group license jobs, rerun the ones that did not fully succeed and start new ones.'),
  signInNote ? h('div', { class: 'alert alert-warn', role: 'status' }, signInNote) : null,
  h('label', { for: 'token' }, 'Token'),
  input,
  h('p', { id: 'token-help', class: 'muted small' },
    'An API token of your tenant, e.g. from ', h('code', {}, 'licensor token create'),
    '. It is kept in this browser tab only and forgotten when the tab closes.'),
  error,
  h('div', { class: 'form-actions' }, button),
  );
  replace(container, h('div', { class: 'signin-wrap' }, form));
  input.focus();
  return null;
}

async function route() {
  if (cleanup) {
    cleanup();
    cleanup = null;
  }
  window.scrollTo(0, 0);
  if (!getToken()) {
    me = null;
    showSession();
    markNav(null);
    cleanup = signInView(main);
    return;
  }
  if (!me) {
    replace(main, h('p', { class: 'loading' }, 'Signing in…'));
    try {
      me = await api.whoami(getToken());
    } catch (err) {
      if (err.status === 401) {
        signOut('The saved token was rejected (revoked or expired). Sign in again.');
      } else {
        replace(main, problemBox(err.problem || { title: 'licensor is not reachable', detail: String(err) }),
          h('button', { class: 'btn', type: 'button', onclick: route }, 'Try again'));
      }
      return;
    }
    showSession();
  }
  const hash = location.hash.replace(/^#/, '') || '/';
  const ctx = context();
  const jobMatch = /^\/jobs\/([0-9a-fA-F-]{36})$/.exec(hash);
  if (jobMatch) {
    markNav('jobs');
    document.title = 'Job · Job Monitor · licensor';
    cleanup = jobView(main, ctx, jobMatch[1]);
  } else if (hash === '/new') {
    markNav('new');
    document.title = 'New job · Job Monitor · licensor';
    if (!ctx.canLaunch) {
      replace(main, h('div', { class: 'alert alert-warn' },
        'Starting jobs needs an admin token. ', h('a', { href: '#/' }, 'Back to the jobs')));
      return;
    }
    cleanup = launchView(main, ctx);
  } else {
    markNav('jobs');
    document.title = 'Jobs · Job Monitor · licensor';
    const params = new URLSearchParams(hash.split('?')[1] || '');
    cleanup = jobsView(main, ctx, params);
  }
}

window.addEventListener('hashchange', route);
route();
