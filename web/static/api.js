// Talking to the Kontinuous API: the session, JSON calls, server-sent
// events read with fetch (EventSource cannot send an Authorization header)
// and the live build feed.
//
// The token lives in sessionStorage: it survives a reload of the tab but is
// not shared with other tabs, not written to disk beyond the session, and
// never put in a URL (so never in a log line, history entry or Referer).

const TOKEN = 'kontinuous.jwt';
const USER = 'kontinuous.user';
const RETURN = 'kontinuous.return';

export class HTTPError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

export const token = () => sessionStorage.getItem(TOKEN);
export function user() {
  try { return JSON.parse(sessionStorage.getItem(USER) || 'null'); } catch { return null; }
}
export function setSession(res) {
  sessionStorage.setItem(TOKEN, res.jwt);
  sessionStorage.setItem(USER, JSON.stringify({ user_id: res.user_id, user_name: res.user_name }));
}
export function clearSession() {
  sessionStorage.removeItem(TOKEN);
  sessionStorage.removeItem(USER);
}
/** Remembers the page to come back to after signing in. */
export function rememberReturn(path) { sessionStorage.setItem(RETURN, path); }
export function takeReturn() {
  const p = sessionStorage.getItem(RETURN) || '/';
  sessionStorage.removeItem(RETURN);
  // Only a path on this site (never //host or a scheme).
  return /^\/(?![/\\])/.test(p) ? p : '/';
}

let unauthorized = () => {};
/** fn runs when the API answers 401 to a signed-in call. */
export function onUnauthorized(fn) { unauthorized = fn; }

function headers(accept, extra) {
  const hd = { Accept: accept, ...extra };
  const t = token();
  if (t) hd.Authorization = 'Bearer ' + t;
  return hd;
}

async function failure(r, keepSession) {
  let msg = '';
  try { msg = (await r.json()).Message || ''; } catch { /* not the error shape */ }
  if (r.status === 401 && token() && !keepSession) {
    clearSession();
    unauthorized();
  }
  return new HTTPError(r.status, msg || `the server answered ${r.status} ${r.statusText}`);
}

/**
 * Calls the API; answers parsed JSON (or text for accept text/plain, null for 204).
 * keepSession: a 401 is this call's own failure (e.g. a connect whose state
 * expired), not a sign-out.
 */
export async function call(method, path, { body, accept = 'application/json', extra = {}, signal, keepSession = false } = {}) {
  const opts = { method, headers: headers(accept, extra), signal, cache: 'no-store' };
  if (body !== undefined) {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  let r;
  try {
    r = await fetch(path, opts);
  } catch (e) {
    if (signal && signal.aborted) throw e;
    throw new HTTPError(0, 'cannot reach the server (' + e.message + ')');
  }
  if (!r.ok) throw await failure(r, keepSession);
  if (r.status === 204) return null;
  if (accept === 'text/plain') return r.text();
  return r.json();
}

export const get = (path, o) => call('GET', path, o);

/**
 * Opens a server-sent event stream; answers the Response, or null when the
 * server does not stream this (any answer other than 200 text/event-stream).
 */
export async function openStream(path, signal) {
  const r = await fetch(path, { headers: headers('text/event-stream'), signal, cache: 'no-store' });
  const ct = r.headers.get('Content-Type') || '';
  if (r.status === 401) throw await failure(r);
  if (r.status !== 200 || !ct.startsWith('text/event-stream')) {
    if (r.status >= 400 && r.status !== 406 && r.status !== 404 && r.status !== 405) throw await failure(r);
    try { await r.body?.cancel(); } catch { /* already closed */ }
    return null;
  }
  return r;
}

/** Reads SSE events from a Response, calling onEvent(type, data) for each. */
export async function readEvents(resp, onEvent) {
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '', data = [], type = 'message';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      let line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (line.endsWith('\r')) line = line.slice(0, -1);
      if (line === '') {
        if (data.length) onEvent(type, data.join('\n'));
        data = []; type = 'message';
        continue;
      }
      if (line.startsWith(':')) continue;
      const c = line.indexOf(':');
      const field = c < 0 ? line : line.slice(0, c);
      let v = c < 0 ? '' : line.slice(c + 1);
      if (v.startsWith(' ')) v = v.slice(1);
      if (field === 'data') data.push(v);
      else if (field === 'event') type = v;
    }
  }
}

export const sleep = (ms, signal) => new Promise((resolve) => {
  const t = setTimeout(resolve, ms);
  signal?.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
});

/** How often the fallback poll refreshes (only while the tab is visible). */
export const POLL_MS = 5000;

/**
 * Follows a pipeline's builds until signal aborts: onChange(summary) for
 * each build summary the server streams (GET …/builds?follow=true,
 * text/event-stream). Where the server does not offer that stream, it
 * falls back to a bounded poll: onChange(null) every POLL_MS while the tab
 * is visible, meaning "refetch", and tries the stream again each minute.
 * This is the one place that decides between streaming and polling.
 */
export function watchBuilds(owner, repo, onChange, signal) {
  const path = `/api/v1/pipelines/${encodeURIComponent(owner)}/${encodeURIComponent(repo)}/builds?follow=true`;
  (async () => {
    while (!signal.aborted) {
      let r = null;
      try { r = await openStream(path, signal); } catch (e) { if (signal.aborted || e.status === 401) return; }
      if (r) {
        try {
          await readEvents(r, (type, data) => {
            // Any event whose data is a build summary (whatever its type).
            let s = null;
            try { s = JSON.parse(data); } catch { return; /* an end or error note */ }
            if (s && typeof s === 'object' && Number.isInteger(s.number)) onChange(s);
          });
        } catch { /* the stream broke: reconnect */ }
        if (signal.aborted) return;
        onChange(null); // catch up on what changed while reconnecting
        await sleep(1000, signal);
        continue;
      }
      for (let i = 0; i < 12 && !signal.aborted; i++) {
        await sleep(POLL_MS, signal);
        if (!signal.aborted && !document.hidden) onChange(null);
      }
    }
  })();
}

/** The path of an API resource of a pipeline. */
export const pipe = (owner, repo, rest = '') =>
  `/api/v1/pipelines/${encodeURIComponent(owner)}/${encodeURIComponent(repo)}${rest}`;
