/* react-stub.mjs -- the few React hooks clients/js/react.js uses, enough
 * to call a hook outside a renderer (react.test.mjs maps 'react' here). */
export const effects = [];
export const stores = [];
export function useCallback(fn) { return fn; }
export function useRef(v) { return { current: v }; }
export function useEffect(fn) { effects.push(fn() || null); }
export function useSyncExternalStore(subscribe, get) {
  const s = { subscribe, get, changes: 0 };
  s.unsubscribe = subscribe(() => { s.changes += 1; });
  stores.push(s);
  return get();
}
