/*
 * react.test.mjs -- clients/js/react.js wired to a client: useNotiSync
 * reads getState() and subscribes through onState; useNotiSyncEvent
 * registers the latest handler and unregisters on cleanup.  React itself
 * is not installed here: 'react' resolves to react-stub.mjs.
 */
import { register } from 'node:module';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NotiSync } from '../../clients/js/notisync.js';
import { FakeClock, fakeWebSocket } from './fakes.mjs';

const stubUrl = new URL('./react-stub.mjs', import.meta.url).href;
register(`data:text/javascript,${encodeURIComponent(`
export async function resolve(spec, ctx, next) {
  if (spec === 'react') return { url: ${JSON.stringify(stubUrl)}, shortCircuit: true };
  return next(spec, ctx);
}`)}`);
const { useNotiSync, useNotiSyncEvent } = await import('../../clients/js/react.js');
const stub = await import(stubUrl);

test('useNotiSync follows the state; useNotiSyncEvent calls the latest handler until cleanup', () => {
  const WS = fakeWebSocket();
  const client = new NotiSync({ url: 'ws://h/ws', token: 't', deviceId: 'd', WebSocket: WS, clock: new FakeClock() });
  assert.equal(useNotiSync(client).status, 'connecting');
  const store = stub.stores.at(-1);
  WS.last().welcome({ unread: 4 });
  assert.ok(store.changes >= 1, 'subscribed through onState');
  assert.equal(store.get().status, 'connected');
  assert.equal(store.get().unread, 4);
  assert.equal(useNotiSync(null), null);

  const seen = [];
  useNotiSyncEvent(client, 'test', (d) => seen.push(d.message));
  const cleanup = stub.effects.at(-1);
  WS.last().recv({ type: 'test', data: { message: 'hi' }, timestamp: 'x' });
  cleanup();
  WS.last().recv({ type: 'test', data: { message: 'again' }, timestamp: 'x' });
  assert.deepEqual(seen, ['hi']);
  store.unsubscribe();
  client.close();
});
