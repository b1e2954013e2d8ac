// Anti-flicker: the classic head snippet (cloak.js), the module's hideUntilDecided, and the
// one timer they share with decide(). Run: node --test sdk/js/test/
import test from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import vm from 'node:vm';
import { Centric, createCloak, isSafeSelector } from '../centric.js';
import { Storage, cloakDocument, respond, fakeServer, fakeTimers, warnings, tick }
  from './helpers.mjs';

const SNIPPET = readFileSync(new URL('../cloak.js', import.meta.url), 'utf8');
const HERO = { experiment: 'hero', variant: 'b', payload: { headline: 'Hi' }, reason: 'assigned',
  decision_id: 'a'.repeat(32) };

/** Run cloak.js as the browser would: a classic script, `currentScript` with data attributes. */
function runSnippet(attributes = {}) {
  const doc = cloakDocument();
  doc.currentScript = { getAttribute: (name) => attributes[name] ?? null };
  const timers = fakeTimers();
  const seen = [];
  const window = { console: { warn: (m) => seen.push(m) } };
  vm.runInNewContext(SNIPPET, { window, document: doc, setTimeout: timers.setTimeout,
    clearTimeout: timers.clearTimeout });
  return { window, doc, timers, seen };
}

function sdk(fetch, extra = {}) {
  return new Centric({ baseUrl: 'http://x', sdkKey: 'k', fetch, document: cloakDocument(),
    storage: new Storage(), ...extra });
}

test('the head snippet hides the data-slots at once and reveals them on its timer', () => {
  const { window, doc, timers } = runSnippet({ 'data-slots': '#headline, .promo', 'data-timeout': '250' });
  const cloak = window.centricCloak.active;
  assert.equal(cloak.state, 'hidden');
  assert.deepEqual([...cloak.selectors], ['#headline, .promo']);
  const [style] = doc.head.children;
  assert.equal(style.attributes['data-centric-cloak'], '');
  assert.deepEqual(style.sheet.cssRules.map((r) => r.cssText),
    ['#headline, .promo{visibility:hidden!important}']);
  assert.deepEqual(timers.delays(), [250]);
  timers.run(250);
  assert.equal(cloak.state, 'timeout');
  assert.equal(doc.head.children.length, 0);
});

test('the head snippet refuses selectors that could inject CSS', () => {
  for (const evil of ['#a{} body{display:none', '#a;}', '@import url(x)', '#a /*', '   ']) {
    const { window, doc, timers, seen } = runSnippet({ 'data-slots': evil });
    assert.equal(window.centricCloak.active, null, evil);
    assert.equal(doc.head.children.length, 0);
    assert.equal(timers.pending.size, 0);
    if (evil.trim()) assert.match(seen[0], /not a valid CSS selector/);
  }
  // insertRule is the second guard: whatever slips past the parser check is still one rule.
  const { window } = runSnippet({});
  const handle = window.centricCloak.hide(['#ok', '[title="x'], 300);
  assert.deepEqual([...handle.selectors], ['#ok']);
});

test('without data-slots the snippet only defines centricCloak.hide (the inline form)', () => {
  const { window, doc, timers } = runSnippet({});
  assert.equal(window.centricCloak.active, null);
  assert.equal(doc.head.children.length, 0);
  const handle = window.centricCloak.hide(['#headline', '.promo'], 400);
  assert.equal(window.centricCloak.active, handle);
  assert.equal(doc.head.children[0].sheet.cssRules.length, 2);
  assert.deepEqual(timers.delays(), [400]);
  const settled = [];
  handle.onSettle((s) => settled.push(s));
  handle.reveal();
  assert.deepEqual(settled, ['revealed']);
  assert.equal(timers.pending.size, 0);
  assert.equal(doc.head.children.length, 0);
});

test('isSafeSelector uses the document parser and never throws', () => {
  const doc = cloakDocument();
  assert.equal(isSafeSelector(doc, '#headline'), true);
  assert.equal(isSafeSelector(doc, '#a{}body{color:red}'), false);
  assert.equal(isSafeSelector(doc, 42), false);
  assert.equal(isSafeSelector(null, '#a'), false);
});

test('hideUntilDecided hides only the selector and goes away', () => {
  const timers = fakeTimers();
  const c = sdk(async () => respond(200, {}), { setTimeout: timers.setTimeout,
    clearTimeout: timers.clearTimeout });
  const cloak = c.hideUntilDecided('#headline', 250);
  const [style] = c.document.head.children;
  assert.deepEqual(style.sheet.cssRules.map((r) => r.cssText),
    ['#headline { visibility: hidden !important; }']);
  assert.deepEqual(timers.delays(), [250]);
  cloak.reveal();
  assert.equal(c.document.head.children.length, 0);
  assert.equal(timers.pending.size, 0);
  const seen = [];
  const bad = createCloak(c.document, '#a{}body{display:none}', 100, timers);
  assert.equal(bad.state, 'revealed');
  assert.equal(c.document.head.children.length, 0);
  assert.equal(timers.pending.size, 0);
  assert.equal(seen.length, 0);
});

test('one timer: decide adopts the page cloak; when it fires, decide falls back at once', async () => {
  const { window, doc, timers } = runSnippet({ 'data-slots': '#headline', 'data-timeout': '300' });
  const server = fakeServer({ '/v1/decide': () => new Promise(() => {}) });  // hangs
  const c = new Centric({ baseUrl: 'http://x', sdkKey: 'k', fetch: server.fetch, document: doc,
    storage: new Storage(), cloak: window.centricCloak.active, timeout: 5000,
    setTimeout: timers.setTimeout, clearTimeout: timers.clearTimeout });
  const pending = c.decide({ experiments: ['hero'] });
  await tick();
  assert.deepEqual(timers.delays(), [300], 'decide started no timer of its own');
  let result = null;
  pending.then((r) => { result = r; });
  await tick();
  assert.equal(result, null);
  timers.run(300);   // the cloak's timer: reveals the defaults AND ends decide
  await tick();
  assert.equal(result.fallback, true);
  assert.equal(result.reason('hero'), 'fallback');
  assert.equal(doc.head.children.length, 0);
  assert.equal(server.calls[0].init.signal.aborted, true);
});

test('decide answering first: the cloak stays until the page has applied it, then lifts', async () => {
  const { window, doc, timers } = runSnippet({ 'data-slots': '#headline', 'data-timeout': '300' });
  const server = fakeServer({ '/v1/decide': ({ body }) => (body.experiments[0] === 'hero'
    ? respond(200, { decisions: [HERO] }) : new Promise(() => {})) });
  const c = new Centric({ baseUrl: 'http://x', sdkKey: 'k', fetch: server.fetch, document: doc,
    storage: new Storage(), cloak: window.centricCloak.active, autoExpose: false,
    setTimeout: timers.setTimeout, clearTimeout: timers.clearTimeout });
  const result = await c.decide({ experiments: ['hero'] });
  assert.equal(result.variant('hero'), 'b');
  assert.equal(doc.head.children.length, 1, 'still hidden while the page applies the result');
  timers.run(0);     // the reveal scheduled after the page's own code
  assert.equal(window.centricCloak.active.state, 'revealed');
  assert.equal(doc.head.children.length, 0);
  assert.equal(timers.pending.size, 0, 'the cloak timer is gone too');
  // A later decide (a lazy slot) has its own timer again.
  c.decide({ experiments: ['later'] });
  await tick();
  assert.deepEqual(timers.delays(), [300]);
});

test('decide({reveal: false}) leaves the reveal to the page (the timer still caps it)', async () => {
  const timers = fakeTimers();
  const c = sdk(async () => respond(200, { decisions: [HERO] }), { autoExpose: false,
    setTimeout: timers.setTimeout, clearTimeout: timers.clearTimeout });
  const cloak = c.hideUntilDecided('#headline', 300);
  const result = await c.decide({ experiments: ['hero'], reveal: false });
  timers.run(0);
  assert.equal(cloak.state, 'hidden');
  result.reveal();
  assert.equal(cloak.state, 'revealed');
});

test('a cloak that timed out before the first decide: that decide shows the defaults', async () => {
  const timers = fakeTimers();
  const server = fakeServer({ '/v1/decide': async () => respond(200, { decisions: [HERO] }) });
  const c = sdk(server.fetch, { setTimeout: timers.setTimeout, clearTimeout: timers.clearTimeout });
  c.hideUntilDecided('#headline', 300);
  timers.run(300);
  const seen = await warnings(async () => {
    const result = await c.decide({ experiments: ['hero'] });
    assert.equal(result.fallback, true);
  });
  assert.equal(server.calls.length, 0);
  assert.match(seen[0], /timed out before decide/);
});

test('module and head cloak together still run on one timer', async () => {
  const { window, doc, timers } = runSnippet({ 'data-slots': '#headline', 'data-timeout': '300' });
  const c = new Centric({ baseUrl: 'http://x', sdkKey: 'k', fetch: () => new Promise(() => {}),
    document: doc, storage: new Storage(), cloak: window.centricCloak.active,
    setTimeout: timers.setTimeout, clearTimeout: timers.clearTimeout });
  const extra = c.hideUntilDecided('.promo');
  assert.deepEqual(timers.delays(), [300]);
  assert.equal(doc.head.children.length, 2);
  timers.run(300);
  assert.equal(extra.state, 'timeout');
  assert.equal(doc.head.children.length, 0);
});

test('the SDK finds the head cloak on globalThis.centricCloak by itself', async () => {
  const { window, timers } = runSnippet({ 'data-slots': '#headline', 'data-timeout': '300' });
  globalThis.centricCloak = window.centricCloak;
  try {
    const c = sdk(() => new Promise(() => {}), { setTimeout: timers.setTimeout,
      clearTimeout: timers.clearTimeout });
    assert.equal(c.pendingCloak, window.centricCloak.active);
  } finally {
    delete globalThis.centricCloak;
  }
});

test('a page cloak that timed out before the SDK even loaded: the first decide falls back', async () => {
  const { window, doc, timers } = runSnippet({ 'data-slots': '#headline', 'data-timeout': '300' });
  timers.run(300);   // the module arrived late: the default headline is on screen already
  const server = fakeServer({ '/v1/decide': async () => respond(200, { decisions: [HERO] }) });
  const c = new Centric({ baseUrl: 'http://x', sdkKey: 'k', fetch: server.fetch, document: doc,
    storage: new Storage(), cloak: window.centricCloak.active });
  await warnings(async () => {
    assert.equal((await c.decide({ experiments: ['hero'] })).fallback, true);
  });
  assert.equal(server.calls.length, 0);
  // Only the first: a later decide (a lazy slot) asks the server.
  assert.equal((await c.decide({ experiments: ['hero'] })).variant('hero'), 'b');
  // An app that wants no part of the page cloak says so.
  const free = new Centric({ baseUrl: 'http://x', sdkKey: 'k', fetch: server.fetch, document: doc,
    storage: new Storage(), cloak: null });
  assert.equal((await free.decide({ experiments: ['hero'] })).variant('hero'), 'b');
});
