import type { NotiSync, State } from './notisync.js';

/** The client's state, re-rendered on every change (null when client is null). */
export declare function useNotiSync(client: NotiSync): State;
export declare function useNotiSync(client: NotiSync | null | undefined): State | null;
/** Calls the latest handler for every message (or local event) of `type` while mounted. */
export declare function useNotiSyncEvent(client: NotiSync | null | undefined, type: string, handler: (...args: any[]) => unknown): void;
export default useNotiSync;
