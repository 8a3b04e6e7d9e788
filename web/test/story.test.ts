// The story panel's state, frame by frame, without a browser.
import assert from "node:assert/strict";
import { test } from "node:test";

import { applyStoryFrame, countdown, emptyStory, shares, type StoryFrame } from "../src/lib/story";

const run = (frames: StoryFrame[]) => frames.reduce(applyStoryFrame, emptyStory());

test("a vote opens, counts, takes my vote and closes with its winner", () => {
  const state = run([
    { type: "scene", node: "ask", scene_kind: "live", scene_source: "main", host_lines: ["Red or blue?"] },
    { type: "vote_open", window: 3, options: [{ id: "red", label: "Red" }, { id: "blue", label: "Blue" }], closes_ms: 1000, allow_change: true },
    { type: "vote_tally", window: 3, tallies: [{ option: "red", votes: 2 }, { option: "blue", votes: 5 }], voters: 7 },
    { type: "vote_receipt", window: 3, option: "blue" },
    { type: "vote_closed", window: 3, tallies: [{ option: "red", votes: 2 }, { option: "blue", votes: 6 }], voters: 8, winner: "blue", tie_break: "none" },
  ]);
  assert.equal(state.node, "ask");
  assert.deepEqual(state.hostLines, ["Red or blue?"]);
  assert.deepEqual(state.vote?.options.map((o) => o.votes), [2, 6]);
  assert.equal(state.vote?.voters, 8);
  assert.equal(state.vote?.mine, "blue");
  assert.deepEqual(state.vote?.result, { winner: "blue", tieBreak: "none" });
});

test("the host's answer to the chat is kept until the next one", () => {
  const state = run([
    { type: "scene", node: "qa", scene_kind: "live", scene_source: "main", host_lines: ["Questions?"] },
    { type: "host_line", text: "799 euros.", faq_id: "price", reply_to_user: "ann", reply_to_seq: 4 },
  ]);
  assert.deepEqual(state.answer, { text: "799 euros.", to: "ann" });
  assert.deepEqual(state.hostLines, ["Questions?"]);
});

test("frames of another window are ignored", () => {
  const state = run([
    { type: "vote_open", window: 2, options: [{ id: "a", label: "A" }, { id: "b", label: "B" }], closes_ms: 1 },
    { type: "vote_tally", window: 1, tallies: [{ option: "a", votes: 9 }] },
    { type: "vote_receipt", window: 1, option: "a" },
  ]);
  assert.deepEqual(state.vote?.options.map((o) => o.votes), [0, 0]);
  assert.equal(state.vote?.mine, null);
});

test("a gift goal shows its progress until the next scene", () => {
  let state = run([
    { type: "scene", node: "goal", scene_kind: "clip", scene_source: "a.webm" },
    { type: "story_trigger", window: 4, trigger: "gift_goal", count: 0, target: 1000, closes_ms: 5000 },
    { type: "story_trigger", window: 4, trigger: "gift_goal", count: 350, target: 1000 },
  ]);
  assert.deepEqual(state.trigger, { kind: "gift_goal", count: 350, target: 1000, closesMs: 5000 });
  assert.equal(state.scene, "Clip: a.webm");
  state = applyStoryFrame(state, { type: "scene", node: "next", scene_kind: "live", scene_source: "main" });
  assert.equal(state.trigger, null);
  state = applyStoryFrame(state, { type: "story_status", status: "paused" });
  assert.equal(state.status, "paused");
});

test("shares are whole percentages that add up to 100", () => {
  assert.deepEqual(shares([{ votes: 1 }, { votes: 1 }, { votes: 1 }]), [34, 33, 33]);
  assert.deepEqual(shares([{ votes: 0 }, { votes: 0 }]), [0, 0]);
  assert.deepEqual(shares([{ votes: 2 }, { votes: 6 }]), [25, 75]);
});

test("the countdown is m:ss and stops at zero", () => {
  assert.equal(countdown(95_000, 0), "1:35");
  assert.equal(countdown(1_000, 200), "0:01");
  assert.equal(countdown(0, 5_000), "0:00");
});
