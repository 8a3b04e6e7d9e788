// The avatar's forward kinematics and frame merging, without a browser.
import assert from "node:assert/strict";
import { test } from "node:test";

import { AvatarPose, rotate } from "../src/lib/avatar";

const close = (a: number[], b: number[]) => a.every((v, i) => Math.abs(v - b[i]) < 1e-6);
// A quarter turn about z.
const QUARTER_Z = [0, 0, Math.SQRT1_2, Math.SQRT1_2];

test("a quarter turn about z takes x to y", () => {
  assert.ok(close(rotate(QUARTER_Z, [1, 0, 0]), [0, 1, 0]));
});

test("a child sits at its parent's position plus its offset, turned by the parent", () => {
  const pose = new AvatarPose();
  pose.apply({
    type: "avatar_motion",
    full: true,
    bones: [
      { name: "Hips", transform: [0, 1, 0, ...QUARTER_Z] },
      { name: "Spine", transform: [0, 0.1, 0, 0, 0, 0, 1] },
      { name: "Chest", transform: [0, 0.2, 0, 0, 0, 0, 1] },
    ],
  });
  const world = pose.world();
  assert.ok(close(world.get("Hips")!, [0, 1, 0]));
  assert.ok(close(world.get("Spine")!, [-0.1, 1, 0]), `${world.get("Spine")}`);
  assert.ok(close(world.get("Chest")!, [-0.3, 1, 0]), `${world.get("Chest")}`);
  assert.deepEqual(pose.segments(), [["Hips", "Spine"], ["Spine", "Chest"]]);
});

test("deltas update, a full frame replaces, malformed bones are skipped", () => {
  const pose = new AvatarPose();
  pose.apply({ type: "avatar_motion", full: true, bones: [{ name: "Hips", transform: [0, 1, 0, 0, 0, 0, 1] }, { name: "Head", transform: [0, 2, 0, 0, 0, 0, 1] }] });
  pose.apply({ type: "avatar_motion", bones: [{ name: "Head", transform: [0, 3, 0, 0, 0, 0, 1] }, { name: "Bad", transform: [1, 2] }] });
  assert.equal(pose.bones.size, 2);
  assert.equal(pose.bones.get("Head")![1], 3);
  pose.apply({ type: "avatar_motion", full: true, bones: [{ name: "Hips", transform: [0, 1, 0, 0, 0, 0, 1] }] });
  assert.equal(pose.bones.size, 1);
  assert.equal(pose.world().has("Head"), false, "a bone without its chain is not placed");
});
