// centric browser SDK: one request per page for every slot, a sticky first-party visitor id,
// a short timeout with a safe fallback, anti-flicker that shares that one timer, exposures
// confirmed only for what the page was given in time, and outcome tracking that survives
// navigation, offline periods, a full localStorage and a device clock that is off.
// No dependencies, no build step; an ES module. Types: centric.d.ts beside this file.

const COOKIE = 'centric_vid';
const QUEUE_KEY = 'centric_queue';
const DAY = 86400;
const MAX_QUEUE = 1000;
const MAX_AGE_SECONDS = 30 * DAY;          // the server refuses older events
const MAX_ID_LENGTH = 256;
const MAX_EXPOSE_BATCH = 50;
const MAX_VALUE = 1e12;                    // the server's bound on an event value
const KEEPALIVE_LIMIT = 60000;             // bytes: browsers cap keepalive bodies at 64 KiB
const SHOWN_REASONS = new Set(['assigned', 'holdout', 'sticky']);
const METRIC_RE = /^[a-z0-9][a-z0-9_-]{0,63}$/;
const EVENT_ID_RE = /^[A-Za-z0-9_.:-]{1,128}$/;
const DECISION_ID_RE = /^[0-9a-f]{32}$/;
const ID_TYPE_RE = /^[a-z][a-z0-9_]{0,31}$/;
const EMAIL_LIKE = /[^@\s]@[^@\s.][^@\s]*\.[^@\s]/;
// eslint-disable-next-line no-control-regex
const CONTROL_CHARS = /[\u0000-\u001f\u007f]/;

/** Read one cookie value out of a `document.cookie` string; null if absent or malformed. */
export function readCookie(cookies, name) {
  for (const part of String(cookies || '').split(';')) {
    const [key, ...rest] = part.trim().split('=');
    if (key !== name) continue;
    try {
      return decodeURIComponent(rest.join('='));
    } catch (error) {
      return null;  // e.g. centric_vid=%E0%A4%A: treat as absent, a fresh id replaces it
    }
  }
  return null;
}

/** The Set-Cookie string for the visitor id: first-party, Lax, Secure on https, ~400 days. */
export function visitorCookie(id, { secure = false, maxAgeDays = 400, domain = null } = {}) {
  let cookie = `${COOKIE}=${encodeURIComponent(id)}; Path=/; Max-Age=${maxAgeDays * DAY}; SameSite=Lax`;
  if (domain) cookie += `; Domain=${domain}`;
  if (secure) cookie += '; Secure';
  return cookie;
}

/** True for an id the server accepts: 1-256 printable characters, not an e-mail address. */
export function isValidId(id) {
  return typeof id === 'string' && id.length > 0 && id.length <= MAX_ID_LENGTH
    && !CONTROL_CHARS.test(id) && !EMAIL_LIKE.test(id);
}

let idCounter = 0;

/**
 * A random id in UUID form: crypto.randomUUID where the platform has it (secure contexts),
 * else crypto.getRandomValues, else (no Web Crypto at all) the time in ms, a per-page counter
 * and Math.random, so two ids never come out equal even with a weak Math.random.
 */
export function newId() {
  const webCrypto = globalThis.crypto;
  try {
    if (webCrypto && typeof webCrypto.randomUUID === 'function') return webCrypto.randomUUID();
  } catch (error) { /* fall through */ }
  const bytes = new Uint8Array(16);
  let random = false;
  try {
    if (webCrypto && typeof webCrypto.getRandomValues === 'function') {
      webCrypto.getRandomValues(bytes);
      random = true;
    }
  } catch (error) { /* fall through */ }
  if (!random) {
    // No Web Crypto: 48 bits of ms time (as in a UUID v7), a 12-bit per-page counter, then
    // Math.random: ids made in the same page never repeat, across pages they differ at random.
    let time = Date.now();
    for (let i = 5; i >= 0; i -= 1) {
      bytes[i] = time % 256;
      time = Math.floor(time / 256);
    }
    idCounter = (idCounter + 1) % 4096;
    bytes[6] = 0x70 | (idCounter >> 8);   // version 7 (time-ordered)
    bytes[7] = idCounter & 0xff;
    for (let i = 8; i < 16; i += 1) bytes[i] = Math.floor(Math.random() * 256);
  } else {
    bytes[6] = (bytes[6] & 0x0f) | 0x40;  // version 4 (random)
  }
  bytes[8] = (bytes[8] & 0x3f) | 0x80;    // RFC 4122 variant
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** What the SDK hands to `onError`: `operation`, `reason` and the HTTP `status` (0: none). */
export class CentricError extends Error {
  constructor(operation, reason, message, status = 0) {
    super(`centric: ${operation}: ${message}`);
    this.name = 'CentricError';
    this.operation = operation;  // 'decide' | 'track' | 'identify' | 'expose'
    this.reason = reason;        // 'timeout' | 'network' | 'http' | 'invalid' | 'storage'
    this.status = status;
  }
}

/**
 * A decide result with helpers; `fallback` is true when the server was not heard in time.
 * `client` (optional) is the Centric instance that confirms exposures for `expose()`.
 */
export function decisionsResult(visitorId, body, defaults, fallback, client = null) {
  const decisions = Array.isArray(body && body.decisions) ? body.decisions : [];
  const find = (key) => decisions.find((d) => d && d.experiment === key);
  const result = {
    visitorId,
    persona: (body && body.persona) ?? null,
    decisions,
    fallback,
    /** The variant to show: the server's, else `otherwise`, else the configured default, else 'control'. */
    variant(key, otherwise) {
      const d = find(key);
      if (d && d.reason !== 'fallback') return d.variant;
      if (otherwise !== undefined && otherwise !== null) return otherwise;
      return d ? d.variant : (defaults[key] ?? 'control');
    },
    payload(key, otherwise = null) {
      const d = find(key);
      return d && d.payload != null ? d.payload : otherwise;
    },
    reason(key) {
      const d = find(key);
      return d ? d.reason : (fallback ? 'fallback' : 'not_targeted');
    },
    /**
     * Confirm that these experiments (default: all of them) were shown. Only real decisions
     * of reason assigned, holdout or sticky are sent; a fallback result confirms nothing.
     * Returns how many decisions were queued for confirmation.
     */
    expose(keys) {
      if (fallback || !client) return 0;
      const wanted = keys === undefined || keys === null ? null
        : new Set(typeof keys === 'string' ? [keys] : keys);
      const chosen = decisions.filter((d) => d && (!wanted || wanted.has(d.experiment)));
      return client.confirm(visitorId, chosen);
    },
    /** Lift the anti-flicker cloak this result's decide call waited for (no-op otherwise). */
    reveal() {},
  };
  return result;
}

/** The fallback answer: every requested experiment gets its default (else control). */
export function fallbackDecisions(visitorId, experiments, defaults) {
  const decisions = (Array.isArray(experiments) ? experiments : []).map((experiment) => ({
    experiment, variant: defaults[experiment] ?? 'control', payload: null,
    decision_id: null, propensity: null, reason: 'fallback',
  }));
  return decisionsResult(visitorId, { decisions, persona: null }, defaults, true);
}

/**
 * True when `selector` is a CSS selector that can go before `{...}` in a style rule without
 * changing anything else: the document's own selector parser must accept it. Never throws.
 */
export function isSafeSelector(doc, selector) {
  if (typeof selector !== 'string' || !selector.trim() || selector.length > 1000) return false;
  if (!doc || typeof doc.querySelector !== 'function') return false;
  try {
    doc.querySelector(selector);
    return true;
  } catch (error) {
    return false;
  }
}

/**
 * Hide `selectors` (a selector or a list) with one <style> rule each, until `reveal()` or
 * `timeout` ms — the same protocol as the classic head snippet cloak.js. `parent`: another
 * cloak whose timer this one follows instead of starting its own.
 */
export function createCloak(doc, selectors, timeout, timers, parent = null) {
  const list = (typeof selectors === 'string' ? [selectors] : Array.from(selectors || []));
  const listeners = [];
  const handle = {
    selectors: [],
    state: 'hidden',
    reveal() { settle('revealed'); },
    onSettle(fn) {
      if (handle.state === 'hidden') listeners.push(fn);
      else fn(handle.state);
    },
  };
  let style = null;
  let timer = null;
  function settle(state) {
    if (handle.state !== 'hidden') return;
    handle.state = state;
    if (timer !== null) timers.clearTimeout(timer);
    timer = null;
    if (style && style.parentNode) style.parentNode.removeChild(style);
    for (const fn of listeners.splice(0)) {
      try { fn(state); } catch (error) { /* a listener never breaks the others */ }
    }
  }
  if (doc && typeof doc.createElement === 'function') {
    style = doc.createElement('style');
    style.setAttribute('data-centric-cloak', '');
    (doc.head || doc.documentElement).appendChild(style);
    const rules = [];
    for (const selector of list) {
      if (!isSafeSelector(doc, selector)) {
        warn(`not a valid CSS selector, not hidden: ${JSON.stringify(String(selector)).slice(0, 80)}`);
        continue;
      }
      const rule = `${selector} { visibility: hidden !important; }`;
      const sheet = style.sheet;
      if (sheet && typeof sheet.insertRule === 'function') {
        try {
          // insertRule takes exactly one rule, so nothing can escape into another rule.
          sheet.insertRule(rule, sheet.cssRules.length);
        } catch (error) {
          warn(`not a valid CSS selector, not hidden: ${String(selector).slice(0, 80)}`);
          continue;
        }
      } else {
        rules.push(rule);
      }
      handle.selectors.push(selector);
    }
    if (rules.length) style.textContent = rules.join('\n');
  }
  if (!handle.selectors.length) {
    settle('revealed');
  } else if (parent && parent.state === 'hidden') {
    parent.onSettle((state) => settle(state));
  } else {
    timer = timers.setTimeout(() => settle('timeout'), timeout);
  }
  return handle;
}

class MemoryStorage {
  constructor() { this.items = new Map(); }
  getItem(key) { return this.items.has(key) ? this.items.get(key) : null; }
  setItem(key, value) { this.items.set(key, String(value)); }
  removeItem(key) { this.items.delete(key); }
}

/** A queue entry from an older SDK (a bare track event with `timestamp`) in today's form. */
function normalizeItem(item) {
  if (!item || typeof item !== 'object') return null;
  if (item.kind === 'track' || item.kind === 'expose' || item.kind === 'identify') return item;
  if (item.kind === undefined && typeof item.event_id === 'string') {
    const created = Number.isFinite(item.timestamp) ? item.timestamp * 1000 : Date.now();
    const { timestamp, ...event } = item;  // eslint-disable-line no-unused-vars
    return { kind: 'track', id: item.event_id, created, event };
  }
  return null;
}

/** Why a track event cannot be sent (a field -> reason map), or null when it is valid. */
export function eventProblems(metric, value, eventId) {
  const problems = {};
  if (typeof metric !== 'string' || !METRIC_RE.test(metric)) {
    problems.metric = 'must match [a-z0-9][a-z0-9_-]{0,63}';
  }
  if (value !== undefined && value !== null
      && (typeof value !== 'number' || !Number.isFinite(value) || Math.abs(value) > MAX_VALUE)) {
    problems.value = 'must be a finite number (at most 1e12 in size)';
  }
  if (typeof eventId !== 'string' || !EVENT_ID_RE.test(eventId)) {
    problems.event_id = 'must be 1-128 characters of [A-Za-z0-9_.:-]';
  }
  return Object.keys(problems).length ? problems : null;
}

/** Seconds to wait from a Retry-After header (seconds or an HTTP date), else null. */
export function parseRetryAfter(value, now = Date.now()) {
  if (value === null || value === undefined || value === '') return null;
  const text = String(value).trim();
  if (/^\d+(\.\d+)?$/.test(text)) return Math.min(Number(text), 3600);
  const date = Date.parse(text);
  if (Number.isFinite(date)) return Math.min(Math.max(0, (date - now) / 1000), 3600);
  return null;
}

export class Centric {
  /**
   * @param {object} options  see centric.d.ts (CentricOptions) for every option
   */
  constructor(options) {
    if (!options || !options.baseUrl || !options.sdkKey) {
      throw new Error('centric: baseUrl and sdkKey are required');
    }
    this.baseUrl = String(options.baseUrl).replace(/\/+$/, '');
    this.sdkKey = options.sdkKey;
    this.channel = options.channel || 'web';
    this.timeout = options.timeout ?? 300;
    this.requestTimeout = options.requestTimeout ?? 10000;
    this.defaults = options.defaults || {};
    this.autoExpose = options.autoExpose ?? true;
    this.onError = typeof options.onError === 'function' ? options.onError : null;
    this.fetch = options.fetch || globalThis.fetch.bind(globalThis);
    this.document = options.document !== undefined ? options.document
      : (globalThis.document || null);
    this.storage = options.storage || safeStorage() || new MemoryStorage();
    this.cookieDomain = options.cookieDomain || null;
    this.retryBase = options.retryBase ?? 1000;
    this.retryMax = options.retryMax ?? 60000;
    this.batchSize = Math.min(options.batchSize ?? 100, 500);
    this.setTimeout = options.setTimeout || globalThis.setTimeout.bind(globalThis);
    this.clearTimeout = options.clearTimeout || globalThis.clearTimeout.bind(globalThis);
    this.timers = { setTimeout: this.setTimeout, clearTimeout: this.clearTimeout };
    this.retryDelay = this.retryBase;
    this.retryTimer = null;
    this.sending = null;
    this.again = false;
    this.vid = null;
    this.memoryQueue = null;        // set when localStorage refuses writes (full, disabled)
    this.waiters = new Map();       // identify item id -> resolve
    this.confirmed = new Set();     // decision ids already queued for /v1/expose
    // The page's cloak from the classic head snippet (cloak.js), if one is still hiding.
    const page = options.cloak !== undefined ? options.cloak
      : (globalThis.centricCloak && globalThis.centricCloak.active) || null;
    // A cloak that already timed out is kept too: its slots show their defaults, so the first
    // decide must not switch them (it resolves with the fallback at once).
    this.pendingCloak = page && (page.state === 'hidden' || page.state === 'timeout') ? page : null;
    const win = options.window || (typeof window !== 'undefined' ? window : null);
    if (win && win.addEventListener) {
      win.addEventListener('online', () => {
        if (this.retryTimer !== null) this.clearTimeout(this.retryTimer);
        this.retryTimer = null;
        this.retryDelay = this.retryBase;
        this.flush();
      });
    }
    if (this.queue().length) this.flush();  // requests left by an earlier page
  }

  /** The first-party visitor id: cookie first, localStorage as backup; refreshed each visit. */
  get visitorId() {
    if (this.vid) return this.vid;
    let fromCookie = null;
    try {
      fromCookie = this.document ? readCookie(this.document.cookie, COOKIE) : null;
    } catch (error) { /* a sandboxed frame may refuse cookies */ }
    let fromStorage = null;
    try {
      fromStorage = this.storage.getItem(COOKIE);
    } catch (error) { /* storage disabled */ }
    if (isValidId(fromCookie)) this.vid = fromCookie;
    else if (isValidId(fromStorage)) this.vid = fromStorage;
    else this.vid = newId();
    this.remember(this.vid);
    return this.vid;
  }

  remember(id) {
    try {
      this.storage.setItem(COOKIE, id);
    } catch (error) { /* full or disabled: the cookie still holds it */ }
    if (this.document) {
      try {
        const secure = typeof location !== 'undefined' && location.protocol === 'https:';
        this.document.cookie = visitorCookie(id, { secure, domain: this.cookieDomain });
      } catch (error) { /* cookies refused: localStorage (or memory) still holds it */ }
    }
  }

  /** Forget the visitor id (logout on a shared device): the next call starts a new visitor. */
  reset() {
    this.vid = null;
    try { this.storage.removeItem(COOKIE); } catch (error) { /* nothing to forget */ }
    if (this.document) {
      try {
        this.document.cookie = visitorCookie('', { maxAgeDays: 0, domain: this.cookieDomain });
      } catch (error) { /* cookies refused */ }
    }
  }

  headers() {
    return { Authorization: `Bearer ${this.sdkKey}`, 'Content-Type': 'application/json' };
  }

  report(error) {
    if (!this.onError) return;
    try { this.onError(error); } catch (ignored) { /* the app's handler never breaks the SDK */ }
  }

  /**
   * Decide every slot of the page in one request. Never rejects: on timeout, network error or
   * any non-2xx answer it resolves with each experiment's default (reason 'fallback').
   * The first decide after the head snippet (cloak.js) or hideUntilDecided() uses that
   * cloak's timer as its timeout — one timer, so a slot is never revealed with its default
   * and then switched — and reveals the cloak right after the page has applied the result.
   */
  decide(options = {}) {
    const opts = options && typeof options === 'object' ? options : {};
    let settled = false;
    let resolveOuter;
    const outer = new Promise((resolve) => { resolveOuter = resolve; });
    let visitorId = null;
    let experiments = null;
    let fallbackDefaults = this.defaults;
    let cloak = null;
    let timer = null;
    let controller = null;
    const finish = (answer, error) => {
      if (settled) return;
      settled = true;
      if (timer !== null) this.clearTimeout(timer);
      let result;
      try {
        result = answer ? decisionsResult(visitorId, answer, fallbackDefaults, false, this) : null;
      } catch (ignored) {
        result = null;
      }
      if (!result) {
        result = fallbackDecisions(visitorId, experiments, fallbackDefaults);
        if (error) {
          warn(error.message.replace(/^centric: /, ''));
          this.report(error);
        }
      }
      if (cloak) {
        const lift = cloak;
        result.reveal = () => lift.reveal();
        // After the page's own code that awaits this promise has run (a later task).
        if (opts.reveal !== false) this.setTimeout(() => lift.reveal(), 0);
      }
      resolveOuter(result);
      if (!result.fallback && (opts.autoExpose ?? this.autoExpose)) result.expose();
    };
    try {
      experiments = Array.isArray(opts.experiments) ? opts.experiments : null;
      fallbackDefaults = { ...this.defaults, ...(opts.defaults || {}) };
      visitorId = this.visitorId;
      cloak = this.pendingCloak;
      this.pendingCloak = null;
      if (cloak && cloak.state === 'timeout') {
        // The defaults are on screen already: switching them now would be the flicker.
        finish(null, new CentricError('decide', 'timeout',
          'the cloak timed out before decide() was called; showing the defaults'));
        return outer;
      }
      if (cloak && cloak.state !== 'hidden') cloak = null;
      const body = { visitor_id: visitorId, channel: opts.channel || this.channel,
        expose: false };
      if (experiments) body.experiments = experiments;
      if (opts.attributes) body.attributes = opts.attributes;
      if (opts.persona) body.persona = opts.persona;
      controller = typeof AbortController !== 'undefined' ? new AbortController() : null;
      const onTimeout = () => {
        if (controller) controller.abort();
        finish(null, new CentricError('decide', 'timeout', `no answer in time; showing the defaults`));
      };
      if (cloak) {
        cloak.onSettle((state) => {
          if (state === 'timeout') onTimeout();
          // revealed by the page before decide answered: keep waiting on our own timer
          else if (!settled) timer = this.setTimeout(onTimeout, this.timeout);
        });
      } else {
        timer = this.setTimeout(onTimeout, this.timeout);
      }
      Promise.resolve()
        .then(() => this.fetch(`${this.baseUrl}/v1/decide`, {
          method: 'POST', headers: this.headers(), body: JSON.stringify(body),
          signal: controller ? controller.signal : undefined,
        }))
        .then(async (response) => {
          if (settled) return;  // a late answer is ignored: the page shows the fallback
          if (!response.ok) {
            finish(null, new CentricError('decide', 'http', `answered ${response.status}`,
              response.status));
            return;
          }
          const json = await response.json();
          if (!json || typeof json !== 'object' || !Array.isArray(json.decisions || [])) {
            finish(null, new CentricError('decide', 'invalid', 'answer is not a decide answer'));
            return;
          }
          finish(json);
        })
        .catch((error) => {
          finish(null, new CentricError('decide', 'network', String(error && error.message)));
        });
    } catch (error) {
      finish(null, new CentricError('decide', 'invalid', String(error && error.message)));
    }
    return outer;
  }

  /**
   * Queue confirmations for decisions the page showed (POST /v1/expose): only reasons
   * assigned, holdout and sticky with a decision id, each decision once. Returns the count.
   */
  confirm(visitorId, decisions) {
    const items = [];
    for (const d of decisions || []) {
      // The server marks what still waits for a confirmation (`pending`); a sticky decision
      // confirmed on an earlier page needs none. (An older server sends no `pending`.)
      if (!d || !SHOWN_REASONS.has(d.reason) || d.pending === false
          || typeof d.decision_id !== 'string'
          || !DECISION_ID_RE.test(d.decision_id) || this.confirmed.has(d.decision_id)) continue;
      this.confirmed.add(d.decision_id);
      items.push({ kind: 'expose', id: `x:${d.decision_id}`, created: Date.now(), visitor_id: visitorId,
        decision: { experiment: d.experiment, decision_id: d.decision_id } });
    }
    if (items.length) {
      this.enqueue(items);
      this.kick();
    }
    return items.length;
  }

  /**
   * Link ids on login: `identify({customer_id: '42'}, {signature, attributes})` (the
   * signature is the hex HMAC-SHA256 of the customer id that the shop's backend computed;
   * `signatureExpires` too when the backend bound it to this visitor id and an expiry), or
   * the older `identify(ids, attributes)`. The call is queued (in localStorage, like events)
   * and retried with backoff until the server answers. Resolves to the visitor id the server
   * wants kept (the SDK adopts it), or null when the call was refused (4xx: dropped with a
   * warning) or could not be delivered yet (it stays queued and is retried, also on later pages).
   */
  identify(ids, second, third) {
    let attributes = null;
    let signature = null;
    let signatureExpires = null;
    const isOptions = second && typeof second === 'object' && Object.keys(second).length > 0
      && Object.keys(second).every((k) => ['signature', 'signatureExpires', 'attributes'].includes(k));
    if (isOptions) {
      ({ attributes = null, signature = null, signatureExpires = null } = second);
    } else {
      attributes = second || null;
      if (third && typeof third === 'object') ({ signature = null } = third);
    }
    const problem = !ids || typeof ids !== 'object' || !Object.keys(ids).length ? 'no ids'
      : Object.entries(ids).find(([k, v]) => !ID_TYPE_RE.test(k) || !isValidId(v)) ? 'ids must be {type: "1-256 printable characters"}'
        : signature !== null && !/^[0-9a-fA-F]{64}$/.test(String(signature)) ? 'signature must be 64 hex characters'
          : signatureExpires !== null && !Number.isInteger(signatureExpires) ? 'signatureExpires must be whole epoch seconds'
            : null;
    if (problem) {
      warn(`identify refused: ${problem}`);
      this.report(new CentricError('identify', 'invalid', problem));
      return Promise.resolve(null);
    }
    const body = { visitor_id: this.visitorId, ids: { ...ids } };
    if (attributes && Object.keys(attributes).length) body.attributes = attributes;
    if (signature) body.signature = String(signature).toLowerCase();
    if (signatureExpires !== null) body.signature_expires = signatureExpires;
    const item = { kind: 'identify', id: `i:${newId()}`, created: Date.now(), body };
    this.enqueue([item]);
    return new Promise((resolve) => {
      if (this.retryTimer !== null) {
        resolve(null);  // backing off: the call waits its turn in the queue
        return;
      }
      this.waiters.set(item.id, resolve);
      this.flush();
    });
  }

  /**
   * Record an outcome. Returns the event id at once (null if the event is invalid: it is
   * dropped with a warning); the event is queued (in localStorage, so it survives navigation
   * and offline periods; in memory when localStorage is full) and sent with keepalive,
   * retried with backoff until the server acknowledges it; the server counts each event id once.
   */
  track(metric, value, { eventId } = {}) {
    try {
      const id = eventId === undefined || eventId === null ? newId() : eventId;
      const problems = eventProblems(metric, value, id);
      if (problems) {
        const why = Object.entries(problems).map(([k, v]) => `${k} ${v}`).join('; ');
        warn(`track(${JSON.stringify(metric)}) dropped: ${why}`);
        this.report(new CentricError('track', 'invalid', why));
        return null;
      }
      const event = { visitor_id: this.visitorId, metric, event_id: id };
      if (value !== undefined && value !== null) event.value = value;
      this.enqueue([{ kind: 'track', id, created: Date.now(), event }]);
      this.kick();
      return id;
    } catch (error) {  // never throws into the page
      warn(`track failed: ${error && error.message}`);
      return null;
    }
  }

  /** The queued requests (track events, exposure confirmations, identify calls), oldest first. */
  queue() {
    if (this.memoryQueue) return this.memoryQueue.slice();
    let items = [];
    try {
      items = JSON.parse(this.storage.getItem(QUEUE_KEY) || '[]');
    } catch (error) {
      items = [];
    }
    return Array.isArray(items) ? items.map(normalizeItem).filter(Boolean) : [];
  }

  save(items) {
    if (this.memoryQueue) {
      this.memoryQueue = items;
      return;
    }
    try {
      this.storage.setItem(QUEUE_KEY, JSON.stringify(items));
    } catch (error) {
      // Full (QuotaExceededError) or disabled: keep this page's queue in memory instead.
      warn('localStorage refused the queue; keeping it in memory for this page');
      this.report(new CentricError('track', 'storage', String(error && error.name)));
      this.memoryQueue = items;
      try { this.storage.removeItem(QUEUE_KEY); } catch (ignored) { /* nothing to free */ }
    }
  }

  enqueue(items) {
    const all = this.queue().concat(items);
    this.save(all.length > MAX_QUEUE ? all.slice(-MAX_QUEUE) : all);  // keeps the newest
  }

  remove(ids) {
    const gone = new Set(ids);
    this.save(this.queue().filter((item) => !gone.has(item.id)));
  }

  /** Send soon, unless a retry is already scheduled (then it waits for that retry). */
  kick() {
    if (this.retryTimer === null) this.flush();
  }

  /** Send queued requests now; resolves true when the queue is empty, false when a retry is scheduled. */
  flush() {
    if (this.sending) {
      this.again = true;
      return this.sending;
    }
    this.sending = (async () => {
      let done;
      do {
        this.again = false;
        done = await this.sendQueued();
      } while (done && this.again);
      return done;
    })().catch(() => false).finally(() => {
      this.sending = null;
      this.settleWaiters();
    });
    return this.sending;
  }

  /** identify() promises whose call could not be delivered yet resolve null (still queued). */
  settleWaiters() {
    for (const [id, resolve] of this.waiters) {
      this.waiters.delete(id);
      resolve(null);
    }
  }

  /** One POST with its own timeout; never throws. */
  async post(path, body) {
    const controller = typeof AbortController !== 'undefined' ? new AbortController() : null;
    const text = JSON.stringify(body);
    let timer = null;
    const timedOut = new Promise((resolve) => {
      timer = this.setTimeout(() => {
        if (controller) controller.abort();
        resolve({ status: 0, json: null, retryAfter: null, timedOut: true });
      }, this.requestTimeout);
    });
    const request = (async () => {
      try {
        const response = await this.fetch(`${this.baseUrl}${path}`, {
          method: 'POST', headers: this.headers(), body: text,
          keepalive: byteLength(text) < KEEPALIVE_LIMIT,
          signal: controller ? controller.signal : undefined,
        });
        let json = null;
        try { json = await response.json(); } catch (error) { json = null; }
        const header = response.headers && typeof response.headers.get === 'function'
          ? response.headers.get('Retry-After') : null;
        return { status: response.status, json, retryAfter: parseRetryAfter(header) };
      } catch (error) {
        return { status: 0, json: null, retryAfter: null };  // offline, refused, aborted
      }
    })();
    const outcome = await Promise.race([request, timedOut]);
    this.clearTimeout(timer);
    return outcome;
  }

  /** The next request to make from the head of the queue (dropping invalid items), or null. */
  nextBatch() {
    for (;;) {
      const items = this.queue();
      if (!items.length) return null;
      const head = items[0];
      if (head.kind === 'identify') {
        return { kind: 'identify', path: '/v1/identify', items: [head], body: head.body };
      }
      if (head.kind === 'expose') {
        const batch = [];
        for (const item of items) {
          if (item.kind !== 'expose' || item.visitor_id !== head.visitor_id
              || batch.length >= MAX_EXPOSE_BATCH) break;
          batch.push(item);
        }
        return { kind: 'expose', path: '/v1/expose', items: batch,
          body: { visitor_id: head.visitor_id, decisions: batch.map((i) => i.decision) } };
      }
      const batch = [];
      const invalid = [];
      const now = Date.now();
      for (const item of items) {
        if (item.kind !== 'track' || batch.length >= this.batchSize) break;
        const e = item.event || {};
        const age = Math.max(0, (now - item.created) / 1000);  // both times by this device's clock
        const problems = eventProblems(e.metric, e.value, e.event_id)
          || (!isValidId(e.visitor_id) ? { visitor_id: 'invalid' } : null)
          || (!Number.isFinite(age) || age > MAX_AGE_SECONDS ? { age: 'older than 30 days' } : null);
        if (problems) {
          invalid.push(item);
          warn(`dropped queued event ${JSON.stringify(e.event_id)}: ${JSON.stringify(problems)}`);
          continue;
        }
        batch.push({ item, event: { ...e, age: Math.round(age * 1000) / 1000 } });
      }
      if (invalid.length) this.remove(invalid.map((i) => i.id));
      if (!batch.length) continue;
      return { kind: 'track', path: '/v1/track', items: batch.map((b) => b.item),
        body: { events: batch.map((b) => b.event) } };
    }
  }

  async sendQueued() {
    for (;;) {
      const batch = this.nextBatch();
      if (!batch) {
        this.retryDelay = this.retryBase;
        return true;
      }
      const { status, json, retryAfter } = await this.post(batch.path, batch.body);
      const retryable = status === 0 || status === 408 || status === 429 || status >= 500
        || (status < 200) || (status >= 300 && status < 400);
      if (retryable) {
        this.scheduleRetry(retryAfter);
        return false;
      }
      if (status >= 400) {
        const code = json && json.error && json.error.code ? ` ${json.error.code}` : '';
        const fields = json && json.error && json.error.fields
          ? ` ${JSON.stringify(json.error.fields)}` : '';
        warn(`${batch.kind} refused (${status}${code})${fields}; dropped ${batch.items.length}`);
        this.report(new CentricError(batch.kind, 'http', `refused with ${status}${code}`, status));
      } else if (batch.kind === 'track' && json && Array.isArray(json.rejected) && json.rejected.length) {
        // Partial answer: the others were recorded; the rejected ones are dropped, not retried.
        for (const r of json.rejected) {
          const event = batch.body.events[r && r.index];
          warn(`event ${JSON.stringify(event && event.event_id)} rejected: ${JSON.stringify(r && r.fields)}`);
        }
        this.report(new CentricError('track', 'invalid', `${json.rejected.length} events rejected`, status));
      }
      if (batch.kind === 'identify') this.identified(batch.items[0], status < 400 ? json : null);
      this.remove(batch.items.map((i) => i.id));
      this.retryDelay = this.retryBase;
    }
  }

  identified(item, json) {
    const resolve = this.waiters.get(item.id);
    this.waiters.delete(item.id);
    const canonical = json && isValidId(json.visitor_id) ? json.visitor_id : null;
    if (canonical && this.vid === item.body.visitor_id && canonical !== this.vid) {
      this.vid = canonical;   // the server's canonical id for this person: keep using it
      this.remember(canonical);
    }
    if (resolve) resolve(json ? (canonical || item.body.visitor_id) : null);
  }

  scheduleRetry(retryAfter = null) {
    if (this.retryTimer !== null) return;
    let delay = this.retryDelay;
    if (retryAfter !== null && retryAfter !== undefined) delay = retryAfter * 1000;
    this.retryDelay = Math.min(this.retryDelay * 2, this.retryMax);
    this.retryTimer = unref(this.setTimeout(() => { this.retryTimer = null; this.flush(); }, delay));
  }

  /**
   * Anti-flicker from the module (prefer the head snippet cloak.js: a module runs after the
   * first paint). Hides only the personalised elements until reveal() or the timeout; the
   * next decide() shares this timer and reveals it. Returns the cloak ({reveal, state, ...}).
   */
  hideUntilDecided(selector, timeout = this.timeout) {
    const parent = this.pendingCloak && this.pendingCloak.state === 'hidden'
      ? this.pendingCloak : null;
    const cloak = createCloak(this.document, selector, timeout, this.timers, parent);
    if (!parent && cloak.state === 'hidden') this.pendingCloak = cloak;
    return cloak;
  }
}

function safeStorage() {
  try {
    const storage = globalThis.localStorage;
    if (!storage) return null;
    storage.getItem(QUEUE_KEY);  // throws where storage is disabled; a full one still reads
    return storage;
  } catch (error) {
    return null;
  }
}

/** Outside a browser (server-side rendering, tests) a retry never keeps the process alive. */
function unref(timer) {
  if (timer && typeof timer.unref === 'function') timer.unref();
  return timer;
}

function byteLength(text) {
  return typeof TextEncoder !== 'undefined' ? new TextEncoder().encode(text).length
    : text.length * 3;
}

function warn(message) {
  if (typeof console !== 'undefined') console.warn(`centric: ${message}`);
}
