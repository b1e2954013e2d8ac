// The queue behind track, identify and expose: persistence, validation, age, timeouts,
// Retry-After, 4xx handling, partial batches, a full localStorage. Run: node --test sdk/js/test/
import test from 'node:test';
import assert from 'node:assert/strict';
import { Centric, parseRetryAfter } from '../centric.js';
import { Storage, FullStorage, fakeDocument, respond, fakeServer, fakeTimers, warnings }
  from './helpers.mjs';

const OK_TRACK = () => respond(200, { accepted: 1, duplicates: 0, attributed: [] });

function client(fetch, extra = {}) {
  return new Centric({ baseUrl: 'http://centric.test/', sdkKey: 'csk_x', fetch,
    document: fakeDocument(), storage: new Storage(), ...extra });
}

function withTimers(fetch, extra = {}) {
  const timers = fakeTimers();
  const c = client(fetch, { setTimeout: timers.setTimeout, clearTimeout: timers.clearTimeout,
    ...extra });
  return { c, timers };
}

test('track queues, retries with the same event id, and forgets what was acknowledged', async () => {
  let up = false;
  const bodies = [];
  const { c, timers } = withTimers(async (url, init) => {
    bodies.push(JSON.parse(init.body));
    assert.equal(init.keepalive, true);
    if (!up) throw new TypeError('offline');
    return OK_TRACK();
  });
  const id = c.track('purchase', 49.9);
  await c.flush();
  assert.equal(c.queue().length, 1);
  assert.deepEqual(timers.delays().filter((ms) => ms !== 10000), [1000]);
  up = true;
  timers.run(1000);
  await c.flush();
  assert.equal(c.queue().length, 0);
  const ids = bodies.map((b) => b.events[0].event_id);
  assert.deepEqual(ids, [id, id]);
  assert.equal(bodies[0].events[0].value, 49.9);
});

test('each event carries its age by the device clock, never a timestamp', async (t) => {
  let now = 1_000_000_000_000;
  t.mock.method(Date, 'now', () => now);
  const server = fakeServer({ '/v1/track': async () => OK_TRACK() });
  const storage = new Storage();
  // An event queued by an older SDK (with `timestamp`) 90 s ago is sent with its age too.
  storage.setItem('centric_queue', JSON.stringify([{ visitor_id: 'v-old', metric: 'signup',
    event_id: 'old-1', timestamp: (now - 90_000) / 1000 }]));
  const { c } = withTimers(async () => { throw new TypeError('offline'); }, { storage });
  await c.flush();
  c.track('purchase', 5, { eventId: 'order-1' });
  await c.flush();
  now += 12_345;  // 12.345 s later, by the same (maybe wrong) clock
  c.fetch = server.fetch;
  await c.flush();
  const [body] = server.bodies('/v1/track');
  assert.deepEqual(body.events.map((e) => [e.event_id, e.age, 'timestamp' in e]),
    [['old-1', 102.345, false], ['order-1', 12.345, false]]);
  // A clock set back after queueing never yields a negative age.
  c.track('purchase', 1, { eventId: 'order-2' });
  now -= 60_000;
  c.fetch = server.fetch;
  await c.flush();
  assert.equal(server.bodies('/v1/track').at(-1).events[0].age, 0);
});

test('events older than the 30 days the server accepts are dropped, not retried forever', async (t) => {
  let now = 2_000_000_000_000;
  t.mock.method(Date, 'now', () => now);
  const server = fakeServer({ '/v1/track': async () => OK_TRACK() });
  const storage = new Storage();
  storage.setItem('centric_queue', JSON.stringify([
    { kind: 'track', id: 'e-old', created: now - 31 * 86400_000,
      event: { visitor_id: 'v', metric: 'purchase', event_id: 'e-old' } },
    { kind: 'track', id: 'e-new', created: now - 1000,
      event: { visitor_id: 'v', metric: 'purchase', event_id: 'e-new' } }]));
  const c = client(server.fetch, { storage });
  await warnings(() => c.flush());
  assert.deepEqual(server.bodies('/v1/track')[0].events.map((e) => e.event_id), ['e-new']);
  assert.equal(c.queue().length, 0);
});

test('an invalid event is dropped alone, with a warning; the valid ones go out', async () => {
  const server = fakeServer({ '/v1/track': async () => OK_TRACK() });
  const errors = [];
  const c = client(server.fetch, { onError: (e) => errors.push(e) });
  let ids;
  const seen = await warnings(async () => {
    ids = [
      c.track('purchase', 10),
      c.track('Bad Metric'),
      c.track('purchase', Number.NaN),
      c.track('purchase', Infinity),
      c.track('purchase', '12'),
      c.track('purchase', 2e12),
      c.track('purchase', 1, { eventId: 'has space' }),
      c.track('purchase', 1, { eventId: 'x'.repeat(129) }),
      c.track('signup', null, { eventId: 'order_7:a.b-c' }),
    ];
    await c.flush();
  });
  assert.equal(ids.filter((id) => id === null).length, 7);
  assert.equal(seen.length, 7);
  assert.match(seen[0], /metric/);
  assert.match(seen[1], /value must be a finite number/);
  assert.match(seen[5], /event_id/);
  assert.equal(errors.length, 7);
  const sent = server.bodies('/v1/track').flatMap((b) => b.events.map((e) => e.event_id));
  assert.deepEqual(sent, [ids[0], 'order_7:a.b-c']);
});

test('invalid events already in the queue (older SDK) do not sink the batch', async () => {
  const storage = new Storage();
  storage.setItem('centric_queue', JSON.stringify([
    { visitor_id: 'v', metric: 'Bad Metric', event_id: 'e1', timestamp: Date.now() / 1000 },
    { visitor_id: 'v', metric: 'purchase', event_id: 'e2', timestamp: Date.now() / 1000 },
    'garbage', null]));
  const server = fakeServer({ '/v1/track': async () => OK_TRACK() });
  const c = client(server.fetch, { storage });
  await warnings(() => c.flush());
  assert.deepEqual(server.bodies('/v1/track').map((b) => b.events.map((e) => e.event_id)), [['e2']]);
  assert.equal(c.queue().length, 0);
});

test('a partial answer (200 with rejected) drops the rejected events, retries nothing', async () => {
  const { c, timers } = withTimers(fakeServer({
    // The server rejects event "b" wherever it sits in the batch.
    '/v1/track': async ({ body }) => {
      const index = body.events.findIndex((e) => e.event_id === 'b');
      const rejected = index < 0 ? [] : [{ index, fields: { value: 'must be >= 0' } }];
      return respond(200, { accepted: body.events.length - rejected.length, duplicates: 0,
        attributed: [], rejected });
    },
  }).fetch);
  c.track('purchase', 10, { eventId: 'a' });
  c.track('purchase', 20, { eventId: 'b' });
  c.track('purchase', 30, { eventId: 'c' });
  const seen = await warnings(() => c.flush());
  assert.equal(c.queue().length, 0);
  assert.ok(seen.some((m) => m.includes('"b"') && m.includes('must be >= 0')), seen.join('\n'));
  assert.deepEqual(timers.delays().filter((ms) => ms !== 10000 && ms !== 0), []);  // no retry
});

test('4xx answers other than 429 drop the request with a warning; 429 and 5xx retry', async () => {
  for (const status of [400, 401, 403, 404, 413]) {
    const { c, timers } = withTimers(async () => respond(status, { error: { code: 'nope' } }));
    c.track('purchase', 1);
    const seen = await warnings(() => c.flush());
    assert.equal(c.queue().length, 0, `status ${status}`);
    assert.ok(seen.some((m) => m.includes(String(status))));
    assert.equal(timers.pending.size, 0);
  }
  for (const status of [408, 429, 500, 502, 503]) {
    const { c, timers } = withTimers(async () => respond(status, {}));
    c.track('purchase', 1);
    await c.flush();
    assert.equal(c.queue().length, 1, `status ${status}`);
    assert.deepEqual(timers.delays(), [1000]);
  }
});

test('Retry-After (seconds) on 429/503 sets the retry delay', async () => {
  for (const [status, header, ms] of [[503, '7', 7000], [429, '120', 120000], [503, null, 1000]]) {
    const headers = header ? { 'Retry-After': header } : {};
    let answers = 0;
    const { c, timers } = withTimers(async () => {
      answers += 1;
      return answers === 1 ? respond(status, { error: { code: 'busy' } }, headers) : OK_TRACK();
    });
    c.track('purchase', 1);
    await c.flush();
    assert.deepEqual(timers.delays(), [ms], `${status} ${header}`);
    // New events do not jump the server's wait: they join the queue.
    c.track('purchase', 2);
    await Promise.resolve();
    assert.equal(answers, 1);
    timers.run(ms);
    await c.flush();
    assert.equal(c.queue().length, 0);
    assert.equal(answers, 2);
  }
  assert.equal(parseRetryAfter('30'), 30);
  assert.equal(parseRetryAfter(null), null);
  assert.equal(parseRetryAfter('soon'), null);
  assert.equal(parseRetryAfter('Wed, 21 Oct 2015 07:28:10 GMT', Date.parse('Wed, 21 Oct 2015 07:28:00 GMT')), 10);
});

test('a hung request times out instead of blocking every later flush', async () => {
  let hang = true;
  const calls = [];
  const c = client(async (url, init) => {
    calls.push(new URL(url).pathname);
    if (hang) return new Promise(() => {});  // never answers, even ignores the abort
    return OK_TRACK();
  }, { requestTimeout: 30, retryBase: 20 });
  c.track('purchase', 1);
  const started = Date.now();
  assert.equal(await c.flush(), false);
  assert.ok(Date.now() - started < 1000);
  hang = false;
  await new Promise((resolve) => setTimeout(resolve, 60));  // the retry (20 ms) runs
  await c.flush();
  assert.equal(c.queue().length, 0);
  assert.ok(calls.length >= 2);
});

test('identify and expose requests have the timeout too', async () => {
  const signals = {};
  const hung = async (url, init) => {
    const path = new URL(url).pathname;
    signals[path] = init.signal;
    if (path === '/v1/decide') {
      return respond(200, { decisions: [{ experiment: 'hero', variant: 'b', reason: 'assigned',
        decision_id: 'f'.repeat(32) }] });
    }
    return new Promise(() => {});  // never answers
  };
  const started = Date.now();
  const c = client(hung, { requestTimeout: 25 });
  assert.equal(await c.identify({ customer_id: '42' }), null);
  assert.ok(Date.now() - started < 1000);
  assert.equal(signals['/v1/identify'].aborted, true);
  assert.equal(c.queue()[0].kind, 'identify');  // still queued for a retry
  const d = client(hung, { requestTimeout: 25 });
  await d.decide({ experiments: ['hero'] });
  assert.equal(await d.flush(), false);
  assert.equal(signals['/v1/expose'].aborted, true);
  assert.equal(d.queue()[0].kind, 'expose');
  assert.ok(Date.now() - started < 1000);
});

test('a full localStorage: track never throws, the queue lives in memory and is sent', async () => {
  const server = fakeServer({ '/v1/track': async () => OK_TRACK() });
  const storage = new FullStorage();
  storage.items.set('centric_queue', JSON.stringify([{ kind: 'track', id: 'left', created: Date.now(),
    event: { visitor_id: 'v', metric: 'purchase', event_id: 'left' } }]));
  storage.items.set('centric_vid', 'v-kept');
  const down = { fetch: async () => { throw new TypeError('offline'); } };
  const c = new Centric({ baseUrl: 'http://x', sdkKey: 'k', fetch: (...a) => down.fetch(...a),
    document: fakeDocument(), storage, retryBase: 100000 });
  let id;
  const seen = await warnings(async () => {
    id = c.track('purchase', 3);
    await c.flush();
  });
  assert.ok(id);
  assert.equal(c.visitorId, 'v-kept');  // read from the full storage: reads still work
  assert.ok(seen.some((m) => m.includes('memory')));
  assert.deepEqual(c.queue().map((i) => i.id), ['left', id]);  // the earlier page's event too
  down.fetch = server.fetch;
  clearTimeout(c.retryTimer);
  c.retryTimer = null;
  await c.flush();
  assert.deepEqual(server.bodies('/v1/track')[0].events.map((e) => e.event_id), ['left', id]);
  assert.equal(c.queue().length, 0);
});

test('identify is queued and persisted while offline, then retried with backoff', async () => {
  const storage = new Storage();
  const timers = fakeTimers();
  let up = false;
  const server = fakeServer({
    '/v1/identify': async ({ body }) => respond(200, { visitor_id: body.visitor_id }),
  });
  const fetch = async (url, init) => {
    if (!up) throw new TypeError('offline');
    return server.fetch(url, init);
  };
  const c = new Centric({ baseUrl: 'http://x', sdkKey: 'k', fetch, document: fakeDocument(),
    storage, setTimeout: timers.setTimeout, clearTimeout: timers.clearTimeout });
  assert.equal(await c.identify({ customer_id: '42' }, { plan: 'pro' }), null);  // not delivered yet
  const queued = JSON.parse(storage.getItem('centric_queue'));
  assert.equal(queued.length, 1);
  assert.equal(queued[0].kind, 'identify');
  assert.deepEqual(timers.delays(), [1000]);
  // The page is left before the retry: the next page sends it.
  up = true;
  const next = new Centric({ baseUrl: 'http://x', sdkKey: 'k', fetch, document: fakeDocument(),
    storage, setTimeout: timers.setTimeout, clearTimeout: timers.clearTimeout });
  await next.flush();
  const [body] = server.bodies('/v1/identify');
  assert.deepEqual(body, { visitor_id: c.visitorId, ids: { customer_id: '42' },
    attributes: { plan: 'pro' } });
  assert.equal(next.queue().length, 0);
});

test('identify with a signature; resolves to the id to keep, and the SDK adopts it', async () => {
  const server = fakeServer({
    '/v1/identify': async () => respond(200, { visitor_id: 'canonical-7' }),
  });
  const c = client(server.fetch);
  const before = c.visitorId;
  const sig = 'AB'.repeat(32);
  assert.equal(await c.identify({ customer_id: '42' }, { signature: sig, attributes: { tier: 'gold' } }),
    'canonical-7');
  assert.deepEqual(server.bodies('/v1/identify')[0], { visitor_id: before,
    ids: { customer_id: '42' }, attributes: { tier: 'gold' }, signature: 'ab'.repeat(32) });
  assert.equal(c.visitorId, 'canonical-7');
  assert.equal(c.storage.getItem('centric_vid'), 'canonical-7');
  // The older two-argument form still sends attributes; a signature-only options object too.
  await c.identify({ customer_id: '43' }, { plan: 'pro' });
  assert.deepEqual(server.bodies('/v1/identify')[1].attributes, { plan: 'pro' });
  await c.identify({ customer_id: '44' }, { signature: 'c'.repeat(64) });
  assert.equal(server.bodies('/v1/identify')[2].signature, 'c'.repeat(64));
  assert.equal(server.bodies('/v1/identify')[2].attributes, undefined);
});

test('identify refused (403 bad signature) resolves null, is dropped, not retried', async () => {
  const { c, timers } = withTimers(async () => respond(403, { error: { code: 'forbidden',
    fields: { signature: 'invalid' } } }));
  const errors = [];
  c.onError = (e) => errors.push(e);
  const seen = await warnings(async () => {
    assert.equal(await c.identify({ customer_id: '42' }, { signature: 'd'.repeat(64) }), null);
  });
  assert.equal(c.queue().length, 0);
  assert.equal(timers.pending.size, 0);
  assert.ok(seen.some((m) => m.includes('403') && m.includes('signature')));
  assert.equal(errors[0].operation, 'identify');
  assert.equal(errors[0].status, 403);
  // Malformed calls never leave the page.
  await warnings(async () => {
    assert.equal(await c.identify({}), null);
    assert.equal(await c.identify({ customer_id: '' }), null);
    assert.equal(await c.identify({ customer_id: '1' }, { signature: 'xyz' }), null);
  });
  assert.equal(c.queue().length, 0);
});

test('after reset() a late identify answer does not bring the old visitor back', async () => {
  let release;
  const c = client((url, init) => new Promise((resolve) => {
    release = () => resolve(respond(200, { visitor_id: 'canonical-9' }));
  }));
  const pending = c.identify({ customer_id: '42' });
  c.reset();
  const fresh = c.visitorId;
  release();
  assert.equal(await pending, 'canonical-9');
  assert.equal(c.visitorId, fresh);
});

test('identify sends a bound signature with its expiry, and refuses a malformed expiry', async () => {
  const server = fakeServer({
    '/v1/identify': async () => respond(200, { visitor_id: 'v-1' }),
  });
  const c = client(server.fetch);
  await c.identify({ customer_id: '42' }, { signature: 'e'.repeat(64), signatureExpires: 1800000000 });
  assert.equal(server.bodies('/v1/identify')[0].signature_expires, 1800000000);
  assert.equal(await c.identify({ customer_id: '42' }, { signature: 'e'.repeat(64), signatureExpires: 'soon' }),
    null);
  assert.equal(server.bodies('/v1/identify').length, 1);
});

test('only decisions the server marks pending are confirmed; a confirmed sticky one is not', async () => {
  const server = fakeServer({
    '/v1/decide': async () => respond(200, { visitor_id: 'v', persona: 'default', decisions: [
      { experiment: 'a', variant: 'b', payload: null, decision_id: 'a'.repeat(32), propensity: 0.5,
        reason: 'sticky', pending: false },
      { experiment: 'b', variant: 'b', payload: null, decision_id: 'b'.repeat(32), propensity: 0.5,
        reason: 'sticky', pending: true },
      { experiment: 'c', variant: 'b', payload: null, decision_id: 'c'.repeat(32), propensity: 0.5,
        reason: 'assigned', pending: true },
    ] }),
    '/v1/expose': async () => respond(200, { exposed: 2, duplicates: 0, ignored: 0 }),
  });
  const c = client(server.fetch);
  await c.decide({ experiments: ['a', 'b', 'c'] });
  await c.flush();
  const sent = server.bodies('/v1/expose').flatMap((b) => b.decisions.map((d) => d.experiment));
  assert.deepEqual(sent.sort(), ['b', 'c']);
});
