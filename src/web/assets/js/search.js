// The Job Monitor's search box: a user principal name opens that member's history, a job id (or
// its first characters) the job, a group name the jobs for that group.

import { api } from './api.js';
import { h, replace } from './dom.js';
import { t } from './i18n.js';

const UUID = /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i;
const PREFIX = /^[0-9a-f-]{4,36}$/i;

/** Where a search for `q` leads: a hash route, or null with nothing found. */
export async function resolveSearch(q) {
  const text = q.trim();
  if (!text) return null;
  if (text.includes('@')) return `#/members/${encodeURIComponent(text)}`;
  if (UUID.test(text)) {
    try {
      const job = await api.get(`/v1/jobs/${text}`);
      return `#/jobs/${job.id}`;
    } catch (err) {
      if (err.status !== 404) throw err;
    }
    // Not a job: a member's user id.
    return `#/members/${encodeURIComponent(text.toLowerCase())}`;
  }
  if (PREFIX.test(text) && text.replace(/-/g, '').length >= 4) {
    const page = await api.get('/v1/jobs', { id_prefix: text, limit: 2 });
    if (page.data.length === 1) return `#/jobs/${page.data[0].id}`;
    if (page.data.length > 1) return `#/?id_prefix=${encodeURIComponent(text)}`;
  }
  const groups = await api.get('/v1/directory/groups', { search: text, limit: 50 });
  const lower = text.toLowerCase();
  const exact = groups.data.filter((g) => (g.display_name || '').toLowerCase() === lower);
  const group = exact.length === 1 ? exact[0] : (groups.data.length === 1 ? groups.data[0] : null);
  if (group) return `#/?group=${group.id}&group_name=${encodeURIComponent(group.display_name || '')}`;
  return null;
}

/** The search form; `navigate(hash)` follows a hit. */
export function searchBox(ctx, initial = '') {
  const input = h('input', {
    id: 'monitor-search',
    type: 'search',
    name: 'q',
    value: initial,
    autocomplete: 'off',
    spellcheck: 'false',
    placeholder: t('search.placeholder'),
    'aria-label': t('search.label'),
  });
  const note = h('span', { class: 'search-note muted small', role: 'status', 'aria-live': 'polite' });
  const button = h('button', { type: 'submit', class: 'btn' }, t('common.search'));
  const form = h('form', {
    class: 'monitor-search',
    role: 'search',
    onsubmit: async (e) => {
      e.preventDefault();
      const q = input.value;
      if (!q.trim()) return;
      button.disabled = true;
      replace(note, t('search.searching'));
      try {
        const to = await resolveSearch(q);
        if (to) {
          replace(note);
          ctx.navigate(to);
        } else {
          replace(note, t('search.nothing', { q: q.trim() }));
        }
      } catch (err) {
        replace(note, t('search.failed', { message: err.message }));
      } finally {
        button.disabled = false;
      }
    },
  }, input, button, note);
  return form;
}
