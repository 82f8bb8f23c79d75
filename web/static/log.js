// A stage's log: ANSI colours as CSS classes on text nodes, numbered lines
// that can be linked to (#L12), auto-scroll that stops while the reader
// scrolls up, live lines from the server-sent log stream, download.
import { h, put, note } from './dom.js';
import { openStream, readEvents, call, HTTPError } from './api.js';

// Matches one escape sequence: CSI (ESC [ … final byte) or a two-byte one.
const ESC = /\x1b\[([0-9;?]*)([@-~])|\x1b[@-Z\\-_]/g;

/** Appends text with ANSI SGR colours to el as spans; state carries over lines. */
export function ansi(el, text, state) {
  let last = 0, m;
  const emit = (s) => {
    if (!s) return;
    const cls = [];
    if (state.bold) cls.push('a-b');
    if (state.fg !== null) cls.push('a-f' + state.fg);
    if (state.bg !== null) cls.push('a-g' + state.bg);
    if (state.u) cls.push('a-u');
    el.appendChild(cls.length ? h('span', { class: cls.join(' ') }, s) : document.createTextNode(s));
  };
  ESC.lastIndex = 0;
  while ((m = ESC.exec(text))) {
    emit(text.slice(last, m.index));
    last = ESC.lastIndex;
    if (m[2] !== 'm') continue; // cursor moves, erases: dropped
    const codes = (m[1] || '0').split(';').map((x) => parseInt(x || '0', 10));
    for (let i = 0; i < codes.length; i++) {
      const c = codes[i];
      if (c === 0) { state.bold = false; state.u = false; state.fg = null; state.bg = null; }
      else if (c === 1) state.bold = true;
      else if (c === 22) state.bold = false;
      else if (c === 4) state.u = true;
      else if (c === 24) state.u = false;
      else if (c >= 30 && c <= 37) state.fg = c - 30;
      else if (c >= 90 && c <= 97) state.fg = c - 90 + 8;
      else if (c === 39) state.fg = null;
      else if (c >= 40 && c <= 47) state.bg = c - 40;
      else if (c >= 100 && c <= 107) state.bg = c - 100 + 8;
      else if (c === 49) state.bg = null;
      else if ((c === 38 || c === 48) && codes[i + 1] === 5) {
        const n = codes[i + 2];
        if (n < 16) { if (c === 38) state.fg = n; else state.bg = n; }
        i += 2;
      } else if ((c === 38 || c === 48) && codes[i + 1] === 2) i += 4;
    }
  }
  emit(text.slice(last));
}

/**
 * LogView shows one stage's log. follow() streams it live; load() reads it
 * once. The view is a scrollable region: while the reader is at the bottom
 * new lines scroll into view; scrolling up stops that until they return.
 */
export class LogView {
  constructor({ path, filename, label }) {
    this.path = path;
    this.filename = filename;
    this.count = 0;
    this.state = { bold: false, u: false, fg: null, bg: null };
    this.auto = true;
    this.pending = [];
    this.lines = h('div', { class: 'lines' });
    this.box = h('div', { class: 'log', role: 'log', 'aria-label': label, tabindex: '0' }, this.lines);
    this.status = h('p', { class: 'log-status', role: 'status' }, 'Loading the log…');
    this.scrollNote = h('span', { class: 'muted' }, 'Auto-scroll on');
    this.box.addEventListener('scroll', () => {
      const atEnd = this.box.scrollTop + this.box.clientHeight >= this.box.scrollHeight - 24;
      if (atEnd !== this.auto) {
        this.auto = atEnd;
        this.scrollNote.textContent = atEnd ? 'Auto-scroll on' : 'Auto-scroll paused: scroll to the end to resume';
      }
    });
    const dl = h('button', { type: 'button', onclick: () => this.download() }, 'Download log');
    this.el = h('section', { class: 'logpanel', 'aria-label': label },
      h('div', { class: 'logbar' }, this.status, this.scrollNote, dl), this.box);
  }

  add(text) {
    this.pending.push(text);
    if (!this.timer) this.timer = setTimeout(() => this.flush(), 40);
  }

  flush() {
    this.timer = null;
    const frag = document.createDocumentFragment();
    for (const chunk of this.pending) {
      for (const line of chunk.split('\n')) {
        const n = ++this.count;
        const text = h('span', { class: 'lt' });
        ansi(text, line, this.state);
        frag.appendChild(h('div', { class: 'line', id: 'L' + n },
          h('a', { class: 'ln', href: '#L' + n, tabindex: '-1', 'aria-label': 'line ' + n }, String(n)), text));
      }
    }
    this.pending = [];
    this.lines.appendChild(frag);
    if (this.auto) this.box.scrollTop = this.box.scrollHeight;
    this.mark();
  }

  mark() {
    const id = location.hash.slice(1);
    if (!/^L\d+$/.test(id) || this.marked === id) return;
    const el = this.lines.querySelector('#' + id);
    if (!el) return;
    this.lines.querySelector('.line.hl')?.classList.remove('hl');
    el.classList.add('hl');
    this.marked = id;
    this.auto = false;
    this.box.scrollTop = el.offsetTop - this.box.clientHeight / 3;
  }

  /** Streams the log until it ends or signal aborts; falls back to one read. */
  async follow(signal) {
    let r = null;
    try {
      r = await openStream(this.path + '?follow=true', signal);
    } catch (e) {
      if (signal.aborted) return;
      put(this.status, 'Could not follow the log: ' + e.message);
      return;
    }
    if (!r) return this.load(signal);
    put(this.status, 'Following the log live…');
    let end = 'The log ended.';
    try {
      await readEvents(r, (type, data) => {
        if (type === 'message') this.add(data);
        else if (type === 'end') end = 'The log ended' + (data ? ' (' + data + ').' : '.');
        else if (type === 'error') end = 'The log stream failed: ' + data;
      });
    } catch (e) {
      if (signal.aborted) return;
      end = 'The log stream was interrupted (' + e.message + '); reload to follow on.';
    }
    this.flush();
    put(this.status, this.count ? end : 'This stage wrote no log.');
  }

  async load(signal) {
    try {
      const text = await call('GET', this.path, { accept: 'text/plain', signal });
      if (text) this.add(text.replace(/\n$/, ''));
      this.flush();
      put(this.status, this.count ? 'The whole log.' : 'This stage wrote no log.');
    } catch (e) {
      if (!signal.aborted) put(this.status, 'Could not read the log: ' + e.message);
    }
  }

  async download() {
    try {
      const text = await call('GET', this.path, { accept: 'text/plain' });
      const url = URL.createObjectURL(new Blob([text], { type: 'text/plain' }));
      const a = h('a', { href: url, download: this.filename });
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (e) {
      this.status.replaceChildren(note('Download failed: ' + (e instanceof HTTPError ? e.message : String(e)), 'error'));
    }
  }
}
