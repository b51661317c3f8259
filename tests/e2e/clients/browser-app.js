#!/usr/bin/env node
'use strict';
/*
 * browser-app.js -- a NotiSync comment-channel client written the way a
 * browser app uses it (seed docs: "WebSocket Integration" and the Next.js
 * receive-only hook): it opens a WebSocket without any token, optionally
 * asks for the snapshot of the note it shows (`subscribe`), then parses
 * every message with a `switch (message.type)` over comment.created /
 * comments.list / comment.updated / test / system_notification / default,
 * keeping the note's comments as a page would.  A message that does not
 * parse is counted and skipped; it never breaks the connection.
 *
 * Usage:
 *   node browser-app.js WS_URL [--post ID] [--expect TYPE[=N],...]
 *                              [--timeout SECONDS] [--no-subscribe]
 *                              [--origin ORIGIN]
 *
 * --post     the note the "page" shows: subscribe to it and keep its
 *            comments; comment events of other notes are only counted.
 * --expect   stop once these counts are reached (comment types count only
 *            events of --post; `other` counts messages of the default case,
 *            which also count under their own type, e.g. blog_update=1).
 * --timeout  stop after this many seconds anyway (default 20).
 * --origin   the Origin header a browser sends (default
 *            http://localhost:3000; "none" sends none).
 *
 * Progress goes to stderr ("browser-app: open", "browser-app: snapshot
 * count=N"); stdout gets exactly one JSON line, the summary:
 *   {url, postId, connected, subscribed, done: "expected"|"timeout"|"closed"|"error",
 *    received: {type: count}, snapshot, lists, comments, updates, tests,
 *    system, other, otherPostEvents, parseErrors, close, error, elapsedMs}
 * Exit status 0 once the summary is printed, 1 when the connection could
 * not be made (the summary says why), 2 on bad usage.
 */
const WebSocket = require('ws');

function usage(msg) {
  process.stderr.write(`browser-app: ${msg}\nusage: node browser-app.js WS_URL [--post ID] [--expect TYPE[=N],...] [--timeout S] [--no-subscribe] [--origin O]\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { url: null, postId: null, expect: {}, timeoutS: 20, subscribe: true, origin: 'http://localhost:3000' };
  for (let i = 0; i < argv.length; i += 1) {
    const a = argv[i];
    const val = () => {
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      i += 1;
      return argv[i];
    };
    if (a === '--post') opts.postId = val();
    else if (a === '--timeout') opts.timeoutS = Number(val());
    else if (a === '--no-subscribe') opts.subscribe = false;
    else if (a === '--origin') opts.origin = val();
    else if (a === '--expect') {
      for (const item of val().split(',').filter(Boolean)) {
        const [type, n] = item.split('=');
        opts.expect[type] = n === undefined ? 1 : Number(n);
        if (!Number.isInteger(opts.expect[type]) || opts.expect[type] < 1) usage(`bad --expect item ${item}`);
      }
    } else if (!a.startsWith('--') && !opts.url) opts.url = a;
    else usage(`unknown argument ${a}`);
  }
  if (!opts.url) usage('WS_URL missing');
  if (!(opts.timeoutS > 0 && opts.timeoutS <= 600)) usage('--timeout must be 1..600 seconds');
  return opts;
}

const opts = parseArgs(process.argv.slice(2));
const t0 = Date.now();
const state = {
  url: opts.url,
  postId: opts.postId,
  connected: false,
  subscribed: false,
  done: null,
  received: {},
  snapshot: null,
  lists: [],
  comments: [],
  updates: [],
  tests: [],
  system: [],
  other: [],
  otherPostEvents: 0,
  parseErrors: 0,
  close: null,
  error: null,
  elapsedMs: 0,
};
/* counts toward --expect: comment events of the shown note, other types as they come */
const counted = {};
let finished = false;

function log(line) {
  process.stderr.write(`browser-app: ${line}\n`);
}

function mine(data) {
  return !opts.postId || (data && data.postId === opts.postId);
}

function bump(type) {
  counted[type] = (counted[type] || 0) + 1;
}

/* The page's comment list, as a UI would keep it. */
function handleNewComment(data) {
  if (!mine(data)) {
    state.otherPostEvents += 1;
    return;
  }
  const c = data.comment || {};
  state.comments.push({ id: c.id, content: c.content, username: c.username, userId: c.userId, postId: c.postId });
  bump('comment.created');
}

function handleCommentsList(data) {
  if (!mine(data)) {
    state.otherPostEvents += 1;
    return;
  }
  const comments = Array.isArray(data.comments) ? data.comments : [];
  const view = { count: data.count, ids: comments.map((c) => c.id), contents: comments.map((c) => c.content) };
  if (!state.snapshot) {
    state.snapshot = view;
    log(`snapshot count=${data.count}`);
  }
  state.lists.push(view);
  bump('comments.list');
}

function handleCommentUpdated(data) {
  if (!mine(data)) {
    state.otherPostEvents += 1;
    return;
  }
  state.updates.push({ commentId: data.commentId, action: data.action });
  bump('comment.updated');
}

function onMessage(raw) {
  let message;
  try {
    message = JSON.parse(raw);
  } catch (e) {
    state.parseErrors += 1;
    return;
  }
  if (!message || typeof message !== 'object') {
    state.parseErrors += 1;
    return;
  }
  state.received[message.type] = (state.received[message.type] || 0) + 1;
  const data = message.data || {};
  switch (message.type) {
    case 'comment.created':
      handleNewComment(data);
      break;
    case 'comments.list':
      handleCommentsList(data);
      break;
    case 'comment.updated':
      handleCommentUpdated(data);
      break;
    case 'test':
      state.tests.push(data.message);
      bump('test');
      break;
    case 'system_notification':
      state.system.push({ message: data.message, level: data.level });
      bump('system_notification');
      break;
    default:
      state.other.push({ type: message.type, data: message.data });
      bump('other');
      bump(String(message.type));
      break;
  }
  const want = Object.entries(opts.expect);
  if (want.length && want.every(([t, n]) => (counted[t] || 0) >= n)) finish('expected', 0);
}

function finish(done, code) {
  if (finished) return;
  finished = true;
  state.done = done;
  state.elapsedMs = Date.now() - t0;
  clearTimeout(timer);
  try {
    if (ws.readyState === WebSocket.OPEN) ws.close(1000);
  } catch {
    /* closing anyway */
  }
  process.stdout.write(`${JSON.stringify(state)}\n`, () => process.exit(code));
}

const wsOpts = { handshakeTimeout: 10000 };
if (opts.origin !== 'none') wsOpts.headers = { Origin: opts.origin };
const ws = new WebSocket(opts.url, wsOpts);
const timer = setTimeout(() => finish(state.connected ? 'timeout' : 'error', state.connected ? 0 : 1), opts.timeoutS * 1000);

ws.on('open', () => {
  state.connected = true;
  log('open');
  if (opts.subscribe && opts.postId) {
    ws.send(JSON.stringify({ type: 'subscribe', data: { postId: opts.postId } }));
    state.subscribed = true;
  }
  if (!opts.subscribe) log('ready');
});
ws.on('message', (data, isBinary) => {
  if (isBinary) {
    state.parseErrors += 1;
    return;
  }
  onMessage(data.toString('utf8'));
});
ws.on('unexpected-response', (req, res) => {
  state.error = `upgrade refused: HTTP ${res.statusCode}`;
  res.resume();
  req.destroy();
  finish('error', 1);
});
ws.on('error', (e) => {
  state.error = state.error || e.message;
  if (!state.connected) finish('error', 1);
});
ws.on('close', (code, reason) => {
  state.close = { code, reason: reason.toString('utf8') };
  if (!finished) finish('closed', 0);
});
