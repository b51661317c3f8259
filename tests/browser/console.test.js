'use strict';
/*
 * console.test.js -- the web console (/console) and the client module it
 * imports (/notisync.js), driven in a real browser: playwright-core runs
 * Debian's chromium headless against a real notisyncd (dev_console on),
 * every page 375 px wide.
 *
 * One user, two pages as two devices (A and B), each connected with the
 * console's own dev-token button, ack mode on:
 *   1. a notification posted through REST appears on B within 1 s;
 *   2. "Read" on B greys it on A;
 *   3. closing B shows B offline on A;
 *   4. notisyncd is killed (SIGKILL) and restarted on the same port while
 *      a second instance (same Redis and PostgreSQL) takes 3 notifications
 *      meanwhile: A and B reconnect by themselves and show each of them,
 *      every notification once on the page and handed to the page once by
 *      the module;
 *   5. an anonymous page (no token, public channel) sees a new comment.
 * No page may log a Content-Security-Policy violation or throw.
 *
 * Screenshots of every step go to NS_ARTIFACT_DIR (ctest: the build tree's
 * browser-artifacts/), else a directory under $TMPDIR.  The browser is
 * NS_CHROMIUM, else /usr/bin/chromium (scripts/deps installs it).  Every
 * wait is bounded; the browser and the servers are stopped in after().
 */
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const nodeTest = require('node:test');
const { chromium } = require('playwright-core');
const {
  test, setup, newServer, uid, until, freePort, postNotification, postComment, newPostId,
} = require('../e2e/lib/harness');

const CHROMIUM = process.env.NS_CHROMIUM || '/usr/bin/chromium';
const ART = process.env.NS_ARTIFACT_DIR || fs.mkdtempSync(path.join(os.tmpdir(), 'notisync-browser-'));
const VIEWPORT = { width: 375, height: 812 };
const STEP_MS = 10000;        // bound of one UI wait
const RECONNECT_MS = 45000;   // bound of the reconnect after a restart (backoff <= 30 s)

fs.mkdirSync(ART, { recursive: true });

/* The server the pages use (fixed port: it is restarted on it) and a second
 * instance on the same Redis and PostgreSQL that takes notifications while
 * the first is down. */
const srv = newServer({ env: { NOTISYNC_DEV_CONSOLE: 'true' } });
const other = newServer({ secret: srv.secret });
let browser;
const issues = [];   // CSP violations and page errors, by page
const results = {};  // timings, written to results.json

setup(async () => {
  srv.opts.port = await freePort();
  await srv.start();
  await other.start();
  if (!fs.existsSync(CHROMIUM)) throw new Error(`no chromium at ${CHROMIUM} (run scripts/deps, or set NS_CHROMIUM)`);
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
  results.browser = `chromium ${browser.version()}`;
  results.node = process.version;
});

nodeTest.after(async () => {
  if (browser) await browser.close().catch(() => {});
  fs.writeFileSync(path.join(ART, 'results.json'), `${JSON.stringify({ ...results, issues }, null, 2)}\n`);
  process.stderr.write(`browser artifacts: ${ART}\n`);
});

const user = uid('alice');
const devA = uid('a');
const devB = uid('b');
const pages = {};

async function newPage(label) {
  const page = await browser.newPage({ viewport: VIEWPORT });
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content.Security.Policy|Refused to/i.test(m.text())) issues.push(`${label}: ${m.text()}`);
  });
  page.on('pageerror', (e) => issues.push(`${label}: page error: ${e.message}`));
  page.setDefaultTimeout(STEP_MS);
  return page;
}

async function shot(page, name) {
  const file = path.join(ART, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

/* Opens /console, fills a dev token for `user` with the page's button, and
 * connects as `device`; resolves once the page says "connected". */
async function openDevice(label, device) {
  const page = await newPage(label);
  await page.goto(`${srv.base}/console`);
  await page.fill('#user', user);
  await page.click('#dev-token-btn');
  await page.waitForFunction(() => document.getElementById('token').value.split('.').length === 3);
  await page.fill('#device', device);
  await page.fill('#device-name', label);
  await page.click('#connect-btn');
  await page.waitForSelector('#conn-status:text-is("connected")');
  return page;
}

const notifSel = (id) => `#notif-list li[data-id="${id}"]`;
const deviceSel = (id, status) => `#device-list li[data-device="${id}"][data-status="${status}"]`;

/* How many list entries the page shows for `id`, and how often the module
 * handed it to the page's handler. */
function seenOn(page, id) {
  return page.evaluate((nid) => ({
    shown: document.querySelectorAll(`#notif-list li[data-id="${nid}"]`).length,
    handed: window.notisyncConsole.deliveries.get(nid) || 0,
  }), id);
}

async function post(server, title) {
  const r = await postNotification(server, user, { title, body: `posted by the browser test at ${new Date().toISOString()}` });
  assert.equal(r.status, 201, r.text);
  return r.json.id;
}

const posted = [];

test('two pages of one user connect; A sees B online; the page fits 375 px', async () => {
  pages.A = await openDevice('A', devA);
  pages.B = await openDevice('B', devB);
  await pages.A.waitForSelector(deviceSel(devB, 'online'));
  for (const p of [pages.A, pages.B]) {
    const overflow = await p.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `no horizontal scroll at 375 px (overflow ${overflow} px)`);
  }
  await shot(pages.A, '01-connected-A');
});

test('a notification posted through REST appears on page B within 1 s', async () => {
  const t0 = Date.now();
  const id = await post(srv, 'Build finished');
  posted.push(id);
  await pages.B.waitForSelector(notifSel(id), { timeout: Math.max(1, 1000 - (Date.now() - t0)) });
  results.deliveryMs = Date.now() - t0;
  await pages.A.waitForSelector(notifSel(id));
  const unread = Number(await pages.B.textContent('#unread'));
  assert.ok(unread >= 1, `unread count shown: ${unread}`);
  await shot(pages.B, '02-delivered-B');
});

test('read on B greys it on A', async () => {
  const id = posted[0];
  const before = Number(await pages.A.textContent('#unread'));
  await pages.B.click(`${notifSel(id)} .act-read`);
  await pages.B.waitForSelector(`${notifSel(id)}.is-read`);
  const t0 = Date.now();
  await pages.A.waitForSelector(`${notifSel(id)}.is-read`);
  results.readSyncMs = Date.now() - t0;
  await until(async () => Number(await pages.A.textContent('#unread')) === before - 1,
    { timeoutMs: STEP_MS, what: 'unread count on A down by one' });
  await shot(pages.A, '03-read-synced-A');
});

test('closing B shows B offline on A', async () => {
  await pages.B.close();
  const t0 = Date.now();
  await pages.A.waitForSelector(deviceSel(devB, 'offline'));
  results.offlineMs = Date.now() - t0;
  await shot(pages.A, '04-B-offline-on-A');
});

test('kill -9 and restart: both pages reconnect by themselves, show what was posted meanwhile, nothing doubled', async () => {
  pages.B = await openDevice('B', devB);
  await pages.A.waitForSelector(deviceSel(devB, 'online'));
  const live = await post(srv, 'Before the crash');
  posted.push(live);
  for (const p of [pages.A, pages.B]) await p.waitForSelector(notifSel(live));

  const killed = await srv.signalAndWait('SIGKILL', 10000);
  assert.ok(killed && killed.signal === 'SIGKILL', `notisyncd killed: ${JSON.stringify(killed)}`);
  const tKill = Date.now();
  for (const p of [pages.A, pages.B]) {
    await p.waitForFunction(() => /reconnecting|connecting/.test(document.getElementById('conn-status').textContent));
  }
  await shot(pages.A, '05a-server-down-A');
  const meanwhile = [];
  for (let i = 1; i <= 3; i += 1) meanwhile.push(await post(other, `Sent while the server was down #${i}`));
  posted.push(...meanwhile);

  await srv.start();
  const tUp = Date.now();
  for (const [name, p] of [['A', pages.A], ['B', pages.B]]) {
    await p.waitForSelector('#conn-status:text-is("connected")', { timeout: RECONNECT_MS });
    const reconnects = Number(await p.textContent('#conn-reconnects'));
    assert.ok(reconnects >= 1, `page ${name} counts its reconnect (${reconnects})`);
    for (const id of meanwhile) await p.waitForSelector(notifSel(id), { timeout: STEP_MS });
    results[`reconnect${name}Ms`] = Date.now() - tUp;
  }
  results.downMs = tUp - tKill;
  await pages.A.waitForTimeout(1500); // a late replay would double something now
  for (const [name, p] of [['A', pages.A], ['B', pages.B]]) {
    for (const id of posted) {
      const s = await seenOn(p, id);
      assert.equal(s.shown, 1, `page ${name} shows ${id} once (${JSON.stringify(s)})`);
      assert.ok(s.handed <= 1, `page ${name} was handed ${id} at most once (${JSON.stringify(s)})`);
    }
    for (const id of meanwhile) {
      assert.equal((await seenOn(p, id)).handed, 1, `page ${name} was handed ${id} exactly once`);
    }
  }
  await shot(pages.A, '05b-after-restart-A');
  await shot(pages.B, '05c-after-restart-B');
  await pages.A.setViewportSize({ width: 1200, height: 900 }); // the README's picture
  await shot(pages.A, '05d-after-restart-A-wide');
  await pages.A.setViewportSize(VIEWPORT);
});

test('an anonymous page sees a new comment', async () => {
  const page = await newPage('anonymous');
  pages.C = page;
  const postId = newPostId('browser');
  await page.goto(`${srv.base}/console`);
  await page.waitForSelector('#pub-status:text-is("connected")');
  await page.fill('#note-id', postId);
  await page.click('#note-load');
  // the module's subscribe is answered with the (empty) snapshot first
  await page.waitForFunction(() => document.getElementById('comment-list').children.length === 0);
  await page.waitForTimeout(300);
  const t0 = Date.now();
  const r = await postComment(srv, user, postId, 'Looks good from here');
  assert.equal(r.status, 201, r.text);
  await page.waitForSelector(`#comment-list li[data-comment-id="${r.json.id}"]`);
  results.commentMs = Date.now() - t0;
  assert.match(await page.textContent('#comment-list'), /Looks good from here/);
  await shot(page, '06-anonymous-comment');
});

test('no page logged a CSP violation or threw', async () => {
  assert.deepEqual(issues, []);
});
