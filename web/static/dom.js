// DOM helpers. Every string becomes a text node: forge-supplied text
// (branches, authors, commit messages, file contents, logs) is never
// parsed as markup. Nothing here uses innerHTML.

/** h('a', {href: '/x', class: 'b'}, 'text', child) builds an element. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

/** Replaces el's children. */
export function put(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

const STATUS = {
  SUCCESS: ['✓', 'Success'],
  FAIL: ['✗', 'Failed'],
  RUNNING: ['●', 'Running'],
  PENDING: ['○', 'Pending'],
  WAITING: ['‖', 'Waiting for approval'],
  CANCELED: ['⊘', 'Canceled'],
};

/** A status badge: colour, icon and words. */
export function status(s) {
  const [icon, text] = STATUS[s] || ['?', s || 'Unknown'];
  return h('span', { class: 'status st-' + String(s || 'unknown').toLowerCase() },
    h('span', { 'aria-hidden': 'true' }, icon), ' ', text);
}

/** Whether a build or stage status is final. */
export function final(s) { return s === 'SUCCESS' || s === 'FAIL' || s === 'CANCELED'; }

const ms = (ns) => Math.floor(ns / 1e6);

/** "3 min ago" in a <time> element (times are Unix nanoseconds). */
export function age(ns) {
  if (!ns) return h('span', {}, '—');
  const d = new Date(ms(ns));
  return h('time', { datetime: d.toISOString(), title: d.toLocaleString() }, ago(Date.now() - d.getTime()));
}

export function ago(diff) {
  const s = Math.max(0, Math.round(diff / 1000));
  if (s < 45) return 'just now';
  if (s < 3600) return Math.round(s / 60) + ' min ago';
  if (s < 86400) return Math.round(s / 3600) + ' h ago';
  return Math.round(s / 86400) + ' days ago';
}

/** Duration between two Unix-nanosecond times ("1 min 5 s"); running ones count to now. */
export function duration(started, finished) {
  if (!started) return '';
  const end = finished ? ms(finished) : Date.now();
  let s = Math.max(0, Math.round((end - ms(started)) / 1000));
  if (s < 60) return s + ' s';
  const m = Math.floor(s / 60); s %= 60;
  if (m < 60) return m + ' min ' + s + ' s';
  return Math.floor(m / 60) + ' h ' + (m % 60) + ' min';
}

export const short = (sha) => (sha || '').slice(0, 7);

/** A message in a live region (polite: loading, done; assertive: errors). */
export function note(text, kind = 'info') {
  return h('p', { class: 'note note-' + kind, role: kind === 'error' ? 'alert' : 'status' }, text);
}
