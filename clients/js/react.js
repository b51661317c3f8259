/*
 * react.js -- React bindings for the NotiSync client (react is a peer
 * dependency; nothing else is imported).
 *
 *   const state = useNotiSync(client);                // re-renders on every state change
 *   useNotiSyncEvent(client, 'new_notification', (n) => add(n));
 */
import * as React from 'react';

/** The client's state object (see NotiSync#getState), kept current. */
export function useNotiSync(client) {
  const subscribe = React.useCallback((cb) => (client ? client.onState(cb) : () => {}), [client]);
  const get = React.useCallback(() => (client ? client.getState() : null), [client]);
  if (React.useSyncExternalStore) return React.useSyncExternalStore(subscribe, get, get);
  const [state, setState] = React.useState(get); // React < 18
  React.useEffect(() => { setState(get()); return subscribe(setState); }, [subscribe, get]);
  return state;
}

/** Calls the latest `handler` for every message of `type` while mounted. */
export function useNotiSyncEvent(client, type, handler) {
  const ref = React.useRef(handler);
  ref.current = handler;
  React.useEffect(() => (client ? client.on(type, (...a) => ref.current(...a)) : undefined), [client, type]);
}

export default useNotiSync;
