// centric browser SDK: one request per page for every slot, a sticky first-party visitor id,
// a short timeout with a safe fallback, an anti-flicker helper, and outcome tracking that
// survives navigation and offline periods. No dependencies; an ES module.

const COOKIE = 'centric_vid';
const QUEUE_KEY = 'centric_queue';
const DAY = 86400;

/** Read one cookie value out of a `document.cookie` string. */
export function readCookie(cookies, name) {
  for (const part of (cookies || '').split(';')) {
    const [key, ...rest] = part.trim().split('=');
    if (key === name) return decodeURIComponent(rest.join('='));
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

/** A random id (UUID v4 where the platform has it). */
export function newId() {
  if (globalThis.crypto && typeof globalThis.crypto.randomUUID === 'function') {
    return globalThis.crypto.randomUUID();
  }
  const bytes = new Uint8Array(16);
  (globalThis.crypto || { getRandomValues: (b) => b.map(() => Math.floor(Math.random() * 256)) })
    .getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** A decide result with helpers; `fallback` is true when the server was not heard in time. */
export function decisionsResult(visitorId, body, defaults, fallback) {
  const decisions = body.decisions || [];
  const find = (key) => decisions.find((d) => d.experiment === key);
  return {
    visitorId,
    persona: body.persona ?? null,
    decisions,
    fallback,
    variant(key) {
      const d = find(key);
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
  };
}

/** The fallback answer: every requested experiment gets its default (else control). */
export function fallbackDecisions(visitorId, experiments, defaults) {
  const decisions = (experiments || []).map((experiment) => ({
    experiment, variant: defaults[experiment] ?? 'control', payload: null,
    decision_id: null, propensity: null, reason: 'fallback',
  }));
  return decisionsResult(visitorId, { decisions, persona: null }, defaults, true);
}

class MemoryStorage {
  constructor() { this.items = new Map(); }
  getItem(key) { return this.items.has(key) ? this.items.get(key) : null; }
  setItem(key, value) { this.items.set(key, String(value)); }
  removeItem(key) { this.items.delete(key); }
}

export class Centric {
  /**
   * @param {object} options
   * @param {string} options.baseUrl   where centric answers, e.g. https://centric.example.com
   * @param {string} options.sdkKey    an SDK key (safe to embed: decide, identify, track only)
   * @param {string} [options.channel] default channel, 'web'
   * @param {number} [options.timeout] ms before decide falls back, 300
   * @param {object} [options.defaults] experiment -> variant to show on fallback (else 'control')
   */
  constructor(options) {
    if (!options || !options.baseUrl || !options.sdkKey) {
      throw new Error('centric: baseUrl and sdkKey are required');
    }
    this.baseUrl = options.baseUrl.replace(/\/+$/, '');
    this.sdkKey = options.sdkKey;
    this.channel = options.channel || 'web';
    this.timeout = options.timeout ?? 300;
    this.defaults = options.defaults || {};
    this.fetch = options.fetch || globalThis.fetch.bind(globalThis);
    this.document = options.document || globalThis.document || null;
    this.storage = options.storage || safeStorage() || new MemoryStorage();
    this.cookieDomain = options.cookieDomain || null;
    this.retryBase = options.retryBase ?? 1000;
    this.retryMax = options.retryMax ?? 60000;
    this.batchSize = options.batchSize ?? 100;
    this.setTimeout = options.setTimeout || globalThis.setTimeout.bind(globalThis);
    this.clearTimeout = options.clearTimeout || globalThis.clearTimeout.bind(globalThis);
    this.retryDelay = this.retryBase;
    this.retryTimer = null;
    this.sending = null;
    this.vid = null;
    const win = options.window || (typeof window !== 'undefined' ? window : null);
    if (win && win.addEventListener) win.addEventListener('online', () => this.flush());
    if (this.queue().length) this.flush();  // events left by an earlier page
  }

  /** The first-party visitor id: cookie first, localStorage as backup; refreshed each visit. */
  get visitorId() {
    if (this.vid) return this.vid;
    const fromCookie = this.document ? readCookie(this.document.cookie, COOKIE) : null;
    this.vid = fromCookie || this.storage.getItem(COOKIE) || newId();
    this.storage.setItem(COOKIE, this.vid);
    if (this.document) {
      const secure = typeof location !== 'undefined' && location.protocol === 'https:';
      this.document.cookie = visitorCookie(this.vid, { secure, domain: this.cookieDomain });
    }
    return this.vid;
  }

  /** Forget the visitor id (logout on a shared device): the next call starts a new visitor. */
  reset() {
    this.vid = null;
    this.storage.removeItem(COOKIE);
    if (this.document) {
      this.document.cookie = visitorCookie('', { maxAgeDays: 0, domain: this.cookieDomain });
    }
  }

  headers() {
    return { Authorization: `Bearer ${this.sdkKey}`, 'Content-Type': 'application/json' };
  }

  /**
   * Decide every slot of the page in one request. Never rejects: on timeout, network error or
   * any non-2xx answer it resolves with each experiment's default (reason 'fallback').
   */
  async decide({ experiments, attributes, channel, persona, defaults } = {}) {
    const visitorId = this.visitorId;
    const fallbackDefaults = { ...this.defaults, ...(defaults || {}) };
    const body = { visitor_id: visitorId, channel: channel || this.channel };
    if (experiments) body.experiments = experiments;
    if (attributes) body.attributes = attributes;
    if (persona) body.persona = persona;
    const controller = typeof AbortController !== 'undefined' ? new AbortController() : null;
    let timer = null;
    const timedOut = new Promise((resolve) => {
      timer = this.setTimeout(() => { if (controller) controller.abort(); resolve(null); },
        this.timeout);
    });
    const request = (async () => {
      try {
        const response = await this.fetch(`${this.baseUrl}/v1/decide`, {
          method: 'POST', headers: this.headers(), body: JSON.stringify(body),
          signal: controller ? controller.signal : undefined,
        });
        if (!response.ok) {
          warn(`decide answered ${response.status}`);
          return null;
        }
        return await response.json();
      } catch (error) {
        return null;
      }
    })();
    const answer = await Promise.race([request, timedOut]);
    this.clearTimeout(timer);
    if (!answer) return fallbackDecisions(visitorId, experiments, fallbackDefaults);
    return decisionsResult(visitorId, answer, fallbackDefaults, false);
  }

  /** Link ids on login (e.g. {customer_id: '42'}); resolves to the canonical id, or null. */
  async identify(ids, attributes) {
    const body = { visitor_id: this.visitorId, ids };
    if (attributes) body.attributes = attributes;
    try {
      const response = await this.fetch(`${this.baseUrl}/v1/identify`, {
        method: 'POST', headers: this.headers(), body: JSON.stringify(body), keepalive: true,
      });
      if (!response.ok) return null;
      return (await response.json()).visitor_id;
    } catch (error) {
      return null;
    }
  }

  /**
   * Record an outcome. Returns the event id at once; the event is queued (in localStorage,
   * so it survives navigation and offline periods) and sent with keepalive, retried with
   * backoff until the server acknowledges it; the server counts each event id once.
   */
  track(metric, value, { eventId } = {}) {
    const event = {
      visitor_id: this.visitorId, metric, event_id: eventId || newId(),
      timestamp: Date.now() / 1000,
    };
    if (value !== undefined && value !== null) event.value = value;
    const queued = this.queue();
    queued.push(event);
    this.save(queued.slice(-1000));  // bounded: a page offline for days keeps the newest
    this.flush();
    return event.event_id;
  }

  queue() {
    try {
      return JSON.parse(this.storage.getItem(QUEUE_KEY) || '[]');
    } catch (error) {
      return [];
    }
  }

  save(events) {
    this.storage.setItem(QUEUE_KEY, JSON.stringify(events));
  }

  /** Send queued events now; resolves when the queue is empty or a retry is scheduled. */
  flush() {
    if (this.sending) return this.sending;
    this.sending = this.sendQueued().finally(() => { this.sending = null; });
    return this.sending;
  }

  async sendQueued() {
    for (;;) {
      const batch = this.queue().slice(0, this.batchSize);
      if (!batch.length) return true;
      let status = 0;
      try {
        const response = await this.fetch(`${this.baseUrl}/v1/track`, {
          method: 'POST', headers: this.headers(), body: JSON.stringify({ events: batch }),
          keepalive: true,
        });
        status = response.status;
      } catch (error) {
        status = 0;  // offline or unreachable
      }
      const retryable = status === 0 || status === 429 || status >= 500;
      if (retryable) {
        this.scheduleRetry();
        return false;
      }
      if (status >= 400) warn(`track refused ${batch.length} events (${status}); dropped`);
      const sent = new Set(batch.map((e) => e.event_id));
      this.save(this.queue().filter((e) => !sent.has(e.event_id)));
      this.retryDelay = this.retryBase;
    }
  }

  scheduleRetry() {
    if (this.retryTimer) return;
    const delay = this.retryDelay;
    this.retryDelay = Math.min(this.retryDelay * 2, this.retryMax);
    this.retryTimer = this.setTimeout(() => { this.retryTimer = null; this.flush(); }, delay);
  }

  /**
   * Anti-flicker: hide only the personalised elements (a CSS selector) until reveal() or the
   * timeout, whichever comes first. The rest of the page renders normally.
   */
  hideUntilDecided(selector, timeout = this.timeout) {
    const doc = this.document;
    if (!doc || !doc.createElement) return { reveal() {} };
    const style = doc.createElement('style');
    style.setAttribute('data-centric-cloak', '');
    style.textContent = `${selector} { visibility: hidden !important; }`;
    (doc.head || doc.documentElement).appendChild(style);
    let timer = null;
    const reveal = () => {
      if (timer !== null) this.clearTimeout(timer);
      timer = null;
      if (style.parentNode) style.parentNode.removeChild(style);
    };
    timer = this.setTimeout(reveal, timeout);
    return { reveal };
  }
}

function safeStorage() {
  try {
    const storage = globalThis.localStorage;
    const probe = '__centric_probe__';
    storage.setItem(probe, '1');
    storage.removeItem(probe);
    return storage;
  } catch (error) {
    return null;
  }
}

function warn(message) {
  if (typeof console !== 'undefined') console.warn(`centric: ${message}`);
}
