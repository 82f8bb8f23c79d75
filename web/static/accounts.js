// Forge accounts: the forges' names and sign-in links, connecting another
// forge's account to the signed-in user (account linking), and the
// Accounts section of /account, one row per enabled forge.
import { h, put, note } from './dom.js';
import * as api from './api.js';

const enc = encodeURIComponent;

export const forgeNames = { github: 'GitHub', bitbucket: 'Bitbucket', 'bitbucket-dc': 'Bitbucket Data Center' };
/** The forge's name for people ("bitbucket" → "Bitbucket"). */
export const forgeName = (f) => forgeNames[f] || f;
/** Where a forge sends the browser back after its authorize page. */
export const callbackURL = (forge) => location.origin + '/auth/callback/' + forge;
/** The authorize route of f (an element of /api/v1/forges) with this UI's callback. */
export const loginHref = (f) => f.login_url + (f.login_url.includes('?') ? '&' : '?') + 'redirect_uri=' + enc(callbackURL(f.name));
/** The forge a user id belongs to ("github|1001" → "github"). */
export const forgeOf = (userID) => {
  const i = (userID || '').indexOf('|');
  return i < 0 ? '' : userID.slice(0, i);
};

/**
 * Sends the browser to f's authorize page to connect that forge to the
 * signed-in user (or, for the forge they signed in with, to sign in
 * again, which reconnects it). A navigation cannot carry the Bearer token
 * that makes it a connect, so the authorize URL is fetched as JSON with
 * the token first. The callback page comes back to /account.
 */
export async function connect(f) {
  const res = await api.get(loginHref(f));
  if (!res || !/^https?:\/\//i.test(res.url || '')) throw new Error('the server gave no authorize address for ' + forgeName(f.name));
  api.rememberReturn('/account');
  location.assign(res.url);
}

let confirmation = null;
/** Keeps a connect's reply ({connected: {forge, login}}) for /account to confirm. */
export function confirmConnected(res) { confirmation = res.connected; }

/**
 * The Accounts section of /account: for each enabled forge, the user's
 * connection there and what they can do with it (Connect, Reconnect,
 * Disconnect; the forge they signed in with cannot be disconnected).
 * Answers the section (el) and load(), which fills it in.
 */
export function accountsSection(signal) {
  const box = h('div', {}, note('Loading your accounts…'));
  const msg = h('div', { 'aria-live': 'polite' });
  if (confirmation) {
    put(msg, note('Connected your ' + forgeName(confirmation.forge) + ' account ' + confirmation.login + '.'));
    confirmation = null;
  }
  const button = (text, cls, fn) => {
    const b = h('button', { type: 'button', class: cls }, text);
    b.addEventListener('click', () => fn(b));
    return b;
  };
  const start = async (f, b) => {
    b.disabled = true;
    put(msg, note('Opening ' + forgeName(f.name) + '…'));
    try {
      await connect(f);
    } catch (e) {
      b.disabled = false;
      put(msg, note('Could not connect ' + forgeName(f.name) + ': ' + e.message, 'error'));
    }
  };
  const disconnect = async (f, c, b) => {
    const name = forgeName(f.name);
    if (!confirm('Disconnect your ' + name + ' account ' + c.login + '? Kontinuous deletes its tokens; you can connect it again.')) return;
    b.disabled = true;
    put(msg, note('Disconnecting ' + name + '…'));
    try {
      await api.call('DELETE', '/api/v1/user/connections/' + enc(f.name));
      put(msg, note('Disconnected your ' + name + ' account ' + c.login + '.'));
    } catch (e) {
      b.disabled = false;
      // 409: the server says why (the forge signed in with, or the pipelines it owns).
      return put(msg, note('Could not disconnect ' + name + ': ' + e.message, 'error'));
    }
    await load().catch(() => { /* a 401: sign-in took over */ });
    box.querySelector('li[data-forge="' + CSS.escape(f.name) + '"] button')?.focus();
  };
  const row = (f, c, own) => {
    const state = !c ? h('span', { class: 'muted' }, 'Not connected')
      : c.status === 'expired' ? h('span', {}, h('strong', {}, c.login), ' · expired: reconnect to use it again')
        : h('span', {}, 'Connected as ', h('strong', {}, c.login));
    let action;
    if (!c) action = button('Connect', 'primary', (b) => start(f, b));
    else if (c.status === 'expired') action = button('Reconnect', 'primary', (b) => start(f, b));
    else if (f.name === own) action = h('span', { class: 'muted' }, 'you signed in with it');
    else action = button('Disconnect', 'danger', (b) => disconnect(f, c, b));
    return h('li', { class: 'row', 'data-forge': f.name }, h('strong', {}, forgeName(f.name)), ' ', h('span', { class: 'grow' }, state), action);
  };
  const fill = async () => {
    const [me, forges] = await Promise.all([api.get('/api/v1/user', { signal }), api.get('/api/v1/forges', { signal })]);
    const conns = me.connections || [];
    // The connection signed in with is the one not linked (an Auth0 user's
    // id has no forge prefix; the server maps it to its default forge).
    const own = conns.find((c) => !c.linked)?.forge || forgeOf(me.user_id);
    const enabled = forges.filter((f) => f.login_url);
    put(box, enabled.length ? h('ul', { class: 'rows', 'aria-label': 'Your forge accounts' },
      enabled.map((f) => row(f, conns.find((c) => c.forge === f.name), own)))
      : note('No forge login is configured on this server.'));
  };
  // A failure stays in this section (a 401 goes on to sign-in).
  const load = () => fill().catch((e) => {
    if (signal.aborted || e.status === 401) throw e;
    put(box, note('Could not load your accounts: ' + e.message, 'error'));
  });
  const el = h('section', { 'aria-labelledby': 'h-accounts' }, h('h2', { id: 'h-accounts' }, 'Accounts'),
    h('p', { class: 'muted' }, 'Your accounts on the forges this server works with. Connect another forge to see and build its repositories as the same Kontinuous user.'),
    msg, box);
  return { el, load };
}
