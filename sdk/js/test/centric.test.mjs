// Unit tests of the browser SDK's pure parts, with fake fetch, document and storage.
// Run: node --test sdk/js/test/
import test from 'node:test';
import assert from 'node:assert/strict';
import { Centric, readCookie, visitorCookie, fallbackDecisions } from '../centric.js';

class Storage {
  constructor() { this.items = new Map(); }
  getItem(k) { return this.items.has(k) ? this.items.get(k) : null; }
  setItem(k, v) { this.items.set(k, String(v)); }
  removeItem(k) { this.items.delete(k); }
}

function fakeDocument() {
  const jar = new Map();
  return {
    get cookie() { return [...jar].map(([k, v]) => `${k}=${v}`).join('; '); },
    set cookie(text) {
      const [pair] = text.split(';');
      const [k, v] = pair.split('=');
      jar.set(k.trim(), v);
      this.lastSet = text;
    },
  };
}

function respond(status, body) {
  return { ok: status >= 200 && status < 300, status, json: async () => body };
}

function client(fetch, extra = {}) {
  return new Centric({ baseUrl: 'http://centric.test/', sdkKey: 'csk_x', fetch,
    document: fakeDocument(), storage: new Storage(), ...extra });
}

test('cookie helpers', () => {
  assert.equal(readCookie('a=1; centric_vid=abc%20d; b=2', 'centric_vid'), 'abc d');
  assert.equal(readCookie('', 'centric_vid'), null);
  const text = visitorCookie('v1', { secure: true });
  assert.match(text, /^centric_vid=v1; Path=\/; Max-Age=34560000; SameSite=Lax; Secure$/);
  assert.doesNotMatch(visitorCookie('v1'), /Secure/);
});

test('the visitor id is kept in the cookie and in localStorage as a backup', () => {
  const doc = fakeDocument();
  const storage = new Storage();
  const first = new Centric({ baseUrl: 'http://x', sdkKey: 'k', fetch: async () => respond(200, {}),
    document: doc, storage }).visitorId;
  assert.match(doc.lastSet, /SameSite=Lax/);
  assert.equal(storage.getItem('centric_vid'), first);
  // Cookie cleared: the backup restores the same id (and the cookie).
  const fresh = fakeDocument();
  const again = new Centric({ baseUrl: 'http://x', sdkKey: 'k', fetch: async () => respond(200, {}),
    document: fresh, storage }).visitorId;
  assert.equal(again, first);
  assert.equal(readCookie(fresh.cookie, 'centric_vid'), first);
});

test('decide parses the answer', async () => {
  let sent = null;
  const c = client(async (url, init) => {
    sent = { url, body: JSON.parse(init.body), auth: init.headers.Authorization };
    return respond(200, { visitor_id: 'v', persona: 'default', decisions: [
      { experiment: 'hero', variant: 'b', payload: { headline: 'Hi' }, reason: 'assigned' }] });
  });
  const r = await c.decide({ experiments: ['hero', 'other'], attributes: { plan: 'pro' } });
  assert.equal(sent.url, 'http://centric.test/v1/decide');
  assert.equal(sent.auth, 'Bearer csk_x');
  assert.deepEqual(sent.body.experiments, ['hero', 'other']);
  assert.equal(sent.body.channel, 'web');
  assert.equal(r.variant('hero'), 'b');
  assert.deepEqual(r.payload('hero'), { headline: 'Hi' });
  assert.equal(r.reason('hero'), 'assigned');
  assert.equal(r.fallback, false);
  assert.equal(r.variant('other'), 'control');
});

test('decide falls back to defaults when the server is slow, failing or down', async () => {
  const hanging = client((url, init) => new Promise((resolve, reject) => {
    init.signal.addEventListener('abort', () => reject(new Error('aborted')));
  }), { timeout: 50, defaults: { hero: 'classic' } });
  const started = Date.now();
  const slow = await hanging.decide({ experiments: ['hero', 'banner'] });
  assert.ok(Date.now() - started < 500);
  assert.equal(slow.fallback, true);
  assert.equal(slow.variant('hero'), 'classic');
  assert.equal(slow.variant('banner'), 'control');
  assert.equal(slow.reason('hero'), 'fallback');
  const failing = await client(async () => respond(503, {})).decide({ experiments: ['hero'] });
  assert.equal(failing.reason('hero'), 'fallback');
  const down = await client(async () => { throw new TypeError('failed to fetch'); })
    .decide({ experiments: ['hero'] });
  assert.equal(down.variant('hero'), 'control');
});

test('track queues, retries with the same event id, and forgets what was acknowledged', async () => {
  const timers = [];
  let up = false;
  const bodies = [];
  const c = client(async (url, init) => {
    bodies.push(JSON.parse(init.body));
    assert.equal(init.keepalive, true);
    if (!up) throw new TypeError('offline');
    return respond(200, { accepted: 1, duplicates: 0, attributed: [] });
  }, { setTimeout: (fn, ms) => { timers.push({ fn, ms }); return timers.length; },
       clearTimeout: () => {} });
  const id = c.track('purchase', 49.9);
  await c.flush();
  assert.equal(c.queue().length, 1);
  assert.equal(timers.at(-1).ms, 1000);
  up = true;
  timers.at(-1).fn();
  await c.flush();
  assert.equal(c.queue().length, 0);
  const ids = bodies.map((b) => b.events[0].event_id);
  assert.deepEqual(ids, [id, id]);
  assert.equal(bodies[0].events[0].value, 49.9);
});

test('events refused as malformed are dropped, not retried forever', async () => {
  const c = client(async () => respond(400, { error: { code: 'invalid' } }));
  c.track('Bad Metric');
  await c.flush();
  assert.equal(c.queue().length, 0);
});

test('the anti-flicker style hides only the selector and goes away', () => {
  const added = [];
  const doc = fakeDocument();
  doc.head = { appendChild(el) { added.push(el); el.parentNode = { removeChild() { added.pop(); } }; } };
  doc.createElement = () => ({ setAttribute() {}, textContent: '' });
  const timers = [];
  const c = new Centric({ baseUrl: 'http://x', sdkKey: 'k', fetch: async () => respond(200, {}),
    document: doc, storage: new Storage(), setTimeout: (fn, ms) => timers.push({ fn, ms }),
    clearTimeout: () => {} });
  const cloak = c.hideUntilDecided('#headline', 250);
  assert.equal(added.length, 1);
  assert.equal(added[0].textContent, '#headline { visibility: hidden !important; }');
  assert.equal(timers[0].ms, 250);
  cloak.reveal();
  assert.equal(added.length, 0);
});

test('fallbackDecisions covers each requested experiment', () => {
  const r = fallbackDecisions('v', ['a', 'b'], { a: 'x' });
  assert.deepEqual(r.decisions.map((d) => [d.experiment, d.variant, d.reason]),
    [['a', 'x', 'fallback'], ['b', 'control', 'fallback']]);
});

test('reset starts a new visitor', () => {
  const c = client(async () => respond(200, {}));
  const before = c.visitorId;
  c.reset();
  const after = c.visitorId;
  assert.notEqual(after, before);
  assert.equal(c.storage.getItem('centric_vid'), after);
});
