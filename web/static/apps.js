// Applications (OAuth 1.0a consumers such as Bitbucket Data Center's
// Application Links): the consent page a consumer sends the user to, and
// the list of applications the user allowed, with Revoke, on /account
// (below the forge accounts of accounts.js).
import { h, put, age, note } from './dom.js';
import * as api from './api.js';
import { accountsSection } from './accounts.js';

/** /oauth/1.0a/authorize?oauth_token=…: who asks, for what; Allow / Deny. */
export async function consentPage(main, signal) {
  document.title = 'Authorize an application · Kontinuous';
  const token = new URLSearchParams(location.search).get('oauth_token') || '';
  if (!token) return put(main, h('h1', {}, 'Nothing to authorize'), note('This link has no oauth_token: start again from the application.', 'error'));
  const p = await api.get('/api/v1/oauth1/authorize?oauth_token=' + encodeURIComponent(token), { signal });
  const u = api.user() || {};
  let back = p.callback;
  try { back = new URL(p.callback).host; } catch { /* shown as given */ }
  const msg = h('div', { 'aria-live': 'polite' });
  const decide = async (allow, buttons) => {
    buttons.forEach((b) => { b.disabled = true; });
    put(msg, note(allow ? 'Allowing…' : 'Denying…'));
    try {
      const res = await api.call('POST', '/api/v1/oauth1/authorize', { body: { oauth_token: token, allow } });
      put(msg, note('Returning to ' + back + '…'));
      location.assign(res.redirect);
    } catch (e) {
      buttons.forEach((b) => { b.disabled = false; });
      put(msg, note(e.message, 'error'));
    }
  };
  const allow = h('button', { type: 'button', class: 'primary' }, 'Allow');
  const deny = h('button', { type: 'button' }, 'Deny');
  allow.addEventListener('click', () => decide(true, [allow, deny]));
  deny.addEventListener('click', () => decide(false, [allow, deny]));
  put(main,
    h('h1', {}, 'Allow ', p.consumer_name, ' to use Kontinuous as you?'),
    h('p', {}, h('strong', {}, p.consumer_name), ' (consumer key ', h('code', {}, p.consumer_key), ') asks to act as ',
      h('strong', {}, u.user_name || u.user_id || 'you'), ': to see the pipelines, builds and logs you can see, and to run, cancel, approve and restart builds where you may.'),
    h('p', { class: 'muted' }, 'It keeps this access until you revoke it under Account. Either way you return to ', back, '.'),
    h('p', { class: 'buttons' }, allow, ' ', deny), msg);
  allow.focus();
}

/**
 * /account: the user's forge accounts (Connect, Reconnect, Disconnect),
 * then the applications they allowed, each with Revoke.
 */
export async function accountPage(main, signal) {
  document.title = 'Account · Kontinuous';
  const box = h('div', {}, note('Loading applications…'));
  const msg = h('div', { 'aria-live': 'polite' });
  const load = async () => {
    let apps;
    try {
      apps = await api.get('/api/v1/user/applications', { signal });
    } catch (e) {
      if (e.status === 501) return put(box, note('No applications can be linked to this server.'));
      throw e;
    }
    put(box, apps.length ? h('ul', { class: 'rows' }, apps.map((a) => {
      const del = h('button', { type: 'button', class: 'danger' }, 'Revoke');
      del.addEventListener('click', async () => {
        if (!confirm('Revoke the access of ' + a.name + '? It stops working at once.')) return;
        try {
          await api.call('DELETE', '/api/v1/user/applications/' + encodeURIComponent(a.key));
          put(msg, note('Revoked ' + a.name + '.'));
          load().catch((e) => put(box, note(e.message, 'error')));
        } catch (e) { put(msg, note(e.message, 'error')); }
      });
      return h('li', { class: 'row' }, h('strong', {}, a.name), ' ',
        h('span', { class: 'grow muted' }, h('code', {}, a.key), ' · allowed ', age(a.authorized)), del);
    })) : note('You have not allowed any application to act as you.'));
  };
  const accounts = accountsSection(signal);
  put(main, h('h1', {}, 'Account'), accounts.el,
    h('section', { 'aria-labelledby': 'h-apps' }, h('h2', { id: 'h-apps' }, 'Applications'),
      h('p', { class: 'muted' }, 'Applications (such as Bitbucket Data Center) you allowed to act as you.'), msg, box));
  await Promise.all([accounts.load(), load()]);
}
