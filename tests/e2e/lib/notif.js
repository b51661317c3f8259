'use strict';
/*
 * notif.js -- small steps shared by the SPEC §9 tests (notif_*.test.js):
 * a device that is registered but offline, and a stored notification read
 * back through REST.
 */
const assert = require('node:assert/strict');
const { until } = require('./harness');

/* Resolves once GET /api/v1/devices shows `device` of `user` offline. */
async function waitOffline(server, user, device) {
  await until(async () => {
    const r = await server.http('GET', '/api/v1/devices', { token: server.token(user) });
    const d = r.json && r.json.devices && r.json.devices.find((x) => x.device_id === device);
    return d && d.status === 'offline';
  }, { timeoutMs: 10000, what: `${device} offline` });
}

/* Connects `device` once (so it is registered) and leaves it offline. */
async function registerOffline(server, user, device) {
  const c = await server.device(user, device);
  await c.close();
  await waitOffline(server, user, device);
}

/* GET /api/v1/notifications/{id} as `user`: the stored notification (200). */
async function getOne(server, user, id) {
  const r = await server.http('GET', `/api/v1/notifications/${id}`, { token: server.token(user) });
  assert.equal(r.status, 200, `GET ${id}: ${r.text}`);
  return r.json;
}

module.exports = { waitOffline, registerOffline, getOne };
