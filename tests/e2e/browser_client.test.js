'use strict';
/*
 * browser_client.test.js -- issue 4: the comment channel used the way a
 * browser app uses it.  clients/browser-app.js (Node.js, the npm `ws`
 * package, no token, a `switch (message.type)` over comment.created /
 * comments.list / comment.updated / test / system_notification / default)
 * runs as a child process against a real notisyncd; meanwhile the test
 * posts comments and broadcasts through the REST API and then checks the
 * one-line JSON summary the app prints.
 *
 *  - the seed "WebSocket Integration" page: connect to "/", subscribe to the
 *    note shown, follow new comments, edits and test messages;
 *  - the seed Next.js receive-only hook: connect to /api/v1/ws, send
 *    nothing, show blog_update / system_notification toasts;
 *  - a server with allowed_origins: the app's Origin is admitted when listed
 *    and closed with 1008 "origin not allowed" otherwise (devices too).
 *
 * The server runs against a private redis-server so that no broadcast of
 * another test file reaches the app.
 */
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const path = require('node:path');
const {
  test, setup, newServer, useRedis, uid, until, newPostId, postComment, editComment, broadcast,
} = require('./lib/harness');

const APP = path.join(__dirname, 'clients', 'browser-app.js');
const APP_LIMIT_MS = 90000;

const redis = useRedis();
const srv = newServer({ env: {} });
const strict = newServer({ env: { NOTISYNC_ALLOWED_ORIGINS: 'https://app.example.com,http://localhost:3000' } });
setup(async () => {
  srv.opts.env.NOTISYNC_REDIS_URL = redis.url;
  strict.opts.env.NOTISYNC_REDIS_URL = redis.url;
  await srv.start();
  await strict.start();
});

const children = new Set();
require('node:test').after(() => {
  for (const p of children) {
    try {
      process.kill(p.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
});

/* Starts the app with `args`; returns {stderrHas(re), result} where
 * result resolves {code, stdout, stderr, summary} when it exits (SIGKILL
 * after APP_LIMIT_MS). */
function runApp(args) {
  const p = spawn(process.execPath, [APP, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(p);
  let stdout = '';
  let stderr = '';
  p.stdout.on('data', (d) => { stdout += d.toString(); });
  p.stderr.on('data', (d) => { stderr += d.toString(); });
  const result = new Promise((resolve) => {
    const timer = setTimeout(() => {
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }, APP_LIMIT_MS);
    p.on('exit', (code, signal) => {
      clearTimeout(timer);
      children.delete(p);
      const lines = stdout.split('\n').filter((l) => l.trim());
      let summary = null;
      try {
        summary = lines.length === 1 ? JSON.parse(lines[0]) : null;
      } catch {
        summary = null;
      }
      resolve({ code, signal, stdout, stderr, lines, summary });
    });
  });
  return {
    proc: p,
    result,
    stderrHas: (re, what) => until(() => re.test(stderr), { timeoutMs: 20000, intervalMs: 50, what: `${what} (stderr: ${stderr})` }),
  };
}

function checkSummary(res) {
  assert.equal(res.lines.length, 1, `exactly one stdout line: ${res.stdout} / stderr: ${res.stderr}`);
  assert.ok(res.summary, `the line is JSON: ${res.stdout}`);
  return res.summary;
}

async function healthConnections(server) {
  return (await server.http('GET', '/health')).json.connections;
}

test('browser page on "/" without a token: snapshot, new comment, edit, test, system_notification and blog_update', async () => {
  const postId = newPostId();
  const author = uid();
  const email = `${author}@example.com`;
  const first = await postComment(srv, author, postId, 'already there', { claimsExtra: { email } });
  assert.equal(first.status, 201, first.text);
  const marker = `Test message content ${uid('m')}`;
  const app = runApp([
    `ws://127.0.0.1:${srv.port}/`, '--post', postId, '--timeout', '60',
    '--expect', 'comments.list=2,comment.created=1,comment.updated=1,test=1,system_notification=1,blog_update=1',
  ]);
  await app.stderrHas(/snapshot count=1/, 'the app got its snapshot');

  const second = await postComment(srv, uid(), postId, 'a new comment ✓', { claimsExtra: { name: 'Reader R.' } });
  assert.equal(second.status, 201, second.text);
  assert.equal((await broadcast(srv, 'test', { message: marker })).status, 202);
  assert.equal((await broadcast(srv, 'system_notification', { message: 'maintenance at 22:00', level: 'warning' })).status, 202);
  assert.equal((await broadcast(srv, 'blog_update', { post_id: postId, action: 'updated' })).status, 202);
  const edited = await editComment(srv, author, postId, first.json.id, 'already there (edited)', { claimsExtra: { email } });
  assert.equal(edited.status, 200, edited.text);

  const res = await app.result;
  assert.equal(res.code, 0, `exit: ${JSON.stringify({ code: res.code, signal: res.signal })} ${res.stderr}`);
  const s = checkSummary(res);
  assert.equal(s.done, 'expected', JSON.stringify(s));
  assert.equal(s.connected, true);
  assert.equal(s.subscribed, true);
  assert.equal(s.error, null);
  assert.equal(s.parseErrors, 0);
  assert.deepEqual(s.snapshot, { count: 1, ids: [first.json.id], contents: ['already there'] });
  assert.deepEqual(s.comments, [{
    id: second.json.id, content: 'a new comment ✓', username: 'Reader R.', userId: second.json.userId, postId,
  }]);
  assert.deepEqual(s.updates, [{ commentId: first.json.id, action: 'updated' }]);
  assert.equal(s.lists.length, 2, JSON.stringify(s.lists));
  assert.deepEqual(s.lists[1], {
    count: 2, ids: [first.json.id, second.json.id], contents: ['already there (edited)', 'a new comment ✓'],
  });
  assert.deepEqual(s.tests, [marker]);
  assert.deepEqual(s.system, [{ message: 'maintenance at 22:00', level: 'warning' }]);
  assert.deepEqual(s.other, [{ type: 'blog_update', data: { post_id: postId, action: 'updated' } }]);
  assert.equal(s.received['comment.created'], 1);
  assert.equal(s.received['comment.updated'], 1);
  assert.equal(s.received['comments.list'], 2);
  assert.equal(s.received.test, 1);
  assert.equal(s.received.system_notification, 1);
  assert.equal(s.received.blog_update, 1);
});

test('receive-only Next.js hook on /api/v1/ws: sends nothing, gets comment.created, system_notification and blog_update', async () => {
  const postId = newPostId();
  const before = await healthConnections(srv);
  const app = runApp([
    `ws://127.0.0.1:${srv.port}/api/v1/ws`, '--post', postId, '--no-subscribe', '--timeout', '60',
    '--expect', 'comment.created=1,system_notification=1,blog_update=1',
  ]);
  await app.stderrHas(/ready/, 'the app connected');
  await until(async () => (await healthConnections(srv)) > before, { what: 'the app counted by the server' });
  const c = await postComment(srv, uid(), postId, 'seen by the hook');
  assert.equal(c.status, 201, c.text);
  assert.equal((await broadcast(srv, 'system_notification', { message: 'deploy done', level: 'info' })).status, 202);
  assert.equal((await broadcast(srv, 'blog_update', { post_id: 'p-7', action: 'created' })).status, 202);
  const res = await app.result;
  assert.equal(res.code, 0, res.stderr);
  const s = checkSummary(res);
  assert.equal(s.done, 'expected', JSON.stringify(s));
  assert.equal(s.subscribed, false);
  assert.equal(s.snapshot, null, 'no snapshot without subscribe');
  assert.deepEqual(s.lists, []);
  assert.deepEqual(s.comments.map((x) => x.id), [c.json.id]);
  assert.deepEqual(s.system, [{ message: 'deploy done', level: 'info' }]);
  assert.deepEqual(s.other, [{ type: 'blog_update', data: { post_id: 'p-7', action: 'created' } }]);
  assert.equal(s.parseErrors, 0);
  /* the server sent nothing that is not a broadcast: no error, pong or welcome */
  for (const t of ['error', 'welcome', 'pong']) assert.equal(s.received[t], undefined, JSON.stringify(s.received));
});

test('allowed_origins: the browser app is admitted from a listed Origin and refused from another', async () => {
  const postId = newPostId();
  const ok = await runApp([
    `ws://127.0.0.1:${strict.port}/`, '--post', postId, '--origin', 'https://app.example.com',
    '--expect', 'comments.list=1', '--timeout', '30',
  ]).result;
  assert.equal(ok.code, 0, ok.stderr);
  const s = checkSummary(ok);
  assert.equal(s.done, 'expected', JSON.stringify(s));
  assert.deepEqual(s.snapshot, { count: 0, ids: [], contents: [] });

  const refused = await runApp([
    `ws://127.0.0.1:${strict.port}/`, '--post', postId, '--origin', 'https://evil.example',
    '--expect', 'comments.list=1', '--timeout', '30',
  ]).result;
  /* the upgrade completes and 1008 follows at once: a close code is what a
   * browser's WebSocket API can show (an HTTP status it cannot) */
  assert.equal(refused.code, 0, `refused origin: ${refused.stdout} ${refused.stderr}`);
  const r = checkSummary(refused);
  assert.equal(r.done, 'closed', JSON.stringify(r));
  assert.deepEqual(r.close, { code: 1008, reason: 'origin not allowed' }, JSON.stringify(r));
  assert.deepEqual(r.received, {}, 'nothing is delivered before the close');

  /* a device connection from a refused Origin is closed the same way,
   * before any welcome; a listed Origin gets its welcome */
  const user = uid();
  const dev = strict.ws(strict.wsUrl({ token: strict.token(user), device_id: 'web' }),
    { headers: { Origin: 'https://evil.example' } });
  await dev.open();
  const info = await dev.closed(10000);
  assert.deepEqual([info.code, info.reason], [1008, 'origin not allowed'], dev.describe());
  assert.equal(dev.messages().length, 0, dev.describe());
  const good = await strict.device(user, 'web', { headers: { Origin: 'http://localhost:3000' } });
  assert.equal(good.welcome.data.device_id, 'web');
  await good.close();
});
