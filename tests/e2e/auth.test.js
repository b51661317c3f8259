'use strict';
/*
 * auth.test.js -- SPEC §1 (JWT) and §2 (device WebSocket authentication):
 * every 1008 reason, algorithm pinning (HS256 by default, RS256 / ES256 with
 * a PEM key), claim checks, token from header or query (header wins), and
 * that nothing is delivered before the 1008 close.
 */
const assert = require('node:assert/strict');
const {
  test, useServer, signJwt, claims, nowS, keys, tmpFile, uid,
} = require('./lib/harness');

const hs = useServer();

const k = keys();
const rs = useServer({
  secret: null,
  env: { NOTISYNC_JWT_PUBLIC_KEY_FILE: tmpFile('rsa.pem', k.rsa.publicPem) },
});
const es = useServer({
  secret: null,
  env: { NOTISYNC_JWT_PUBLIC_KEY_FILE: tmpFile('ec.pem', k.ec.publicPem) },
});
const ISS = 'https://issuer.e2e.test';
const AUD = 'notisync-e2e';
const ia = useServer({ env: { NOTISYNC_JWT_ISSUER: ISS, NOTISYNC_JWT_AUDIENCE: AUD } });

const usedTokens = [];

/* Connects with `url` (and headers) and expects: the upgrade completes, the
 * server closes with 1008 and `reason`, and no frame was delivered. */
async function expectPolicyClose(srv, url, reason, opts = {}) {
  const c = srv.ws(url, opts);
  await c.open();
  const info = await c.closed();
  assert.equal(info.code, 1008, `close code for ${reason}: ${c.describe()}`);
  assert.equal(info.reason, reason, `close reason: ${c.describe()}`);
  assert.equal(c.frames.length, 0, `nothing may be delivered before the 1008 close: ${c.describe()}`);
  return info;
}

/* Connects and expects a welcome for `user`/`device`. */
async function expectWelcome(srv, url, user, device, opts = {}) {
  const c = srv.ws(url, opts);
  await c.open();
  const w = await c.next('welcome');
  assert.equal(w.data.user_id, user);
  assert.equal(w.data.device_id, device);
  assert.equal(c.frames[0].msg.type, 'welcome', 'welcome is the first frame');
  const pong = await c.ping();
  assert.equal(pong.type, 'pong');
  await c.close();
  return w;
}

function tok(srv, sub, extra) {
  const t = srv.token(sub, extra);
  usedTokens.push(t);
  return t;
}

test('a valid HS256 token in the query gets a welcome (control case)', async () => {
  const user = uid();
  await expectWelcome(hs, hs.wsUrl({ token: tok(hs, user), device_id: 'phone-1' }), user, 'phone-1');
});

test('missing token: 1008 "missing token"', async () => {
  await expectPolicyClose(hs, hs.wsUrl({ device_id: 'phone-1' }), 'missing token');
});

test('empty token parameter: 1008 "missing token"', async () => {
  await expectPolicyClose(hs, hs.wsUrl({ token: '', device_id: 'phone-1' }), 'missing token');
});

test('invalid token (garbage): 1008 "invalid token"', async () => {
  await expectPolicyClose(hs, hs.wsUrl({ token: 'not-a-jwt', device_id: 'phone-1' }), 'invalid token');
  await expectPolicyClose(hs, hs.wsUrl({ token: 'a.b.c', device_id: 'phone-1' }), 'invalid token');
});

test('invalid token (bad signature, other secret): 1008 "invalid token"', async () => {
  const t = signJwt({ alg: 'HS256', key: 'some-other-secret', payload: claims(uid()) });
  await expectPolicyClose(hs, hs.wsUrl({ token: t, device_id: 'phone-1' }), 'invalid token');
});

test('invalid token (payload altered after signing): 1008 "invalid token"', async () => {
  const good = tok(hs, uid());
  const [h, , s] = good.split('.');
  const forged = Buffer.from(JSON.stringify(claims('someone-else'))).toString('base64url');
  await expectPolicyClose(hs, hs.wsUrl({ token: `${h}.${forged}.${s}`, device_id: 'phone-1' }), 'invalid token');
});

test('token expired: 1008 "token expired"', async () => {
  const t = tok(hs, uid(), { iat: nowS() - 7200, exp: nowS() - 600 });
  await expectPolicyClose(hs, hs.wsUrl({ token: t, device_id: 'phone-1' }), 'token expired');
});

test('exp within the 30 s clock leeway is still accepted', async () => {
  const user = uid();
  const t = tok(hs, user, { iat: nowS() - 600, exp: nowS() - 5 });
  await expectWelcome(hs, hs.wsUrl({ token: t, device_id: 'd1' }), user, 'd1');
});

test('missing exp claim: 1008 "invalid token"', async () => {
  const t = signJwt({ alg: 'HS256', key: hs.secret, payload: { sub: uid(), iat: nowS() } });
  await expectPolicyClose(hs, hs.wsUrl({ token: t, device_id: 'd1' }), 'invalid token');
});

test('missing sub claim: 1008 "invalid token"', async () => {
  const t = signJwt({ alg: 'HS256', key: hs.secret, payload: { iat: nowS(), exp: nowS() + 600 } });
  await expectPolicyClose(hs, hs.wsUrl({ token: t, device_id: 'd1' }), 'invalid token');
});

test('sub longer than 128 bytes: 1008 "invalid token"; 128 bytes accepted', async () => {
  const long = `${uid()}-`.padEnd(129, 'x');
  assert.equal(Buffer.byteLength(long), 129);
  await expectPolicyClose(hs, hs.wsUrl({ token: tok(hs, long), device_id: 'd1' }), 'invalid token');
  const max = long.slice(0, 128);
  await expectWelcome(hs, hs.wsUrl({ token: tok(hs, max), device_id: 'd1' }), max, 'd1');
});

test('nbf in the future (beyond leeway): 1008 "invalid token"', async () => {
  const t = tok(hs, uid(), { nbf: nowS() + 600 });
  await expectPolicyClose(hs, hs.wsUrl({ token: t, device_id: 'd1' }), 'invalid token');
});

test('alg "none" is refused: 1008 "invalid token"', async () => {
  const t = signJwt({ alg: 'none', payload: claims(uid()) });
  await expectPolicyClose(hs, hs.wsUrl({ token: t, device_id: 'd1' }), 'invalid token');
  /* same, with a signature segment present */
  const t2 = `${t}${Buffer.from('x').toString('base64url')}`;
  await expectPolicyClose(hs, hs.wsUrl({ token: t2, device_id: 'd1' }), 'invalid token');
});

test('HS512 signed with the right secret is refused (only HS256 is configured)', async () => {
  const t = signJwt({ alg: 'HS512', key: hs.secret, payload: claims(uid()) });
  await expectPolicyClose(hs, hs.wsUrl({ token: t, device_id: 'd1' }), 'invalid token');
});

test('HS256 server refuses an RS256 token', async () => {
  const t = signJwt({ alg: 'RS256', key: k.rsa.privateKey, payload: claims(uid()) });
  await expectPolicyClose(hs, hs.wsUrl({ token: t, device_id: 'd1' }), 'invalid token');
});

test('invalid device_id: missing → 1008 "invalid device_id"', async () => {
  await expectPolicyClose(hs, hs.wsUrl({ token: tok(hs, uid()) }), 'invalid device_id');
});

test('invalid device_id: empty → 1008 "invalid device_id"', async () => {
  await expectPolicyClose(hs, hs.wsUrl({ token: tok(hs, uid()), device_id: '' }), 'invalid device_id');
});

test('invalid device_id: 65 bytes → 1008; 64 bytes accepted', async () => {
  const user = uid();
  const d65 = 'a'.repeat(65);
  await expectPolicyClose(hs, hs.wsUrl({ token: tok(hs, user), device_id: d65 }), 'invalid device_id');
  const d64 = 'A1._:-'.repeat(11).slice(0, 64);
  assert.equal(d64.length, 64);
  await expectWelcome(hs, hs.wsUrl({ token: tok(hs, user), device_id: d64 }), user, d64);
});

test('invalid device_id: characters outside [A-Za-z0-9._:-] → 1008', async () => {
  for (const bad of ['bad/id', 'has space', 'semi;colon', 'quote"', 'ünï', 'tab\tid', 'a+b']) {
    await expectPolicyClose(hs, hs.wsUrl({ token: tok(hs, uid()), device_id: bad }), 'invalid device_id');
  }
});

test('a UUID device_id is accepted', async () => {
  const user = uid();
  const d = '0b5f3c2e-9a51-4b7e-8d0a-6f1e2c3b4a59';
  await expectWelcome(hs, hs.wsUrl({ token: tok(hs, user), device_id: d }), user, d);
});

test('Authorization: Bearer header token is accepted', async () => {
  const user = uid();
  const t = tok(hs, user);
  await expectWelcome(hs, hs.wsUrl({ device_id: 'hdr-1' }), user, 'hdr-1', {
    headers: { Authorization: `Bearer ${t}` },
  });
});

test('header wins over query: valid header + garbage query → welcome', async () => {
  const user = uid();
  const t = tok(hs, user);
  await expectWelcome(hs, hs.wsUrl({ token: 'garbage', device_id: 'hdr-2' }), user, 'hdr-2', {
    headers: { Authorization: `Bearer ${t}` },
  });
});

test('header wins over query: garbage header + valid query → 1008 "invalid token"', async () => {
  const t = tok(hs, uid());
  await expectPolicyClose(hs, hs.wsUrl({ token: t, device_id: 'hdr-3' }), 'invalid token', {
    headers: { Authorization: 'Bearer garbage' },
  });
});

test('RS256 server: an RS256 token signed with the configured key is accepted', async () => {
  const user = uid();
  const t = signJwt({ alg: 'RS256', key: k.rsa.privateKey, payload: claims(user) });
  usedTokens.push(t);
  await expectWelcome(rs, rs.wsUrl({ token: t, device_id: 'rs-1' }), user, 'rs-1');
});

test('RS256 server: HS256 token signed with the public PEM as secret is refused', async () => {
  const t = signJwt({ alg: 'HS256', key: k.rsa.publicPem, payload: claims(uid()) });
  await expectPolicyClose(rs, rs.wsUrl({ token: t, device_id: 'rs-2' }), 'invalid token');
});

test('RS256 server: RS256 token signed by another key is refused', async () => {
  const t = signJwt({ alg: 'RS256', key: k.rsaOther.privateKey, payload: claims(uid()) });
  await expectPolicyClose(rs, rs.wsUrl({ token: t, device_id: 'rs-3' }), 'invalid token');
});

test('RS256 server: alg none and ES256 are refused', async () => {
  const none = signJwt({ alg: 'none', payload: claims(uid()) });
  await expectPolicyClose(rs, rs.wsUrl({ token: none, device_id: 'rs-4' }), 'invalid token');
  const e = signJwt({ alg: 'ES256', key: k.ec.privateKey, payload: claims(uid()) });
  await expectPolicyClose(rs, rs.wsUrl({ token: e, device_id: 'rs-4' }), 'invalid token');
});

test('RS256 server: an expired RS256 token → 1008 "token expired"', async () => {
  const t = signJwt({ alg: 'RS256', key: k.rsa.privateKey, payload: claims(uid(), { exp: nowS() - 600 }) });
  await expectPolicyClose(rs, rs.wsUrl({ token: t, device_id: 'rs-5' }), 'token expired');
});

test('ES256 server: an ES256 token signed with the configured key is accepted', async () => {
  const user = uid();
  const t = signJwt({ alg: 'ES256', key: k.ec.privateKey, payload: claims(user) });
  usedTokens.push(t);
  await expectWelcome(es, es.wsUrl({ token: t, device_id: 'es-1' }), user, 'es-1');
});

test('ES256 server: other key, HS256-with-PEM, RS256 and none are refused', async () => {
  const bad = [
    signJwt({ alg: 'ES256', key: k.ecOther.privateKey, payload: claims(uid()) }),
    signJwt({ alg: 'HS256', key: k.ec.publicPem, payload: claims(uid()) }),
    signJwt({ alg: 'RS256', key: k.rsa.privateKey, payload: claims(uid()) }),
    signJwt({ alg: 'none', payload: claims(uid()) }),
  ];
  for (const t of bad) {
    await expectPolicyClose(es, es.wsUrl({ token: t, device_id: 'es-2' }), 'invalid token');
  }
});

test('iss/aud configured: matching iss and aud (string or array) accepted', async () => {
  const user = uid();
  await expectWelcome(ia, ia.wsUrl({ token: tok(ia, user, { iss: ISS, aud: AUD }), device_id: 'ia-1' }), user, 'ia-1');
  await expectWelcome(ia, ia.wsUrl({ token: tok(ia, user, { iss: ISS, aud: ['other', AUD] }), device_id: 'ia-1' }), user, 'ia-1');
});

test('iss/aud configured: wrong or missing iss, wrong aud → 1008 "invalid token"', async () => {
  const user = uid();
  const cases = [
    { iss: 'https://evil.example', aud: AUD },
    { aud: AUD },
    { iss: ISS, aud: 'someone-else' },
    { iss: ISS, aud: ['a', 'b'] },
  ];
  for (const extra of cases) {
    await expectPolicyClose(ia, ia.wsUrl({ token: tok(ia, user, extra), device_id: 'ia-2' }), 'invalid token');
  }
});

test('tokens never appear in the server log', async () => {
  assert.ok(usedTokens.length > 5);
  for (const srv of [hs, rs, es, ia]) {
    const log = srv.log();
    assert.ok(log.length > 0, `server log ${srv.logFile} is empty`);
    for (const t of usedTokens) {
      const sig = t.split('.')[2];
      assert.ok(!log.includes(t), `a token appears in ${srv.logFile}`);
      if (sig && sig.length > 16) assert.ok(!log.includes(sig), `a token signature appears in ${srv.logFile}`);
    }
  }
});
