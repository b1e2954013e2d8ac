// Type declarations for centric.js, the centric browser SDK (an ES module, no dependencies).

/** Why the server chose a variant; 'fallback' when the SDK did not hear it in time. */
export type Reason =
  | 'assigned' | 'sticky' | 'holdout' | 'winner' | 'not_targeted' | 'not_running' | 'fallback'
  | (string & {});

/** One decision as the server sends it (fallback ones have null ids and payload). */
export interface Decision {
  experiment: string;
  variant: string;
  payload: unknown;
  decision_id: string | null;
  propensity: number | null;
  reason: Reason;
  /** True while the server waits for the SDK to confirm that the decision was shown. */
  pending?: boolean;
}

/** The anti-flicker cloak: from the head snippet cloak.js, or from hideUntilDecided(). */
export interface Cloak {
  /** The selectors actually hidden (invalid ones are refused with a console warning). */
  readonly selectors: readonly string[];
  /** 'hidden' until reveal() ('revealed') or its timer ('timeout'). */
  readonly state: 'hidden' | 'revealed' | 'timeout';
  /** Show the slots now. Idempotent. */
  reveal(): void;
  /** Called once with 'revealed' or 'timeout' (at once if already settled). */
  onSettle(listener: (state: 'revealed' | 'timeout') => void): void;
}

/** What decide() resolves to (it never rejects). */
export interface DecideResult {
  readonly visitorId: string;
  readonly persona: string | null;
  readonly decisions: readonly Decision[];
  /** True when the server was not heard in time (or answered non-2xx): every variant is a default. */
  readonly fallback: boolean;
  /**
   * The variant to show: the server's decision, else `otherwise`, else the configured default
   * (`defaults` option), else 'control'. On a fallback result `otherwise` wins too.
   */
  variant(experiment: string, otherwise?: string): string;
  /** The variant's payload, or `otherwise` (null). */
  payload<T = any>(experiment: string, otherwise?: T | null): T | null;
  reason(experiment: string): Reason;
  /**
   * Confirm that these experiments (default: every one in the result) were shown: queues
   * POST /v1/expose for decisions of reason assigned, holdout or sticky, each once. A
   * fallback result confirms nothing. Returns how many decisions were queued. Needed only
   * with `autoExpose: false` (pages that render some slots later, or never).
   */
  expose(experiments?: string | readonly string[]): number;
  /** Lift the cloak this decide waited for now (no-op without one). */
  reveal(): void;
}

export interface DecideOptions {
  /** Experiment keys of the page's slots (one request for all of them). */
  experiments?: readonly string[];
  attributes?: Record<string, string | number | boolean | null>;
  /** Channel for this call (default: the client's `channel`). */
  channel?: string;
  persona?: string;
  /** Experiment -> variant to show on fallback, on top of the client's `defaults`. */
  defaults?: Record<string, string>;
  /** Override the client's `autoExpose` for this call. */
  autoExpose?: boolean;
  /**
   * false: do not lift the cloak when the answer arrives; call result.reveal() once your
   * (asynchronous) rendering is done. The cloak's timer still caps the wait.
   */
  reveal?: boolean;
}

export interface IdentifyOptions {
  /** Lower-case hex HMAC-SHA256 of the customer_id (else of `email_sha256:<hash>`), from the shop's backend. */
  signature?: string;
  /** Epoch seconds, when the backend bound the signature to this visitor id until then. */
  signatureExpires?: number;
  attributes?: Record<string, string | number | boolean | null>;
}

export interface TrackOptions {
  /** Your own idempotency key, e.g. 'order-778' ([A-Za-z0-9_.:-]{1,128}); default: a random id. */
  eventId?: string;
}

/** The minimal Storage the SDK uses (localStorage by default). */
export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** A queued request, oldest first (inspect only). */
export type QueueItem =
  | { kind: 'track'; id: string; created: number;
      event: { visitor_id: string; metric: string; event_id: string; value?: number } }
  | { kind: 'expose'; id: string; created: number; visitor_id: string;
      decision: { experiment: string; decision_id: string } }
  | { kind: 'identify'; id: string; created: number;
      body: { visitor_id: string; ids: Record<string, string>; attributes?: Record<string, unknown>;
              signature?: string } };

export interface CentricOptions {
  /** Where centric answers, e.g. 'https://centric.example.com'. */
  baseUrl: string;
  /** An SDK key (csk_..., safe to embed: decide, identify, track and expose only). */
  sdkKey: string;
  /** Default channel, 'web'. */
  channel?: string;
  /**
   * ms before decide() falls back, 300. With the head snippet (cloak.js) the snippet's
   * data-timeout governs the first decide: the cloak and decide share that one timer.
   */
  timeout?: number;
  /** ms before a track, identify or expose request is abandoned and retried later, 10000. */
  requestTimeout?: number;
  /** Experiment -> variant to show on fallback (else 'control'). */
  defaults?: Record<string, string>;
  /** Confirm real decisions delivered in time (POST /v1/expose) automatically, true. */
  autoExpose?: boolean;
  /** Told about every failure the SDK absorbs (decide fallbacks, dropped requests). */
  onError?: (error: CentricError) => void;
  /** The page's cloak to wait for; default: window.centricCloak.active (cloak.js); null: none. */
  cloak?: Cloak | null;
  /** Domain attribute of the visitor cookie, e.g. 'example.com' for all subdomains. */
  cookieDomain?: string;
  /** First retry delay in ms (doubling up to retryMax), 1000. Retry-After overrides it. */
  retryBase?: number;
  /** Largest retry delay in ms, 60000. */
  retryMax?: number;
  /** Events per track request, 100 (at most 500). */
  batchSize?: number;
  // For tests and unusual environments:
  fetch?: typeof fetch;
  document?: Document | { cookie: string } | null;
  storage?: StorageLike;
  window?: { addEventListener(type: 'online', listener: () => void): void } | null;
  setTimeout?: (fn: () => void, ms: number) => unknown;
  clearTimeout?: (timer: any) => void;
}

export class Centric {
  constructor(options: CentricOptions);
  /** The first-party visitor id (cookie centric_vid, localStorage backup); created on first use. */
  readonly visitorId: string;
  /**
   * Decide every slot of the page in one request. Never rejects: on timeout, network error or
   * any non-2xx answer it resolves with each experiment's default (reason 'fallback').
   */
  decide(options?: DecideOptions): Promise<DecideResult>;
  /**
   * Link ids on login. Queued and retried like events. Resolves to the visitor id the server
   * wants kept (the SDK adopts it), or null when refused (4xx, dropped with a warning) or not
   * delivered yet (it stays queued and is retried, also on later pages).
   */
  identify(ids: Record<string, string>, options?: IdentifyOptions): Promise<string | null>;
  /** @deprecated form: identify(ids, attributes[, {signature}]). */
  identify(ids: Record<string, string>, attributes: Record<string, unknown> | null,
           options?: { signature?: string }): Promise<string | null>;
  /**
   * Record an outcome; returns the event id at once, or null when the event is invalid
   * (dropped with a console warning). Sent with keepalive, retried until acknowledged.
   */
  track(metric: string, value?: number | null, options?: TrackOptions): string | null;
  /** Send what is queued now; true when the queue is empty, false when a retry is scheduled. */
  flush(): Promise<boolean>;
  /** The queued requests (inspect only). */
  queue(): QueueItem[];
  /** Forget the visitor id (logout on a shared device). */
  reset(): void;
  /**
   * Anti-flicker from the module: hide `selector` until the next decide() has been applied or
   * `timeout` ms (default: the client's timeout). Prefer the head snippet cloak.js: a module
   * runs after the first paint.
   */
  hideUntilDecided(selector: string | readonly string[], timeout?: number): Cloak;
}

/** What onError receives. */
export class CentricError extends Error {
  constructor(operation: CentricError['operation'], reason: CentricError['reason'],
              message: string, status?: number);
  readonly name: 'CentricError';
  readonly operation: 'decide' | 'track' | 'identify' | 'expose';
  readonly reason: 'timeout' | 'network' | 'http' | 'invalid' | 'storage';
  /** The HTTP status, 0 when there was no answer. */
  readonly status: number;
}

/** Read one cookie value out of a document.cookie string; null if absent or malformed. */
export function readCookie(cookies: string | null | undefined, name: string): string | null;
/** The Set-Cookie string for the visitor id. */
export function visitorCookie(id: string, options?: { secure?: boolean; maxAgeDays?: number;
                                                       domain?: string | null }): string;
/** True for an id the server accepts: 1-256 printable characters, not an e-mail address. */
export function isValidId(id: unknown): id is string;
/** A random id in UUID form (v4 from Web Crypto, else time-ordered v7 with Math.random). */
export function newId(): string;
/** Why a track event would be refused (field -> reason), or null when it is valid. */
export function eventProblems(metric: unknown, value: unknown, eventId: unknown):
  Record<string, string> | null;
/** Seconds from a Retry-After header value (seconds or HTTP date), capped at 3600; else null. */
export function parseRetryAfter(value: string | null | undefined, now?: number): number | null;
/** True when the document's selector parser accepts `selector` (never throws). */
export function isSafeSelector(doc: { querySelector(s: string): unknown } | null,
                               selector: unknown): boolean;
/** A cloak hiding `selectors` until reveal() or `timeout` ms (or until `parent` settles). */
export function createCloak(doc: Document | null, selectors: string | readonly string[],
                            timeout: number,
                            timers: { setTimeout(fn: () => void, ms: number): unknown;
                                      clearTimeout(timer: any): void },
                            parent?: Cloak | null): Cloak;
export function decisionsResult(visitorId: string, body: { decisions?: Decision[];
                                  persona?: string | null } | null,
                                defaults: Record<string, string>, fallback: boolean,
                                client?: Centric | null): DecideResult;
export function fallbackDecisions(visitorId: string, experiments: readonly string[] | null,
                                  defaults: Record<string, string>): DecideResult;

declare global {
  interface Window {
    /** Set by the head snippet cloak.js. */
    centricCloak?: {
      hide(selectors: string | readonly string[], timeoutMs: number): Cloak;
      active: Cloak | null;
    };
  }
}
