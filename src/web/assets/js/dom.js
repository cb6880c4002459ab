// Building the page from elements (never from HTML strings, so text from the API stays text).

import { t, has } from './i18n.js';

/**
 * Create an element. `attrs` keys: `class`, `dataset`, `on<event>` handlers, boolean
 * properties (`checked`, `disabled`, `hidden`, ...), anything else as an attribute.
 * Children may be nodes, strings, numbers, arrays, or null/false (skipped).
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key in PROPS) el[PROPS[key]] = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

const PROPS = {
  checked: 'checked',
  disabled: 'disabled',
  hidden: 'hidden',
  value: 'value',
  selected: 'selected',
  indeterminate: 'indeterminate',
  open: 'open',
};

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** Replace the children of `el`. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A short-lived message at the bottom of the screen. */
export function toast(message, kind = 'info') {
  const box = document.getElementById('toasts');
  const item = h('div', { class: `toast toast-${kind}`, role: kind === 'error' ? 'alert' : 'status' }, message);
  box.appendChild(item);
  setTimeout(() => item.remove(), kind === 'error' ? 9000 : 4500);
}

/**
 * Ask before doing something that cannot be undone. Resolves true on "Yes".
 * `body` may be a string or nodes.
 */
export function confirmDialog({ title, body, yes = t('common.yes'), no = t('common.no'), danger = false }) {
  return new Promise((resolve) => {
    const dialog = h('dialog', { class: 'dialog', 'aria-labelledby': 'dialog-title' });
    const close = (answer) => {
      dialog.close();
      dialog.remove();
      resolve(answer);
    };
    dialog.append(
      h('h2', { id: 'dialog-title' }, title),
      h('div', { class: 'dialog-body' }, body),
      h('div', { class: 'dialog-actions' },
        h('button', { type: 'button', class: 'btn', onclick: () => close(false) }, no),
        h('button', {
          type: 'button',
          class: danger ? 'btn btn-danger' : 'btn btn-primary',
          dataset: { answer: 'yes' },
          onclick: () => close(true),
        }, yes),
      ),
    );
    dialog.addEventListener('cancel', (e) => {
      e.preventDefault();
      close(false);
    });
    document.body.appendChild(dialog);
    dialog.showModal();
  });
}

/** The HTTP reason phrases the API's problems carry as their `title` (RFC 9110), by status. */
const REASONS = {
  400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 405: 'Method Not Allowed',
  406: 'Not Acceptable', 409: 'Conflict', 410: 'Gone', 412: 'Precondition Failed', 413: 'Payload Too Large',
  414: 'URI Too Long', 415: 'Unsupported Media Type', 422: 'Unprocessable Entity', 428: 'Precondition Required',
  429: 'Too Many Requests', 500: 'Internal Server Error', 502: 'Bad Gateway', 503: 'Service Unavailable',
  504: 'Gateway Timeout',
};

/**
 * A problem from the API as a message block. Its heading is in the language of the moment: the
 * caller's own (`heading`, e.g. the seed's "Out of stock"), else what the code means where the
 * web app knows it (`problem.<code>`), else that the request was refused (4xx) or failed (5xx) —
 * never the HTTP reason phrase the API's `title` carries ("Unprocessable Entity"). A problem of
 * the web app's own (no status) keeps its title.
 */
export function problemBox(problem, extra = null) {
  if (!problem) return null;
  let heading = problem.heading;
  if (!heading && problem.code && has(`problem.${problem.code}`)) heading = t(`problem.${problem.code}`);
  if (!heading && problem.status >= 400 && problem.title === REASONS[problem.status]) {
    heading = t(problem.status >= 500 ? 'common.requestFailed' : 'common.refused');
  }
  if (!heading) heading = problem.title || t('common.requestFailed');
  return h('div', { class: 'alert alert-error', role: 'alert' },
    h('strong', {}, heading),
    problem.detail ? h('p', {}, problem.detail) : null,
    extra,
    problem.code ? h('p', { class: 'muted small' }, t('common.code', { code: problem.code })) : null,
  );
}

/**
 * A form's error box, which keeps what it shows through a change of language. `show(render)`
 * shows `render()` — built with the texts of the moment — and remembers `render`; `kept()`
 * hands it over with the form's draft (main.js: a change of language rebuilds the view with
 * what the old one handed back), and the form built again shows it with `show(draft.error)`:
 * the web app's own messages and the problems it knows by code in the new language, the
 * server's words as they were.
 */
export function errorBox(attrs = {}) {
  const el = h('div', attrs);
  let render = null;
  return {
    el,
    show(r) {
      render = r;
      replace(el, r());
      return el;
    },
    clear() {
      render = null;
      replace(el);
    },
    kept() {
      return render;
    },
  };
}

/** A message of the web app's own, as a form's error (`text` is read in the language of the moment). */
export function alertBox(text) {
  return h('div', { class: 'alert alert-error', role: 'alert' }, text);
}
