// The overlay's lane arithmetic, without a browser: comments never overlap
// and are dropped, not stacked, when there is no room.
import assert from "node:assert/strict";
import { test } from "node:test";

import { FIXED_MS, Lanes, SCROLL_MS } from "../src/lib/overlay";

test("a lane takes a second comment only once the first has fully entered", () => {
  const lanes = new Lanes(3, 1000);
  assert.equal(lanes.place("scroll", 200, 0), 0);
  // 200 px at (1000 + 200) / 8 s = 0.15 px/ms: fully on screen after 1333 ms.
  assert.equal(lanes.place("scroll", 200, 500), 1, "lane 0 is still busy");
  assert.equal(lanes.place("scroll", 200, 1400), 0, "lane 0 is free again");
});

test("a long, fast comment waits until it cannot catch the one ahead", () => {
  const lanes = new Lanes(1, 1000);
  assert.equal(lanes.place("scroll", 50, 0), 0);
  // A 900 px comment moves at 1900/8000 px/ms and would reach the left edge
  // (after 1000/0.2375 = 4211 ms) before the first leaves it (8000 ms).
  assert.equal(lanes.place("scroll", 900, 1000), null, "no room: dropped");
  assert.equal(lanes.place("scroll", 900, 4000), 0);
});

test("top and bottom comments hold their lane for their whole time", () => {
  const lanes = new Lanes(2, 1000);
  assert.equal(lanes.place("top", 100, 0), 0);
  assert.equal(lanes.place("top", 100, 10), 1);
  assert.equal(lanes.place("top", 100, 20), null);
  assert.equal(lanes.place("bottom", 100, 20), 0, "bottom lanes are their own");
  assert.equal(lanes.place("top", 100, FIXED_MS), 0);
  assert.ok(SCROLL_MS > FIXED_MS);
});

test("density leaves lanes unused", () => {
  const lanes = new Lanes(4, 1000, 0.5);
  assert.equal(lanes.place("scroll", 100, 0), 0);
  assert.equal(lanes.place("scroll", 100, 0), 1);
  assert.equal(lanes.place("scroll", 100, 0), null, "half of four lanes");
});
