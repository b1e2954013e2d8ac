// centric.d.ts declares exactly what centric.js exports (names and kinds), and the Centric
// methods the declarations promise exist. (tsc itself is not needed at test time.)
import test from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as sdk from '../centric.js';

const DTS = readFileSync(new URL('../centric.d.ts', import.meta.url), 'utf8');

test('centric.d.ts declares every export of centric.js, and nothing more', () => {
  const declared = [...DTS.matchAll(/^export (class|function) (\w+)/gm)].map((m) => m[2]);
  assert.deepEqual([...new Set(declared)].sort(), Object.keys(sdk).sort());
  for (const [, kind, name] of DTS.matchAll(/^export (class|function) (\w+)/gm)) {
    assert.equal(typeof sdk[name], 'function', `${kind} ${name}`);
  }
});

test('the Centric methods declared in centric.d.ts exist', () => {
  const body = DTS.slice(DTS.indexOf('export class Centric {'), DTS.indexOf('\n}\n', DTS.indexOf('export class Centric {')));
  const methods = [...body.matchAll(/^ {2}(\w+)\(/gm)].map((m) => m[1]);
  assert.ok(methods.length >= 8, methods.join());
  for (const name of methods) assert.equal(typeof sdk.Centric.prototype[name], 'function', name);
  assert.ok(Object.getOwnPropertyDescriptor(sdk.Centric.prototype, 'visitorId').get);
});
