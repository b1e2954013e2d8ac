// Fakes shared by the unit tests: storage, document, fetch answers, timers, console.

export class Storage {
  constructor() { this.items = new Map(); }
  getItem(k) { return this.items.has(k) ? this.items.get(k) : null; }
  setItem(k, v) { this.items.set(k, String(v)); }
  removeItem(k) { this.items.delete(k); }
}

/** localStorage that is full: every write throws QuotaExceededError, reads and removes work. */
export class FullStorage extends Storage {
  setItem() {
    const error = new Error('The quota has been exceeded.');
    error.name = 'QuotaExceededError';
    throw error;
  }
}

export function fakeDocument(initial = '') {
  const jar = new Map();
  for (const part of initial.split(';').filter(Boolean)) {
    const [k, ...v] = part.trim().split('=');
    jar.set(k, v.join('='));
  }
  return {
    get cookie() { return [...jar].map(([k, v]) => `${k}=${v}`).join('; '); },
    set cookie(text) {
      const [pair] = text.split(';');
      const [k, ...v] = pair.split('=');
      jar.set(k.trim(), v.join('='));
      this.lastSet = text;
    },
  };
}

/** A document with just enough DOM for the cloak: <style> elements with a CSSOM sheet. */
export function cloakDocument() {
  const doc = fakeDocument();
  const head = { children: [], appendChild(el) { this.children.push(el); el.parentNode = this; },
    removeChild(el) { this.children.splice(this.children.indexOf(el), 1); el.parentNode = null; } };
  doc.head = head;
  doc.querySelector = (selector) => {
    // The browser's parser in miniature: refuses what real engines refuse in these tests.
    if (/[{};]|^\s*@|\/\*|^\s*$|[[(]$|^[>+~,]|,\s*$/.test(selector)) {
      const error = new Error(`'${selector}' is not a valid selector`);
      error.name = 'SyntaxError';
      throw error;
    }
    return null;
  };
  doc.createElement = (tag) => {
    const el = { tag, attributes: {}, textContent: '', parentNode: null,
      setAttribute(k, v) { this.attributes[k] = v; } };
    el.sheet = { cssRules: [], insertRule(rule, index) {
      // Like CSSOM: exactly one rule, so a string or comment left open swallows the block.
      if ((rule.match(/{/g) || []).length !== 1 || (rule.match(/"/g) || []).length % 2
          || rule.includes('/*')) throw new Error('SyntaxError: one rule only');
      this.cssRules.splice(index, 0, { cssText: rule, style: { visibility: 'hidden' } });
      return index;
    } };
    return el;
  };
  return doc;
}

export function respond(status, body, headers = {}) {
  const lower = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
  return { ok: status >= 200 && status < 300, status, json: async () => body,
    headers: { get: (name) => lower[name.toLowerCase()] ?? null } };
}

/** Timers under test control: nothing runs until run() / runAll(). */
export function fakeTimers() {
  let next = 1;
  const pending = new Map();
  return {
    pending,
    setTimeout: (fn, ms) => { const id = next++; pending.set(id, { fn, ms }); return id; },
    clearTimeout: (id) => { pending.delete(id); },
    delays() { return [...pending.values()].map((t) => t.ms); },
    /** Run the timers (each once) whose delay is `ms` (or all when ms is undefined). */
    run(ms) {
      for (const [id, t] of [...pending]) {
        if (ms === undefined || t.ms === ms) { pending.delete(id); t.fn(); }
      }
    },
  };
}

/** A fetch answering by path; records every request (path, parsed body, init). */
export function fakeServer(handlers) {
  const calls = [];
  const fetch = async (url, init) => {
    const path = new URL(url).pathname;
    const call = { path, body: JSON.parse(init.body), init };
    calls.push(call);
    const handler = handlers[path];
    if (!handler) return respond(404, { error: { code: 'not_found' } });
    return handler(call);
  };
  return { fetch, calls, bodies: (path) => calls.filter((c) => c.path === path).map((c) => c.body) };
}

/** Capture console.warn while running fn (async ok); returns the messages. */
export async function warnings(fn) {
  const seen = [];
  const original = console.warn;
  console.warn = (...args) => seen.push(args.join(' '));
  try {
    await fn();
  } finally {
    console.warn = original;
  }
  return seen;
}

export const tick = () => new Promise((resolve) => setImmediate(resolve));
