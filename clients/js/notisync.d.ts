// Type declarations for notisync.js (the NotiSync client).  Wire contract:
// SPEC.md §2-§5 and §9; behaviour: clients/js/README.md.

export type Status = 'connecting' | 'connected' | 'reconnecting' | 'closed';

export interface Device {
  device_id: string;
  status: 'online' | 'offline';
  last_seen?: string;
  [k: string]: unknown;
}

export interface State {
  readonly status: Status;
  /** The user's devices with live online/offline (welcome, then device_status). */
  readonly devices: readonly Device[];
  /** Round trip of the last ping/pong, ms; null until the first pong. */
  readonly lastLatencyMs: number | null;
  /** Successful reconnections (welcomes after the first one). */
  readonly reconnects: number;
  /** Unread count from welcome / new_notification / notification_sync / ok; null when unknown. */
  readonly unread: number | null;
  readonly userId: string | null;
  readonly deviceId: string | null;
  readonly connectionId: string | null;
  /** The last close seen (local causes use 1006 with reason 'heartbeat timeout' / 'connect timeout'). */
  readonly lastClose: { code: number; reason: string } | null;
  /** When the next attempt is due (ms since the epoch); null while connected or paused offline. */
  readonly nextRetryAt: number | null;
}

export interface TokenRequest {
  /** connect: first connect; reconnect: any later connect; refresh: before exp;
   *  rejected: the last token was refused (1008 / HTTP 401), give a fresh one; http: a REST call. */
  reason: 'connect' | 'reconnect' | 'refresh' | 'rejected' | 'http';
}
export type TokenSource = string | ((req: TokenRequest) => string | Promise<string>);

export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export interface NotiSyncOptions {
  /** ws(s)://host/ws, http(s)://host/ws, or a path (/ws, /api/v1/ws) resolved against the page. */
  url: string;
  /** A JWT, or a function giving one (asked on every connect, before exp, and after a refusal). Omit for the public channel. */
  token?: TokenSource;
  /** 1-64 characters of [A-Za-z0-9._:-]; default: a UUID kept in localStorage when there is one. */
  deviceId?: string;
  /** Ack mode (SPEC §5.4): at-least-once end to end; acks sent after the handlers returned. Default false. */
  ack?: boolean;
  deviceName?: string;
  platform?: string;
  /** Public receive-only channel (what NotiSync.public sets). */
  public?: boolean;
  /** A WebSocket constructor, for runtimes without a global one (e.g. `ws` on Node < 22). */
  WebSocket?: new (url: string) => WebSocket;
  fetch?: typeof fetch;
  /** REST base URL; default derived from url (ws→http, wss→https, the /ws suffix removed). */
  httpUrl?: string;
  /** Injected time and randomness (tests). */
  clock?: Partial<Clock>;
  random?: () => number;
  /** Where 'online'/'offline' events come from, and navigator.onLine (default globalThis / globalThis.navigator). */
  window?: { addEventListener(t: string, f: () => void): void; removeEventListener(t: string, f: () => void): void } | null;
  navigator?: { onLine: boolean } | null;
  /** Backoff: attempt n waits random() * min(backoffMaxMs, backoffBaseMs * 2^n). Defaults 1000 / 30000. */
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  /** Connected this long → the backoff starts again from attempt 0. Default 10000. */
  stableMs?: number;
  /** No welcome (public: no open) within this → the attempt is given up. Default 15000. */
  connectTimeoutMs?: number;
  /** Ping interval when the server does not give heartbeat_interval_s (public channel). Default 30. */
  heartbeatIntervalS?: number;
  /** A ping without pong for this long → reconnect. Default 10000 (capped by the interval). */
  pongTimeoutMs?: number;
  /** Ack batching delay. Default 100. */
  ackDelayMs?: number;
  /** Dedupe LRU size (ids). Default 2000. */
  dedupeSize?: number;
  /** Requests (action, subscribe, refresh) waiting or in flight at most. Default 100. */
  maxQueued?: number;
  /** A request without reply this long after the call is rejected with code 'timeout'; 0 = never. Default 60000. */
  requestTimeoutMs?: number;
  /** Refresh this long before exp (at most half the remaining life). Default 60000. */
  refreshLeadMs?: number;
  /** Client-side send pacing of requests (the server allows 20/s, burst 50). Defaults 15 / 30. */
  sendRate?: number;
  sendBurst?: number;
  maxSubscriptions?: number;
}

export interface Envelope<D = any> {
  type: string;
  data: D;
  timestamp?: string;
  id?: string;
  ref?: string;
}

export interface Notification {
  id: string;
  app_name: string;
  title: string;
  body: string;
  category: string | null;
  priority: number;
  source_device: string | null;
  created_at: string;
  is_read: boolean;
  is_dismissed: boolean;
  unread?: number;
  data?: Record<string, unknown> | null;
  url?: string | null;
  tags?: string[];
  collapse_key?: string | null;
  expires_at?: string | null;
  deliver_at?: string | null;
  status?: 'scheduled' | 'queued' | 'canceled';
  expired?: boolean;
  [k: string]: unknown;
}

export interface NotificationSync {
  notification_id?: string;
  is_read?: boolean;
  is_dismissed?: boolean;
  source_device: string | null;
  unread?: number;
  all?: boolean;
  action?: 'read' | 'dismiss';
  before?: string | null;
  updated?: number;
}

export interface Comment {
  id: string; content: string; username: string; userId: string; createdAt: string; updatedAt: string; postId: string;
}

export interface Welcome {
  user_id: string; device_id: string; connection_id: string; server_time: string;
  heartbeat_interval_s: number; queued: number; devices: Device[]; unread?: number;
}

export interface ServerEvents {
  welcome: Welcome;
  pong: { timestamp: string };
  new_notification: Notification;
  notification_sync: NotificationSync;
  device_status: Device;
  queue_overflow: { missed: number };
  ok: Record<string, unknown>;
  error: { code: string; message: string };
  'comment.created': { postId: string; comment: Comment };
  'comment.updated': { postId: string; commentId: string; action: 'updated' | 'deleted' };
  'comments.list': { postId: string; comments: Comment[]; count: number };
  test: { message: string };
  system_notification: { message: string; level: 'info' | 'warning' | 'error' };
}

export interface CloseInfo { code: number; reason: string }

export interface LocalEvents {
  /** A 1008 no fresh token cures (or invalid device_id / origin not allowed): the client has stopped. */
  auth_failed: CloseInfo;
  /** 4000: another connection of this device took over; the client has stopped. */
  replaced: CloseInfo;
  /** The connection ended and another attempt follows after delayMs (null: paused while offline). */
  disconnect: CloseInfo & { willReconnect: true; delayMs: number | null };
  /** A handler threw, the token function failed, a frame was not JSON... */
  client_error: Error;
}

export type Handler<D> = (data: D, msg: Envelope<D>) => void | Promise<void>;

export declare class NotiSyncError extends Error {
  code: string;
  status?: number;
  field?: string;
  ref?: string;
}

export interface ResyncOptions { limit?: number; unread?: boolean; before?: string; pages?: number }

export declare class NotiSync {
  constructor(opts: NotiSyncOptions);
  /** The public comment channel (no token): subscribe() and on() only. */
  static public(opts: Omit<NotiSyncOptions, 'token' | 'deviceId' | 'ack'>): NotiSync;
  static Error: typeof NotiSyncError;

  on<K extends keyof ServerEvents>(type: K, fn: Handler<ServerEvents[K]>): () => void;
  on<K extends keyof LocalEvents>(type: K, fn: (info: LocalEvents[K]) => void): () => void;
  on(type: '*', fn: (msg: Envelope) => void | Promise<void>): () => void;
  on(type: string, fn: Handler<any>): () => void;
  off(type: string, fn: (...args: any[]) => unknown): void;

  getState(): State;
  onState(fn: (state: State) => void): () => void;

  action(id: string, action: 'read' | 'unread' | 'dismiss'): Promise<Record<string, unknown>>;
  actionAll(action: 'read' | 'dismiss', opts?: { before?: string }): Promise<{ updated: number; unread: number }>;
  subscribe(postId: string): Promise<ServerEvents['comments.list']>;
  unsubscribe(postId: string): void;
  ping(): Promise<number>;
  resync(opts?: ResyncOptions): Promise<{ notifications: Notification[]; next_before: string | null }>;
  request<T = any>(method: string, path: string, body?: unknown, opts?: { headers?: Record<string, string> }): Promise<T>;
  readonly httpUrl: string;
  close(): void;
}

export default NotiSync;
