/*
 * NotiSync console -- a page served by notisyncd at /console that uses the
 * same client module as any app (/notisync.js): one device connection (token
 * + device id) for notifications, actions and presence, and one public
 * connection for the comment feed.  No build step, no third-party code, no
 * inline script or style (the server's Content-Security-Policy forbids them).
 *
 * What it keeps: notifications by id (a replay after a reconnect updates an
 * entry, never adds a second), devices by device_id, comments of the note
 * shown by comment id.  The unread figure is the server's (welcome,
 * new_notification, notification_sync, a bulk ok) when it has sent one,
 * else what the page counts among the notifications it holds.
 */
import { NotiSync } from '/notisync.js';

const $ = (id) => document.getElementById(id);
const MAX_NOTIFS = 200;
const MAX_COMMENTS = 500;
const wsBase = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}`;

const ui = {
  client: null,        // NotiSync device connection, or null
  pub: null,           // public comment channel connection
  token: '',           // the token in use (REST calls)
  devUser: '',         // user of the dev token in use ('' = pasted token)
  me: { user: '', device: '' },
  notifs: new Map(),   // notification id -> notification (data of new_notification)
  fresh: new Set(),    // ids that arrived live, flashed once
  serverUnread: null,  // last `unread` the server sent, or null
  devices: new Map(),  // device_id -> {device_id, device_name, status, last_seen}
  noteId: 'demo',
  comments: new Map(), // comment id -> comment
  loadedHistory: false,
};

/* ------------------------------------------------------------ helpers */

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

function say(id, text, isError = false) {
  const m = $(id);
  m.textContent = text || '';
  m.classList.toggle('error', !!isError);
}

function timeText(ts) {
  const d = ts ? new Date(ts) : null;
  if (!d || Number.isNaN(d.getTime())) return '';
  return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

function randomDevice() {
  const b = new Uint8Array(4);
  crypto.getRandomValues(b);
  return `web-${Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('')}`;
}

/* A handler's message data: the module calls handlers with (data, msg). */
function payload(x, m) {
  return (m && m.data) || x || {};
}

/* fetch() with the token; resolves {status, json}. */
async function api(method, path, body) {
  const headers = {};
  if (ui.token) headers.Authorization = `Bearer ${ui.token}`;
  if (ui.me.device) headers['X-Device-ID'] = ui.me.device;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: 'no-store',
  });
  let json = null;
  try { json = await res.json(); } catch { json = null; }
  return { status: res.status, json };
}

function errorText(r) {
  const e = r.json && r.json.error;
  return e ? `${r.status} ${e.code}: ${e.message}` : `HTTP ${r.status}`;
}

/* --------------------------------------------------------- dev token */

async function fetchDevToken(user) {
  const r = await fetch(`/console/dev-token?user=${encodeURIComponent(user)}`, { cache: 'no-store' });
  if (r.status === 404) throw Object.assign(new Error('dev tokens are off on this server (dev_console = false): paste a token'), { off: true });
  const j = await r.json().catch(() => null);
  if (r.status !== 200 || !j || !j.token) throw new Error((j && j.error && j.error.message) || `HTTP ${r.status}`);
  return j.token;
}

$('dev-token-btn').addEventListener('click', async () => {
  const user = $('user').value.trim();
  if (!user) { say('login-msg', 'name a user first', true); return; }
  try {
    $('token').value = await fetchDevToken(user);
    ui.devUser = user;
    say('login-msg', `dev token for ${user}, valid 1 hour (renewed on reconnect)`);
  } catch (e) {
    say('login-msg', e.message, true);
    if (e.off) $('dev-row').hidden = true;
  }
});

/* ------------------------------------------------------ notifications */

function unreadLocal() {
  let n = 0;
  for (const x of ui.notifs.values()) if (!x.is_read && !x.is_dismissed) n += 1;
  return n;
}

function takeUnread(data) {
  if (data && typeof data.unread === 'number') ui.serverUnread = data.unread;
}

function renderUnread() {
  const n = ui.serverUnread !== null ? ui.serverUnread : unreadLocal();
  const c = $('unread');
  c.textContent = String(n);
  c.classList.toggle('zero', n === 0);
}

function renderNotifs() {
  const list = $('notif-list');
  const shown = [...ui.notifs.values()]
    .filter((n) => !n.is_dismissed)
    .sort((a, b) => String(b.created_at || '').localeCompare(String(a.created_at || '')))
    .slice(0, MAX_NOTIFS);
  list.replaceChildren(...shown.map(notifItem));
  $('notif-empty').hidden = shown.length > 0;
  ui.fresh.clear();
  renderUnread();
}

function notifItem(n) {
  const li = el('li', `notif${n.is_read ? ' is-read' : ''}${ui.fresh.has(n.id) ? ' fresh' : ''}`);
  li.dataset.id = n.id;
  li.append(el('div', 'title', n.title));
  if (n.body) li.append(el('div', 'body', n.body));
  const meta = [n.app_name, n.category, n.priority ? `priority ${n.priority}` : '',
    n.source_device ? `from ${n.source_device}` : '', timeText(n.created_at)].filter(Boolean).join(' · ');
  li.append(el('div', 'meta', meta));
  const acts = el('div', 'actions');
  const read = el('button', 'small act-read', n.is_read ? 'Unread' : 'Read');
  read.type = 'button';
  read.addEventListener('click', () => act(n.id, n.is_read ? 'unread' : 'read'));
  const dismiss = el('button', 'small act-dismiss', 'Dismiss');
  dismiss.type = 'button';
  dismiss.addEventListener('click', () => act(n.id, 'dismiss'));
  acts.append(read, dismiss);
  li.append(acts);
  return li;
}

function upsertNotif(n, live) {
  if (!n || typeof n.id !== 'string') return;
  const old = ui.notifs.get(n.id);
  ui.notifs.set(n.id, old ? { ...old, ...n } : n);
  if (live && !old) ui.fresh.add(n.id);
  if (ui.notifs.size > MAX_NOTIFS * 2) { // forget the oldest beyond the bound
    const oldest = [...ui.notifs.values()].sort((a, b) => String(a.created_at).localeCompare(String(b.created_at)));
    for (const x of oldest.slice(0, ui.notifs.size - MAX_NOTIFS * 2)) ui.notifs.delete(x.id);
  }
}

function applyAction(id, action) {
  const n = ui.notifs.get(id);
  if (!n) return;
  if (action === 'read') n.is_read = true;
  else if (action === 'unread') n.is_read = false;
  else if (action === 'dismiss') n.is_dismissed = true;
}

function applySync(d) {
  if (d.all) { // bulk: every notification (up to `before`'s created_at)
    const limit = d.before && ui.notifs.get(d.before) ? ui.notifs.get(d.before).created_at : null;
    for (const n of ui.notifs.values()) {
      if (!limit || String(n.created_at) <= String(limit)) applyAction(n.id, d.action);
    }
    return;
  }
  const n = ui.notifs.get(d.notification_id);
  if (!n) return;
  if (typeof d.is_read === 'boolean') n.is_read = d.is_read;
  if (typeof d.is_dismissed === 'boolean') n.is_dismissed = d.is_dismissed;
}

async function act(id, action) {
  if (!ui.client) return;
  const before = ui.notifs.get(id);
  const wasUnread = before && !before.is_read && !before.is_dismissed;
  try {
    const res = await ui.client.action(id, action);
    applyAction(id, action);
    const d = res && typeof res === 'object' && res.data ? res.data : res;
    if (d && typeof d.unread === 'number') ui.serverUnread = d.unread;
    else if (ui.serverUnread !== null) {
      const n = ui.notifs.get(id);
      const isUnread = n && !n.is_read && !n.is_dismissed;
      ui.serverUnread = Math.max(0, ui.serverUnread + (isUnread ? 1 : 0) - (wasUnread ? 1 : 0));
    }
    renderNotifs();
  } catch (e) {
    say('compose-msg', `${action} failed: ${e && (e.code || e.message) ? (e.code || e.message) : e}`, true);
  }
}

/* History from REST (first connect, and after a queue_overflow): merged by
 * id, so what the queue replays next is not shown twice. */
async function loadHistory() {
  const r = await api('GET', '/api/v1/notifications?limit=50');
  if (r.status !== 200 || !r.json || !Array.isArray(r.json.notifications)) return;
  for (const n of r.json.notifications) upsertNotif(n, false);
  renderNotifs();
}

/* ------------------------------------------------------------ devices */

function renderDevices() {
  const list = $('device-list');
  const rows = [...ui.devices.values()].sort((a, b) => a.device_id.localeCompare(b.device_id));
  list.replaceChildren(...rows.map((d) => {
    const li = el('li');
    li.dataset.device = d.device_id;
    li.dataset.status = d.status;
    const dot = el('span', `dot${d.status === 'online' ? ' online' : ''}`);
    dot.title = d.status;
    const name = el('span', 'name', d.device_name ? `${d.device_name} (${d.device_id})` : d.device_id);
    if (d.device_id === ui.me.device) name.append(' ', el('span', 'you', 'this page'));
    li.append(dot, name, el('span', 'seen', d.status === 'online' ? 'online' : `seen ${timeText(d.last_seen)}`));
    return li;
  }));
}

function upsertDevice(d) {
  if (!d || typeof d.device_id !== 'string') return;
  const old = ui.devices.get(d.device_id) || {};
  ui.devices.set(d.device_id, { ...old, ...d });
}

async function loadDevices() {
  const r = await api('GET', '/api/v1/devices');
  if (r.status !== 200 || !r.json || !Array.isArray(r.json.devices)) return;
  for (const d of r.json.devices) {
    // live status events may have arrived meanwhile: keep theirs
    const known = ui.devices.get(d.device_id);
    upsertDevice(known && known.status ? { ...d, status: known.status } : d);
  }
  markSelf();
  renderDevices();
}

function markSelf() {
  if (!ui.me.device || !ui.client) return;
  const st = ui.client.getState ? ui.client.getState().status : '';
  upsertDevice({ device_id: ui.me.device, status: st === 'connected' ? 'online' : 'offline' });
}

/* --------------------------------------------------------- connection */

function renderState(s) {
  const st = (s && s.status) || 'closed';
  $('conn-status').textContent = st;
  const badge = $('conn-badge');
  badge.textContent = st;
  badge.dataset.status = st;
  $('conn-reconnects').textContent = String((s && s.reconnects) || 0);
  const lat = s && typeof s.lastLatencyMs === 'number' ? `${Math.round(s.lastLatencyMs)} ms` : '-';
  $('conn-latency').textContent = lat;
  $('connect-btn').disabled = !!ui.client;
  $('disconnect-btn').disabled = !ui.client;
  if (s && s.devices) { // the client's own live list, when it keeps one
    const list = Array.isArray(s.devices) ? s.devices
      : Object.entries(s.devices).map(([id, v]) => (typeof v === 'string' ? { device_id: id, status: v } : { device_id: id, ...v }));
    for (const d of list) if (d && d.device_id && d.device_id !== ui.me.device) upsertDevice(d);
  }
  markSelf();
  renderDevices();
}

function connect(ev) {
  ev.preventDefault();
  if (ui.client) return;
  const token = $('token').value.trim();
  const device = $('device').value.trim();
  if (!token) { say('login-msg', 'a token is needed (or fill a dev token)', true); return; }
  if (!/^[A-Za-z0-9._:-]{1,64}$/.test(device)) { say('login-msg', 'device id: 1-64 of [A-Za-z0-9._:-]', true); return; }
  sessionStorage.setItem('notisync.console.device', device);
  ui.token = token;
  ui.me = { user: '', device };
  ui.notifs.clear();
  ui.devices.clear();
  ui.serverUnread = null;
  ui.loadedHistory = false;
  const devUser = ui.devUser && $('user').value.trim() === ui.devUser ? ui.devUser : '';
  let first = true;
  /* The module calls this on every (re)connect and before `exp`: the first
   * call uses the token in the field, later ones renew a dev token. */
  const tokenFn = async () => {
    if (!first && devUser) {
      try { ui.token = await fetchDevToken(devUser); $('token').value = ui.token; } catch { /* keep the old one */ }
    }
    first = false;
    return ui.token;
  };
  let client;
  try {
    client = new NotiSync({
      url: `${wsBase}/ws`, token: tokenFn, deviceId: device, ack: $('ack').checked,
      deviceName: $('device-name').value.trim() || 'Console', platform: 'web',
    });
  } catch (e) {
    say('login-msg', e.message, true);
    return;
  }
  ui.client = client;
  window.notisyncConsole.client = client;
  client.on('welcome', (x, m) => {
    const d = payload(x, m);
    ui.me.user = d.user_id || ui.me.user;
    $('conn-user').textContent = ui.me.user || '-';
    $('conn-device').textContent = d.device_id || device;
    takeUnread(d);
    for (const x of d.devices || []) if (x.device_id !== device) upsertDevice(x);
    markSelf();
    renderDevices();
    renderUnread();
    if (!ui.loadedHistory) {
      ui.loadedHistory = true;
      loadHistory();
    }
    loadDevices();
    say('login-msg', `connected as ${ui.me.user}`);
  });
  client.on('new_notification', (x, m) => {
    const d = payload(x, m);
    // how often the module handed each notification over (tests: 1 each)
    const seen = window.notisyncConsole.deliveries;
    if (typeof d.id === 'string' && (seen.has(d.id) || seen.size < 10000)) seen.set(d.id, (seen.get(d.id) || 0) + 1);
    takeUnread(d);
    upsertNotif(d, true);
    renderNotifs();
  });
  client.on('notification_sync', (x, m) => {
    const d = payload(x, m);
    takeUnread(d);
    applySync(d);
    renderNotifs();
  });
  client.on('device_status', (x, m) => {
    upsertDevice(payload(x, m));
    renderDevices();
  });
  client.on('queue_overflow', (x, m) => {
    say('login-msg', `${payload(x, m).missed || 'some'} notifications were dropped while away: reloading`);
    loadHistory();
  });
  const stopped = (why) => (e) => {
    say('login-msg', `${why}${e && e.reason ? `: ${e.reason}` : ''}`, true);
    disconnect();
  };
  client.on('auth_failed', stopped('authentication failed'));
  client.on('replaced', stopped('replaced by another connection of this device'));
  client.on('error', (x, m) => {
    const d = payload(x, m);
    if (d.code) say('login-msg', `server error: ${d.code}`, true);
  });
  if (client.onState) client.onState(renderState);
  renderState(client.getState ? client.getState() : { status: 'connecting' });
}

function disconnect() {
  const c = ui.client;
  ui.client = null;
  window.notisyncConsole.client = null;
  if (c) { try { c.close(); } catch { /* closed */ } }
  renderState({ status: 'closed', reconnects: 0 });
}

$('login-form').addEventListener('submit', connect);
$('disconnect-btn').addEventListener('click', disconnect);

/* ----------------------------------------------------------- composer */

$('compose-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  if (!ui.token) { say('compose-msg', 'connect with a token first', true); return; }
  const body = {
    app_name: $('c-app').value.trim() || 'console',
    title: $('c-title').value,
    body: $('c-body').value,
    priority: Number($('c-priority').value),
  };
  $('c-send').disabled = true;
  try {
    const r = await api('POST', '/api/v1/notifications', body);
    if (r.status === 201 || r.status === 200) {
      say('compose-msg', `sent: ${r.json.id}`);
      $('c-title').value = '';
      $('c-body').value = '';
    } else {
      say('compose-msg', errorText(r), true);
    }
  } catch (e) {
    say('compose-msg', e.message, true);
  } finally {
    $('c-send').disabled = false;
  }
});

/* ----------------------------------------------------------- comments */

function commentsPath(id) {
  return `/api/v1/notes/${encodeURIComponent(id)}/comments`;
}

function renderComments() {
  const list = $('comment-list');
  const rows = [...ui.comments.values()]
    .sort((a, b) => String(a.createdAt).localeCompare(String(b.createdAt)))
    .slice(-MAX_COMMENTS);
  list.replaceChildren(...rows.map((c) => {
    const li = el('li', 'comment');
    li.dataset.commentId = c.id;
    const head = el('div');
    head.append(el('span', 'who', c.username || c.userId), el('span', 'when', timeText(c.createdAt)));
    li.append(head, el('div', 'text', c.content));
    return li;
  }));
  list.scrollTop = list.scrollHeight;
}

function setComments(postId, comments) {
  if (postId !== ui.noteId || !Array.isArray(comments)) return;
  ui.comments.clear();
  for (const c of comments) if (c && c.id) ui.comments.set(c.id, c);
  renderComments();
}

async function showNote(id) {
  ui.noteId = id;
  ui.comments.clear();
  renderComments();
  if (ui.pub) {
    if (ui.pub.unsubscribe && ui.noteIdSubscribed) ui.pub.unsubscribe(ui.noteIdSubscribed);
    ui.noteIdSubscribed = id;
    Promise.resolve().then(() => ui.pub.subscribe(id)).catch(() => { /* asked again on reconnect */ });
  }
  const r = await api('GET', commentsPath(id));
  if (r.status === 200 && r.json) setComments(r.json.postId || id, r.json.comments);
}

function openPublic() {
  let pub;
  try {
    pub = NotiSync.public({ url: `${wsBase}/api/v1/ws` });
  } catch (e) {
    $('pub-status').textContent = `unavailable: ${e.message}`;
    return;
  }
  ui.pub = pub;
  window.notisyncConsole.pub = pub;
  pub.on('comments.list', (x, m) => { const d = payload(x, m); setComments(d.postId, d.comments); });
  pub.on('comment.created', (x, m) => {
    const d = payload(x, m);
    if (d.postId !== ui.noteId || !d.comment) return;
    ui.comments.set(d.comment.id, d.comment);
    renderComments();
  });
  pub.on('comment.updated', (x, m) => {
    const d = payload(x, m);
    if (d.postId === ui.noteId && d.action === 'deleted') {
      ui.comments.delete(d.commentId);
      renderComments();
    } // 'updated' is followed by a comments.list
  });
  // the module asks the subscribed notes' snapshots again after a reconnect
  const onState = (s) => { $('pub-status').textContent = (s && s.status) || 'closed'; };
  if (pub.onState) pub.onState(onState);
  onState(pub.getState ? pub.getState() : null);
}

$('note-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const id = $('note-id').value.trim();
  if (/^[A-Za-z0-9._:-]{1,64}$/.test(id)) showNote(id);
});

$('comment-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const content = $('comment-text').value;
  if (!content.trim()) return;
  const token = ui.token || $('token').value.trim();
  if (!token) { say('comment-msg', 'posting needs a token (reading does not)', true); return; }
  const saved = ui.token;
  ui.token = token;
  try {
    const r = await api('POST', commentsPath(ui.noteId), { content });
    if (r.status === 201) {
      $('comment-text').value = '';
      say('comment-msg', '');
      if (r.json && r.json.id) { ui.comments.set(r.json.id, r.json); renderComments(); }
    } else {
      say('comment-msg', errorText(r), true);
    }
  } catch (e) {
    say('comment-msg', e.message, true);
  } finally {
    if (!ui.client) ui.token = saved;
  }
});

/* --------------------------------------------------------------- start */

window.notisyncConsole = { client: null, pub: null, ui, deliveries: new Map() };
$('device').value = sessionStorage.getItem('notisync.console.device') || randomDevice();
$('note-id').value = ui.noteId;
renderState({ status: 'closed', reconnects: 0 });
renderNotifs();
openPublic();
showNote(ui.noteId);
