// Kontinuous web UI: a small router and one function per page. Every
// string from the server is put in the page as text (see dom.js).
import { h, put, status, final, age, duration, short, note } from './dom.js';
import * as api from './api.js';
import { LogView } from './log.js';
import { consentPage, accountPage } from './apps.js';
import { forgeNames, callbackURL, loginHref, forgeOf, connect, confirmConnected } from './accounts.js';

const main = document.getElementById('main');
const session = document.getElementById('session');
let page = new AbortController();

const enc = encodeURIComponent;
const link = (href, ...children) => h('a', { href }, ...children);

const routes = [
  [/^\/$/, pipelinesPage],
  [/^\/new$/, newPipelinePage],
  [/^\/auth\/callback\/([a-z0-9-]+)$/, callbackPage, true],
  [/^\/oauth\/1\.0a\/authorize$/, (signal) => consentPage(main, signal)],
  [/^\/account$/, (signal) => accountPage(main, signal)],
  [/^\/([^/]+)\/([^/]+)$/, pipelinePage],
  [/^\/([^/]+)\/([^/]+)\/settings$/, settingsPage],
  [/^\/([^/]+)\/([^/]+)\/builds\/(\d+)(?:\/stages\/(\d+))?$/, buildPage],
];

/** Shows the page for the current URL. */
async function render() {
  page.abort();
  page = new AbortController();
  const signal = page.signal;
  const path = decodeURI(location.pathname);
  drawSession();
  for (const [re, fn, open] of routes) {
    const m = re.exec(path);
    if (!m) continue;
    if (!open && !api.token()) return signIn();
    put(main, note('Loading…'));
    try {
      await fn(signal, ...m.slice(1));
      // Interactive: the page's data is drawn and its controls work.
      performance.mark('kontinuous:rendered');
    } catch (e) {
      if (signal.aborted) return;
      if (e.status === 401) return; // onUnauthorized took over
      put(main, h('h1', {}, e.status === 404 ? 'Not found' : 'Something went wrong'),
        note(e.status === 404 ? 'It does not exist, or your account cannot see it. ' + e.message : e.message, 'error'),
        h('p', {}, link('/', 'Back to pipelines')));
    }
    return;
  }
  document.title = 'Not found · Kontinuous';
  put(main, h('h1', {}, 'Page not found'), h('p', {}, link('/', 'Back to pipelines')));
}

export function go(path, replace = false) {
  if (replace) history.replaceState(null, '', path); else history.pushState(null, '', path);
  render();
  main.focus({ preventScroll: true });
}

document.addEventListener('click', (e) => {
  const a = e.target.closest('a');
  if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  if (a.origin !== location.origin || a.hasAttribute('download') || a.target || a.dataset.external !== undefined) return;
  if (a.pathname.startsWith('/api/') || a.pathname.startsWith('/apidocs')) return;
  if (a.pathname === location.pathname && a.hash) return; // a line link: the browser scrolls
  e.preventDefault();
  go(a.pathname + a.search + a.hash);
});
window.addEventListener('popstate', render);

api.onUnauthorized(() => {
  if (!location.pathname.startsWith('/auth/')) api.rememberReturn(location.pathname + location.search + location.hash);
  signIn('Your session has ended. Sign in again to continue.');
});

function drawSession() {
  const u = api.user();
  if (!u || !api.token()) return put(session);
  put(session, h('span', { class: 'who' }, 'Signed in as ', h('strong', {}, u.user_name || u.user_id)), ' ',
    h('a', { href: '/account' }, 'Account'), ' ',
    h('button', { type: 'button', class: 'link', onclick: signOut }, 'Sign out'));
}

async function signOut() {
  try { await api.call('POST', '/api/v1/logout'); } catch { /* the token is dropped either way */ }
  api.clearSession();
  history.pushState(null, '', '/');
  signIn('You are signed out.');
}

async function signIn(message) {
  page.abort();
  page = new AbortController();
  drawSession();
  document.title = 'Sign in · Kontinuous';
  if (location.pathname !== '/' && !location.pathname.startsWith('/auth/')) {
    api.rememberReturn(location.pathname + location.search + location.hash);
  }
  const box = h('div', { class: 'signin' }, note('Loading the ways to sign in…'));
  put(main, h('h1', {}, 'Sign in to Kontinuous'), message ? note(message) : null, box);
  let forges;
  try {
    forges = await api.get('/api/v1/forges');
  } catch (e) {
    return put(box, note('Could not load the ways to sign in: ' + e.message, 'error'));
  }
  const buttons = forges.filter((f) => f.login_url).map((f) =>
    h('a', { class: 'button primary', href: loginHref(f), 'data-external': '' }, 'Sign in with ' + (forgeNames[f.name] || f.name)));
  const auth0 = forges.find((f) => f.name === 'auth0');
  put(box,
    buttons.length ? h('p', { class: 'buttons' }, buttons)
      : note('No forge login is configured on this server (set --github-client-id and --github-client-secret). API clients can use tokens from scripts/jwt-gen.', 'error'),
    h('p', { class: 'muted' }, 'You will see the pipelines of repositories your account can read.'),
    auth0 ? h('p', { class: 'muted' }, 'API clients may also use Auth0 tokens (issuer ', auth0.issuer, ', audience ', auth0.audience, ').') : null);
}

async function callbackPage(signal, forge) {
  // Signed in with another forge, this is connecting forge to the account
  // (the Bearer token the call sends makes it so), not a sign-in.
  const connecting = !!api.token() && forgeOf(api.user()?.user_id) !== forge;
  const name = forgeNames[forge] || forge;
  document.title = (connecting ? 'Connecting ' + name : 'Signing in') + ' · Kontinuous';
  const q = new URLSearchParams(location.search);
  const code = q.get('code'), state = q.get('state'), err = q.get('error_description') || q.get('error');
  // The code leaves the address bar and the history at once.
  history.replaceState(null, '', '/auth/callback/' + forge);
  const again = connecting ? h('p', {}, h('a', { href: '/account', class: 'button' }, 'Back to your account'))
    : h('p', {}, h('a', { href: '/', class: 'button' }, 'Sign in again'));
  if (err) return put(main, h('h1', {}, connecting ? 'Connecting cancelled' : 'Sign-in cancelled'), note(name + ' said: ' + err, 'error'), again);
  if (!code || !state) return put(main, h('h1', {}, 'Sign-in link used'), note('This sign-in link has no code (it may have been used already).', 'error'), again);
  put(main, h('h1', {}, connecting ? 'Connecting ' + name + '…' : 'Signing in…'), note('Checking with ' + name + '…'));
  let res;
  try {
    // A refused connect (its state expired on the forge's consent page,
    // say) is shown here; the session stays.
    res = await api.call('POST', '/api/v1/login/' + enc(forge), { body: { code, state, redirect_uri: callbackURL(forge) }, signal, keepSession: connecting });
  } catch (e) {
    if (signal.aborted) return;
    return put(main, h('h1', {}, connecting ? 'Could not connect ' + name : 'Sign-in failed'), note(e.message, 'error'), again);
  }
  if (res.connected && !res.jwt) {
    // A connect: the account is linked to the session's user, who stays
    // signed in with the token they have.
    api.takeReturn();
    confirmConnected(res);
    return go('/account', true);
  }
  api.setSession(res);
  go(api.takeReturn(), true);
}

/** Shows a "Reconnect" banner for each expired forge connection. */
async function connections(signal) {
  const u = await api.get('/api/v1/user', { signal });
  const expired = (u.connections || []).filter((c) => c.status === 'expired');
  if (!expired.length) return null;
  let forges = [];
  try { forges = await api.get('/api/v1/forges', { signal }); } catch { /* banner without a link */ }
  const msg = h('div', { 'aria-live': 'polite' });
  return h('div', { class: 'banner', role: 'alert' }, expired.map((c) => {
    const f = forges.find((x) => x.name === c.forge && x.login_url);
    let again = null;
    if (f && c.linked) {
      // A linked account reconnects with the session's token (a connect),
      // never by signing in as that account.
      again = h('button', { type: 'button' }, 'Reconnect');
      again.addEventListener('click', () => connect(f).catch((e) => put(msg, note('Could not reconnect: ' + e.message, 'error'))));
    } else if (f) {
      again = h('a', { href: loginHref(f), class: 'button', 'data-external': '' }, 'Reconnect');
    }
    return h('p', {}, 'Your ', forgeNames[c.forge] || c.forge, ' connection (', c.login, ') has expired: pipelines there are hidden until you reconnect. ', again);
  }), msg);
}

async function pipelinesPage(signal) {
  document.title = 'Pipelines · Kontinuous';
  const [ps, banner] = await Promise.all([api.get('/api/v1/pipelines', { signal }), connections(signal).catch(() => null)]);
  const list = h('ul', { class: 'cards' }, ps.map((p) => {
    const b = p.latest_build;
    return h('li', { class: 'card' },
      h('h2', {}, link('/' + enc(p.owner) + '/' + enc(p.repo), p.owner, '/', p.repo)),
      b ? h('p', { class: 'meta' }, status(b.status), ' ',
        link(`/${enc(p.owner)}/${enc(p.repo)}/builds/${b.number}`, '#', String(b.number)), ' ',
        h('span', { class: 'branch' }, b.branch), ' ', h('code', {}, short(b.commit)), ' ',
        h('span', { class: 'author' }, b.author), ' ', age(b.created))
        : h('p', { class: 'muted' }, 'No builds yet'));
  }));
  put(main, banner,
    h('div', { class: 'titlebar' }, h('h1', {}, 'Pipelines'), h('a', { href: '/new', class: 'button' }, 'New pipeline')),
    ps.length ? list : note('No pipelines you can see yet. Press "New pipeline" to add one for a repository you administer.'));
}

async function newPipelinePage(signal) {
  document.title = 'New pipeline · Kontinuous';
  // Only repositories the caller administers: creating a pipeline installs
  // a webhook and a deploy key, which needs admin on the forge.
  const repos = (await api.get('/api/v1/repositories', { signal })).filter((r) => !r.permissions || r.permissions.admin);
  const msg = h('div', { 'aria-live': 'polite' });
  const create = async (r, btn) => {
    btn.disabled = true;
    put(msg, note('Creating ' + r.full_name + ': installing the webhook and deploy key…'));
    try {
      await api.call('POST', '/api/v1/pipelines', { body: { owner: r.owner, repo: r.name, forge: r.forge || 'github', events: ['push', 'pull_request'] } });
      go('/' + enc(r.owner) + '/' + enc(r.name));
    } catch (e) {
      btn.disabled = false;
      put(msg, note('Could not create ' + r.full_name + ': ' + e.message, 'error'));
    }
  };
  put(main, h('h1', {}, 'New pipeline'),
    h('p', {}, 'Pick a repository you administer. Kontinuous installs a webhook (push and pull request) and a read-only deploy key; builds follow .pipeline.yml.'),
    msg,
    repos.length ? h('ul', { class: 'rows' }, repos.map((r) => {
      const btn = h('button', { type: 'button' }, 'Create');
      btn.addEventListener('click', () => create(r, btn));
      return h('li', { class: 'row' }, h('span', { class: 'grow' }, r.full_name, r.forge ? h('span', { class: 'muted' }, ' · ' + (forgeNames[r.forge] || r.forge)) : null), ' ', btn);
    })) : note('None of your repositories lets you administer it, so none can get a pipeline. Ask an admin of the repository.'));
}

function buildRow(owner, repo, b) {
  return h('li', { class: 'row build', 'data-number': b.number },
    status(b.status), ' ',
    link(`/${enc(owner)}/${enc(repo)}/builds/${b.number}`, 'Build #', String(b.number)), ' ',
    h('span', { class: 'branch' }, b.branch), ' ', h('code', {}, short(b.commit)), ' ',
    h('span', { class: 'author' }, b.author), ' ', h('span', { class: 'muted' }, b.event), ' ', age(b.created),
    b.started ? h('span', { class: 'muted' }, ' · ' + duration(b.started, b.finished)) : null);
}

async function pipelinePage(signal, owner, repo) {
  document.title = owner + '/' + repo + ' · Kontinuous';
  const p = await api.get(api.pipe(owner, repo), { signal });
  const perms = p.permissions || {};
  const PAGE = 20;
  const builds = new Map();
  const list = h('ul', { class: 'rows builds', 'aria-label': 'Builds, newest first' });
  const empty = h('div');
  const more = h('button', { type: 'button', hidden: true }, 'Older builds');
  let oldest = 0;
  const draw = () => {
    const sorted = [...builds.values()].sort((a, b) => b.number - a.number);
    put(list, sorted.map((b) => buildRow(owner, repo, b)));
    put(empty, sorted.length ? null : note('No builds yet: push to ' + (p.latest_build?.branch || 'main') + (perms.push ? ' or press Run.' : '.')));
  };
  const fetchPage = async (before) => {
    const bs = await api.get(api.pipe(owner, repo, '/builds?limit=' + PAGE + (before ? '&before=' + before : '')), { signal });
    for (const b of bs) builds.set(b.number, b);
    if (bs.length) oldest = Math.min(...bs.map((b) => b.number));
    if (before || !oldest || bs.length) more.hidden = bs.length < PAGE || oldest <= 1;
    draw();
  };
  more.addEventListener('click', () => fetchPage(oldest).catch((e) => put(empty, note(e.message, 'error'))));

  let run = null;
  if (perms.push) {
    const input = h('input', { id: 'run-branch', name: 'branch', required: true, value: p.latest_build?.branch || 'main', autocomplete: 'off' });
    const out = h('div', { 'aria-live': 'polite' });
    run = h('form', { class: 'run' }, h('label', { for: 'run-branch' }, 'Branch'), input, h('button', { type: 'submit', class: 'primary' }, 'Run'), out);
    run.addEventListener('submit', async (e) => {
      e.preventDefault();
      put(out, note('Starting a build of ' + input.value + '…'));
      try {
        const u = api.user() || {};
        const b = await api.call('POST', api.pipe(owner, repo, '/builds'), { body: { author: u.user_name || '', branch: input.value }, extra: { 'X-Custom-Event': 'dashboard' } });
        put(out, note('Build #' + b.number + ' started.'));
        builds.set(b.number, b);
        draw();
      } catch (err) { put(out, note('Could not start the build: ' + err.message, 'error')); }
    });
  }
  put(main,
    h('div', { class: 'titlebar' }, h('h1', {}, owner, '/', repo),
      perms.admin ? h('a', { href: `/${enc(owner)}/${enc(repo)}/settings`, class: 'button' }, 'Settings') : null),
    h('p', { class: 'muted' }, 'Events: ', (p.events || []).join(', '), ' · your access: ', perms.admin ? 'admin' : perms.push ? 'push' : 'read'),
    run, h('h2', {}, 'Builds'), empty, list, more);
  await fetchPage(0);
  api.watchBuilds(owner, repo, (s) => {
    if (s) { builds.set(s.number, s); draw(); return; }
    fetchPage(0).catch(() => { /* the next refresh tries again */ });
  }, signal);
}

async function settingsPage(signal, owner, repo) {
  document.title = 'Settings · ' + owner + '/' + repo + ' · Kontinuous';
  const base = '/' + enc(owner) + '/' + enc(repo);
  const secretsBox = h('div', {}, note('Loading secrets…'));
  const defBox = h('div', {}, note('Loading .pipeline.yml…'));
  const secretsMsg = h('div', { 'aria-live': 'polite' });
  const loadSecrets = async () => {
    const sets = await api.get(api.pipe(owner, repo, '/secrets'), { signal });
    put(secretsBox, sets.length ? h('ul', { class: 'rows' }, sets.map((s) => {
      const del = h('button', { type: 'button', class: 'danger' }, 'Delete');
      del.addEventListener('click', async () => {
        if (!confirm('Delete the secret set ' + s.name + '?')) return;
        try { await api.call('DELETE', api.pipe(owner, repo, '/secrets/' + enc(s.name))); put(secretsMsg, note('Deleted ' + s.name + '.')); loadSecrets(); } catch (e) { put(secretsMsg, note(e.message, 'error')); }
      });
      return h('li', { class: 'row' }, h('strong', {}, s.name), ' ', h('span', { class: 'grow muted' }, 'keys: ', (s.keys || []).join(', ') || 'none'), del);
    })) : note('No secrets yet.'));
  };
  const name = h('input', { id: 'sec-name', required: true, pattern: '[a-z0-9]([-a-z0-9.]*[a-z0-9])?', autocomplete: 'off' });
  const data = h('textarea', { id: 'sec-data', required: true, rows: 3, autocomplete: 'off', spellcheck: 'false', placeholder: 'API_TOKEN=…' });
  const form = h('form', { class: 'stack' },
    h('label', { for: 'sec-name' }, 'Secret set name (lower case, digits, - and .)'), name,
    h('label', { for: 'sec-data' }, 'Values, one KEY=value a line (replaces the whole set; values are never shown again)'), data,
    h('button', { type: 'submit' }, 'Save secret set'));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const body = {};
    for (const line of data.value.split('\n')) {
      if (!line.trim()) continue;
      const i = line.indexOf('=');
      if (i < 1) return put(secretsMsg, note('Each line needs KEY=value.', 'error'));
      body[line.slice(0, i).trim()] = line.slice(i + 1);
    }
    try {
      await api.call('PUT', api.pipe(owner, repo, '/secrets/' + enc(name.value)), { body: { data: body } });
      data.value = '';
      put(secretsMsg, note('Saved ' + name.value + '.'));
      loadSecrets();
    } catch (err) { put(secretsMsg, note(err.message, 'error')); }
  });
  const confirmInput = h('input', { id: 'del-confirm', autocomplete: 'off' });
  const delMsg = h('div', { 'aria-live': 'polite' });
  const delForm = h('form', { class: 'stack' },
    h('label', { for: 'del-confirm' }, 'Type ', owner + '/' + repo, ' to delete the pipeline with its webhook, deploy key, builds, logs and secrets'),
    confirmInput, h('button', { type: 'submit', class: 'danger' }, 'Delete pipeline'), delMsg);
  delForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (confirmInput.value !== owner + '/' + repo) return put(delMsg, note('Type the name exactly to confirm.', 'error'));
    try { await api.call('DELETE', api.pipe(owner, repo)); go('/'); } catch (err) { put(delMsg, note(err.message, 'error')); }
  });
  put(main, h('p', {}, link(base, '← ', owner, '/', repo)), h('h1', {}, 'Settings'),
    h('section', { 'aria-labelledby': 'h-secrets' }, h('h2', { id: 'h-secrets' }, 'Secrets'), secretsMsg, secretsBox, form),
    h('section', { 'aria-labelledby': 'h-def' }, h('h2', { id: 'h-def' }, '.pipeline.yml on the default branch'), defBox),
    h('section', { 'aria-labelledby': 'h-del' }, h('h2', { id: 'h-del' }, 'Delete'), delForm));
  loadSecrets().catch((e) => put(secretsBox, note('Could not load secrets: ' + e.message, 'error')));
  api.get(api.pipe(owner, repo, '/definition'), { signal }).then((d) => {
    const bytes = Uint8Array.from(atob(d.content || ''), (c) => c.charCodeAt(0));
    put(defBox, h('pre', { class: 'file', tabindex: '0' }, new TextDecoder().decode(bytes)), h('p', { class: 'muted' }, 'blob ', short(d.sha)));
  }).catch((e) => put(defBox, note('Could not read .pipeline.yml: ' + e.message, 'error')));
}

async function buildPage(signal, owner, repo, n, stageArg) {
  const number = Number(n);
  document.title = 'Build #' + number + ' · ' + owner + '/' + repo + ' · Kontinuous';
  const base = `/${enc(owner)}/${enc(repo)}/builds/${number}`;
  const [p, first] = await Promise.all([api.get(api.pipe(owner, repo), { signal }), api.get(api.pipe(owner, repo, '/builds/' + number), { signal })]);
  const perms = p.permissions || {};
  let b = first;
  const stages = () => b.stages || [];
  const selected = Number(stageArg) || b.current_stage || stages()[0]?.index || 1;
  const head = h('div');
  const stageList = h('ol', { class: 'rows stages', 'aria-label': 'Stages' });
  const msg = h('div', { 'aria-live': 'polite' });
  const logBox = h('div');

  const act = async (label, method, path, after) => {
    put(msg, note(label + '…'));
    try {
      const res = await api.call(method, api.pipe(owner, repo, path));
      put(msg, note(label + ': done.'));
      if (after) after(res); else refresh();
    } catch (e) { put(msg, note(label + ' failed: ' + e.message, 'error')); }
  };
  const button = (text, cls, fn) => h('button', { type: 'button', class: cls, onclick: fn }, text);

  const draw = () => {
    const actions = [];
    if (perms.push && !final(b.status)) actions.push(button('Cancel build', 'danger', () => act('Cancel', 'POST', `/builds/${number}/cancel`)));
    if (perms.push && final(b.status)) actions.push(button('Restart', '', () => act('Restart', 'POST', `/builds/${number}/restart`, (nb) => nb && nb.number && go(`/${enc(owner)}/${enc(repo)}/builds/${nb.number}`))));
    put(head,
      h('p', {}, link('/' + enc(owner) + '/' + enc(repo), '← ', owner, '/', repo)),
      h('div', { class: 'titlebar' }, h('h1', {}, 'Build #', String(number), ' ', status(b.status)), h('div', { class: 'actions' }, actions)),
      h('dl', { class: 'facts' },
        h('dt', {}, 'Branch'), h('dd', { class: 'branch' }, b.branch),
        h('dt', {}, 'Commit'), h('dd', {}, h('code', { title: b.commit }, short(b.commit))),
        h('dt', {}, 'Author'), h('dd', { class: 'author' }, b.author),
        h('dt', {}, 'Event'), h('dd', {}, b.event),
        h('dt', {}, 'Created'), h('dd', {}, age(b.created)),
        h('dt', {}, 'Duration'), h('dd', {}, duration(b.started, b.finished) || 'not started')));
    put(stageList, stages().length ? stages().map((s) => {
      const acts = [];
      if (perms.push && s.status === 'WAITING') acts.push(button('Approve', 'primary', () => act('Approve ' + s.name, 'POST', `/builds/${number}/stages/${s.index}?continue=yes`)));
      if (perms.push && final(b.status)) acts.push(button('Run from here', '', () => act('Run from ' + s.name, 'POST', `/builds/${number}/stages/${s.index}/run`, (nb) => nb && nb.number && go(`/${enc(owner)}/${enc(repo)}/builds/${nb.number}`))));
      return h('li', { class: 'row stage' + (s.index === selected ? ' selected' : '') },
        status(s.status), ' ',
        h('a', { href: `${base}/stages/${s.index}`, 'aria-current': s.index === selected ? 'true' : undefined }, String(s.index), '. ', s.name),
        ' ', h('span', { class: 'muted' }, s.type), ' ',
        h('span', { class: 'muted' }, duration(s.started, s.finished)),
        s.message ? h('span', { class: 'message' }, s.message) : null,
        acts.length ? h('span', { class: 'actions' }, acts) : null);
    }) : note(final(b.status) ? 'This build has no stages.' : 'Reading .pipeline.yml…'));
  };
  const refresh = async () => {
    try { b = await api.get(api.pipe(owner, repo, '/builds/' + number), { signal }); draw(); } catch { /* the next update tries again */ }
  };
  draw();
  const st = stages().find((s) => s.index === selected);
  const view = new LogView({
    path: api.pipe(owner, repo, `/builds/${number}/stages/${selected}/logs`),
    filename: `${owner}-${repo}-${number}-${selected}.log`,
    label: 'Log of stage ' + selected + (st ? ' (' + st.name + ')' : ''),
  });
  put(logBox, h('h2', {}, 'Log of stage ', String(selected), st ? ': ' + st.name : ''), view.el);
  put(main, head, msg, h('h2', {}, 'Stages'), stageList, logBox);
  window.addEventListener('hashchange', () => view.mark(), { signal });
  view.follow(signal);
  api.watchBuilds(owner, repo, (s) => {
    if (s === null) { if (!final(b.status)) refresh(); return; }
    if (s.number === number) refresh();
  }, signal);
}

render();
