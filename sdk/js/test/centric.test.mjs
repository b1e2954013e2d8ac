// Unit tests of the browser SDK with fake fetch, document, storage and timers.
// Run: node --test sdk/js/test/
import test from 'node:test';
import assert from 'node:assert/strict';
import { Centric, readCookie, visitorCookie, fallbackDecisions, newId, isValidId }
  from '../centric.js';
import { Storage, fakeDocument, respond, fakeServer, fakeTimers, warnings, tick }
  from './helpers.mjs';

function client(fetch, extra = {}) {
  return new Centric({ baseUrl: 'http://centric.test/', sdkKey: 'csk_x', fetch,
    document: fakeDocument(), storage: new Storage(), ...extra });
}

const HERO = { experiment: 'hero', variant: 'b', payload: { headline: 'Hi' }, reason: 'assigned',
  decision_id: 'a'.repeat(32), propensity: 0.5 };

test('cookie helpers', () => {
  assert.equal(readCookie('a=1; centric_vid=abc%20d; b=2', 'centric_vid'), 'abc d');
  assert.equal(readCookie('', 'centric_vid'), null);
  const text = visitorCookie('v1', { secure: true });
  assert.match(text, /^centric_vid=v1; Path=\/; Max-Age=34560000; SameSite=Lax; Secure$/);
  assert.doesNotMatch(visitorCookie('v1'), /Secure/);
});

test('a malformed cookie reads as absent instead of throwing', () => {
  assert.equal(readCookie('centric_vid=%E0%A4%A', 'centric_vid'), null);
  assert.equal(readCookie('other=%E0%A4%A; centric_vid=ok', 'centric_vid'), 'ok');
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

test('a malformed centric_vid cookie: decide still resolves, with the backup id or a new one', async () => {
  const server = fakeServer({ '/v1/decide': async () => respond(200, { decisions: [HERO] }) });
  const storage = new Storage();
  storage.setItem('centric_vid', 'backup-id-1');
  const doc = fakeDocument('centric_vid=%E0%A4%A');
  const c = new Centric({ baseUrl: 'http://x', sdkKey: 'k', fetch: server.fetch, document: doc,
    storage });
  const result = await c.decide({ experiments: ['hero'] });
  assert.equal(result.variant('hero'), 'b');
  assert.equal(server.bodies('/v1/decide')[0].visitor_id, 'backup-id-1');
  assert.equal(readCookie(doc.cookie, 'centric_vid'), 'backup-id-1');  // the cookie is repaired
  // No backup either: a fresh, valid id.
  const lone = new Centric({ baseUrl: 'http://x', sdkKey: 'k', fetch: server.fetch,
    document: fakeDocument('centric_vid=%E0%A4%A'), storage: new Storage() });
  await lone.decide({ experiments: ['hero'] });
  assert.ok(isValidId(lone.visitorId));
  assert.notEqual(lone.visitorId, 'backup-id-1');
});

test('ids the server would refuse are replaced: control characters, > 256 chars, e-mails', () => {
  for (const bad of ['a\u0001b', 'x'.repeat(257), 'jane@example.com', '']) {
    const storage = new Storage();
    storage.setItem('centric_vid', bad);
    const c = new Centric({ baseUrl: 'http://x', sdkKey: 'k', fetch: async () => respond(200, {}),
      document: fakeDocument(`centric_vid=${encodeURIComponent(bad)}`), storage });
    assert.notEqual(c.visitorId, bad);
    assert.ok(isValidId(c.visitorId));
  }
  assert.ok(isValidId('x'.repeat(256)));
});

test('a document whose cookie getter throws (sandboxed frame) does not break decide', async () => {
  const doc = { get cookie() { throw new Error('SecurityError'); }, set cookie(v) { throw new Error('SecurityError'); } };
  const server = fakeServer({ '/v1/decide': async () => respond(200, { decisions: [HERO] }) });
  const c = new Centric({ baseUrl: 'http://x', sdkKey: 'k', fetch: server.fetch, document: doc,
    storage: new Storage() });
  const result = await c.decide({ experiments: ['hero'] });
  assert.equal(result.variant('hero'), 'b');
});

test('newId without Web Crypto: distinct, not all zeros, UUID-shaped', () => {
  const saved = Object.getOwnPropertyDescriptor(globalThis, 'crypto');
  Object.defineProperty(globalThis, 'crypto', { value: undefined, configurable: true, writable: true });
  try {
    assert.equal(globalThis.crypto, undefined);
    const a = newId();
    const b = newId();
    assert.notEqual(a, b);
    for (const id of [a, b]) {
      assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      assert.notEqual(id.replace(/[-0]/g, ''), '');
      assert.ok(new Set(id.replace(/-/g, '').slice(16)).size > 1, id);  // random tail filled
    }
    // Even a broken Math.random cannot make two ids of one page equal.
    const random = Math.random;
    Math.random = () => 0;
    try {
      assert.notEqual(newId(), newId());
    } finally {
      Math.random = random;
    }
    // getRandomValues without randomUUID (insecure contexts of older browsers): v4 from it.
    Object.defineProperty(globalThis, 'crypto', { value: { getRandomValues: (b) => b.fill(0xab) },
      configurable: true, writable: true });
    assert.match(newId(), /^abababab-abab-4bab-abab-abababababab$/);
  } finally {
    Object.defineProperty(globalThis, 'crypto', saved);
  }
  assert.match(newId(), /^[0-9a-f-]{36}$/);
});

test('decide parses the answer and asks the server not to count the exposure yet', async () => {
  let sent = null;
  const c = client(async (url, init) => {
    sent = { url, body: JSON.parse(init.body), auth: init.headers.Authorization };
    return respond(200, { visitor_id: 'v', persona: 'default', decisions: [HERO] });
  }, { autoExpose: false });
  const r = await c.decide({ experiments: ['hero', 'other'], attributes: { plan: 'pro' } });
  assert.equal(sent.url, 'http://centric.test/v1/decide');
  assert.equal(sent.auth, 'Bearer csk_x');
  assert.deepEqual(sent.body.experiments, ['hero', 'other']);
  assert.equal(sent.body.channel, 'web');
  assert.equal(sent.body.expose, false);
  assert.equal(r.variant('hero'), 'b');
  assert.deepEqual(r.payload('hero'), { headline: 'Hi' });
  assert.equal(r.reason('hero'), 'assigned');
  assert.equal(r.fallback, false);
  assert.equal(r.variant('other'), 'control');
  assert.equal(r.persona, 'default');
});

test('result.variant(key, default): the default when the server gave no decision', async () => {
  const c = client(async () => respond(200, { decisions: [HERO] }), { autoExpose: false,
    defaults: { configured: 'classic' } });
  const r = await c.decide({ experiments: ['hero', 'missing', 'configured'] });
  assert.equal(r.variant('hero', 'x'), 'b');             // the server's decision wins
  assert.equal(r.variant('missing', 'plain'), 'plain');  // the call's default
  assert.equal(r.variant('configured'), 'classic');      // else the configured default
  assert.equal(r.variant('configured', 'plain'), 'plain');
  assert.equal(r.variant('missing'), 'control');
  const down = await client(async () => respond(503, {})).decide({ experiments: ['hero'] });
  assert.equal(down.variant('hero', 'plain'), 'plain');  // on fallback, too
  assert.equal(down.variant('hero'), 'control');
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

test('decide falls back on every non-2xx (4xx too) and tells onError', async () => {
  for (const status of [400, 401, 403, 404, 429, 500, 503]) {
    const errors = [];
    const c = client(async () => respond(status, { error: { code: 'x' } }),
      { onError: (e) => errors.push(e) });
    const seen = await warnings(async () => {
      const r = await c.decide({ experiments: ['hero'] });
      assert.equal(r.fallback, true, `status ${status}`);
      assert.equal(r.variant('hero'), 'control');
    });
    assert.equal(errors.length, 1);
    assert.equal(errors[0].name, 'CentricError');
    assert.equal(errors[0].operation, 'decide');
    assert.equal(errors[0].status, status);
    assert.ok(seen.some((m) => m.includes(String(status))));
  }
  // An onError that throws is contained, and garbage answers fall back too.
  const c = client(async () => respond(200, 'not json'), { onError: () => { throw new Error('app bug'); } });
  assert.equal((await c.decide({ experiments: ['hero'] })).fallback, true);
  assert.equal((await client(async () => respond(200, {})).decide(null)).fallback, false);
});

test('a decide answer arriving after the timeout is ignored and never confirmed', async () => {
  let answer;
  const server = fakeServer({
    // Ignores the abort signal on purpose: the answer does arrive, late.
    '/v1/decide': () => new Promise((resolve) => { answer = () => resolve(respond(200, { decisions: [HERO] })); }),
    '/v1/expose': async () => respond(200, { exposed: 1, duplicates: 0, ignored: 0 }),
  });
  const c = client(server.fetch, { timeout: 20 });
  const result = await c.decide({ experiments: ['hero'] });
  assert.equal(result.fallback, true);
  answer();
  await tick(); await tick();
  assert.equal(result.variant('hero'), 'control');
  assert.equal(result.expose(), 0);
  await c.flush();
  assert.equal(server.bodies('/v1/expose').length, 0);
  assert.equal(c.queue().length, 0);
});

test('real decisions delivered in time are confirmed once, only for what can be shown', async () => {
  const decisions = [HERO,
    { experiment: 'held', variant: 'control', reason: 'holdout', decision_id: 'b'.repeat(32) },
    { experiment: 'again', variant: 'x', reason: 'sticky', decision_id: 'c'.repeat(32) },
    { experiment: 'won', variant: 'w', reason: 'winner', decision_id: 'd'.repeat(32) },
    { experiment: 'nt', variant: 'control', reason: 'not_targeted', decision_id: null }];
  const server = fakeServer({
    '/v1/decide': async () => respond(200, { decisions }),
    '/v1/expose': async () => respond(200, { exposed: 3, duplicates: 0, ignored: 0 }),
  });
  const c = client(server.fetch);
  const result = await c.decide({ experiments: decisions.map((d) => d.experiment) });
  await c.flush();
  const [body] = server.bodies('/v1/expose');
  assert.equal(body.visitor_id, c.visitorId);
  assert.deepEqual(body.decisions, [
    { experiment: 'hero', decision_id: 'a'.repeat(32) },
    { experiment: 'held', decision_id: 'b'.repeat(32) },
    { experiment: 'again', decision_id: 'c'.repeat(32) }]);
  assert.equal(result.expose(), 0);  // already confirmed: not sent twice
  await c.flush();
  assert.equal(server.bodies('/v1/expose').length, 1);
  assert.equal(c.queue().length, 0);
});

test('autoExpose: false lets a lazy page confirm exactly the slots it rendered', async () => {
  const server = fakeServer({
    '/v1/decide': async () => respond(200, { decisions: [HERO,
      { experiment: 'footer', variant: 'x', reason: 'assigned', decision_id: 'e'.repeat(32) }] }),
    '/v1/expose': async () => respond(200, { exposed: 1, duplicates: 0, ignored: 0 }),
  });
  const c = client(server.fetch, { autoExpose: false });
  const result = await c.decide({ experiments: ['hero', 'footer'] });
  await c.flush();
  assert.equal(server.bodies('/v1/expose').length, 0);
  assert.equal(result.expose(['footer']), 1);
  await c.flush();
  assert.deepEqual(server.bodies('/v1/expose')[0].decisions,
    [{ experiment: 'footer', decision_id: 'e'.repeat(32) }]);
  // The per-call switch works the other way round too.
  const auto = client(server.fetch, { autoExpose: false });
  await auto.decide({ experiments: ['hero'], autoExpose: true });
  await auto.flush();
  assert.equal(server.bodies('/v1/expose').length, 2);
});

test('an exposure confirmation waits in the queue and is retried like events', async () => {
  const timers = fakeTimers();
  let up = false;
  const server = fakeServer({
    '/v1/decide': async () => respond(200, { decisions: [HERO] }),
    '/v1/expose': async () => (up ? respond(200, { exposed: 1 }) : respond(503, {})),
    '/v1/track': async () => respond(200, { accepted: 1, duplicates: 0, attributed: [] }),
  });
  const c = client(server.fetch, { setTimeout: timers.setTimeout, clearTimeout: timers.clearTimeout });
  const decided = c.decide({ experiments: ['hero'] });
  await tick(); await tick();
  await decided;
  c.track('purchase', 10);   // tracked after the exposure: must go out after it
  await c.flush();
  assert.deepEqual(c.queue().map((i) => i.kind), ['expose', 'track']);
  up = true;
  timers.run(1000);
  await c.flush();
  assert.equal(c.queue().length, 0);
  const paths = server.calls.map((x) => x.path);
  assert.deepEqual(paths.filter((p, i) => p !== paths[i - 1]),
    ['/v1/decide', '/v1/expose', '/v1/track']);  // the track never overtook the exposure
});

test('fallbackDecisions covers each requested experiment', () => {
  const r = fallbackDecisions('v', ['a', 'b'], { a: 'x' });
  assert.deepEqual(r.decisions.map((d) => [d.experiment, d.variant, d.reason]),
    [['a', 'x', 'fallback'], ['b', 'control', 'fallback']]);
  assert.equal(r.expose(), 0);
});

test('reset starts a new visitor', () => {
  const c = client(async () => respond(200, {}));
  const before = c.visitorId;
  c.reset();
  const after = c.visitorId;
  assert.notEqual(after, before);
  assert.equal(c.storage.getItem('centric_vid'), after);
});
