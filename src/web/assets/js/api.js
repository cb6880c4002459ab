// The licensor API as seen by the page: bearer token from the session, problems as errors.

import { t } from './i18n.js';

const TOKEN_KEY = 'licensor.token';

/** An answer other than 2xx, with the RFC 9457 problem body when there is one. */
export class ApiProblem extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
    this.code = problem.code || null;
  }
}

let onUnauthorized = () => {};

/** Called when the API rejects the token (revoked, expired). */
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

function headers(extra = {}) {
  const h = { Accept: 'application/json', ...extra };
  const token = getToken();
  if (token) h.Authorization = `Bearer ${token}`;
  return h;
}

async function problemOf(resp) {
  const type = resp.headers.get('content-type') || '';
  if (type.includes('json')) {
    try {
      return await resp.json();
    } catch {
      // fall through
    }
  }
  return { title: resp.statusText || `HTTP ${resp.status}`, status: resp.status, detail: '' };
}

async function request(method, path, { body, query, idempotencyKey, token } = {}) {
  let url = path;
  if (query) {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) {
      if (v === undefined || v === null || v === '') continue;
      params.set(k, Array.isArray(v) ? v.join(',') : String(v));
    }
    const qs = params.toString();
    if (qs) url += `?${qs}`;
  }
  const extra = {};
  if (body !== undefined) extra['Content-Type'] = 'application/json';
  if (idempotencyKey) extra['Idempotency-Key'] = idempotencyKey;
  const h = headers(extra);
  if (token) h.Authorization = `Bearer ${token}`;
  let resp;
  try {
    resp = await fetch(url, {
      method,
      headers: h,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
  } catch (e) {
    throw new ApiProblem(0, {
      title: t('common.unreachable'),
      detail: t('common.unreachableDetail', { message: e.message }),
      code: 'network_error',
    });
  }
  if (!resp.ok) {
    const problem = await problemOf(resp);
    if (resp.status === 401 && !token) onUnauthorized(problem);
    throw new ApiProblem(resp.status, problem);
  }
  return resp;
}

export const api = {
  async get(path, query) {
    return (await request('GET', path, { query })).json();
  },
  async post(path, body, opts = {}) {
    return (await request('POST', path, { body, ...opts })).json();
  },
  async patch(path, body) {
    return (await request('PATCH', path, { body })).json();
  },
  /** Check a token before keeping it: the tenant and role behind it. */
  async whoami(token) {
    return (await request('GET', '/v1/tenant', { token })).json();
  },
  /** Fetch a file with the bearer header and hand it to the browser as a download. */
  async download(path, query, fallbackName) {
    const resp = await request('GET', path, { query });
    const blob = await resp.blob();
    const name = filenameOf(resp.headers.get('content-disposition')) || fallbackName;
    const url = URL.createObjectURL(blob);
    const a = document.createElement('a');
    a.href = url;
    a.download = name;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
    return name;
  },
};

function filenameOf(disposition) {
  if (!disposition) return null;
  const star = /filename\*\s*=\s*(?:UTF-8'')?([^;]+)/i.exec(disposition);
  if (star) {
    try {
      return decodeURIComponent(star[1].trim().replace(/^"|"$/g, ''));
    } catch {
      // fall through to the plain form
    }
  }
  const plain = /filename\s*=\s*"?([^";]+)"?/i.exec(disposition);
  return plain ? plain[1].trim() : null;
}

/** A fresh Idempotency-Key, so that a retried submission does not start a second job. */
export function newIdempotencyKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}
