// The virtual host's avatar as a 2D stick figure, from `avatar_motion`
// frames (VMC bones: positions and rotations local to the parent bone).
// Forward kinematics over the humanoid hierarchy gives world positions;
// a front view draws them. `AvatarPose` is plain data (tested without a
// browser); `AvatarView` draws it on a canvas.

export type Transform = number[]; // px, py, pz, qx, qy, qz, qw

export interface AvatarMotion {
  type: "avatar_motion";
  full?: boolean;
  root?: number[];
  bones?: { name: string; transform: number[] }[];
  blendshapes?: { name: string; value: number }[];
}

/** Each humanoid bone's parent (the first of the candidates that is present). */
const PARENTS: Record<string, string[]> = {
  Spine: ["Hips"],
  Chest: ["Spine"],
  UpperChest: ["Chest"],
  Neck: ["UpperChest", "Chest"],
  Head: ["Neck"],
  LeftShoulder: ["UpperChest", "Chest"],
  LeftUpperArm: ["LeftShoulder"],
  LeftLowerArm: ["LeftUpperArm"],
  LeftHand: ["LeftLowerArm"],
  RightShoulder: ["UpperChest", "Chest"],
  RightUpperArm: ["RightShoulder"],
  RightLowerArm: ["RightUpperArm"],
  RightHand: ["RightLowerArm"],
  LeftUpperLeg: ["Hips"],
  LeftLowerLeg: ["LeftUpperLeg"],
  LeftFoot: ["LeftLowerLeg"],
  RightUpperLeg: ["Hips"],
  RightLowerLeg: ["RightUpperLeg"],
  RightFoot: ["RightLowerLeg"],
};

/** Hips first, then every bone after its parent. */
const ORDER = ["Hips", ...Object.keys(PARENTS)];

export class AvatarPose {
  bones = new Map<string, Transform>();
  blendshapes = new Map<string, number>();
  root: Transform | null = null;

  /** A full frame replaces the pose; a delta updates what it carries. */
  apply(frame: AvatarMotion): void {
    if (frame.full) {
      this.bones.clear();
      this.blendshapes.clear();
    }
    if (frame.root && frame.root.length === 7) this.root = frame.root;
    for (const bone of frame.bones ?? []) if (bone.transform.length === 7) this.bones.set(bone.name, bone.transform);
    for (const blend of frame.blendshapes ?? []) this.blendshapes.set(blend.name, blend.value);
  }

  /** World positions of the bones present, by forward kinematics. */
  world(): Map<string, [number, number, number]> {
    const world = new Map<string, { p: number[]; q: number[] }>();
    const origin = this.root ?? [0, 0, 0, 0, 0, 0, 1];
    for (const name of ORDER) {
      const local = this.bones.get(name);
      if (!local) continue;
      const parent = name === "Hips" ? { p: origin.slice(0, 3), q: origin.slice(3) } : (PARENTS[name] ?? []).map((p) => world.get(p)).find((w) => w);
      if (!parent) continue;
      const offset = rotate(parent.q, local.slice(0, 3));
      world.set(name, {
        p: [parent.p[0] + offset[0], parent.p[1] + offset[1], parent.p[2] + offset[2]],
        q: multiply(parent.q, local.slice(3)),
      });
    }
    return new Map([...world].map(([name, w]) => [name, [w.p[0], w.p[1], w.p[2]] as [number, number, number]]));
  }

  /** Parent-child pairs to draw, among the bones present. */
  segments(): [string, string][] {
    const world = this.world();
    const pairs: [string, string][] = [];
    for (const [child, parents] of Object.entries(PARENTS)) {
      const parent = parents.find((p) => world.has(p));
      if (parent && world.has(child)) pairs.push([parent, child]);
    }
    return pairs;
  }
}

/** Hamilton product a·b of quaternions [x, y, z, w]. */
export function multiply(a: number[], b: number[]): number[] {
  const [ax, ay, az, aw] = a;
  const [bx, by, bz, bw] = b;
  return [
    aw * bx + ax * bw + ay * bz - az * by,
    aw * by - ax * bz + ay * bw + az * bx,
    aw * bz + ax * by - ay * bx + az * bw,
    aw * bw - ax * bx - ay * by - az * bz,
  ];
}

/** `v` rotated by the unit quaternion `q`. */
export function rotate(q: number[], v: number[]): number[] {
  const [x, y, z, w] = q;
  const conj = [-x, -y, -z, w];
  const r = multiply(multiply(q, [v[0], v[1], v[2], 0]), conj);
  return [r[0], r[1], r[2]];
}

/** Draws the pose (front view, fitted to the canvas) and its mouth. */
export class AvatarView {
  readonly pose = new AvatarPose();

  constructor(private readonly canvas: HTMLCanvasElement) {}

  apply(frame: AvatarMotion): void {
    this.pose.apply(frame);
    this.canvas.classList.remove("hidden");
    this.canvas.dataset.bones = String(this.pose.bones.size);
    this.draw();
  }

  private draw(): void {
    const ctx = this.canvas.getContext("2d");
    if (!ctx) return;
    const { width, height } = this.canvas;
    ctx.clearRect(0, 0, width, height);
    const world = this.pose.world();
    if (world.size === 0) return;
    const xs = [...world.values()].map((p) => p[0]);
    const ys = [...world.values()].map((p) => p[1]);
    const span = Math.max(Math.max(...xs) - Math.min(...xs), Math.max(...ys) - Math.min(...ys), 0.5);
    const scale = (0.8 * Math.min(width, height)) / span;
    const cx = (Math.max(...xs) + Math.min(...xs)) / 2;
    const cy = (Math.max(...ys) + Math.min(...ys)) / 2;
    const at = (p: [number, number, number]): [number, number] => [width / 2 + (p[0] - cx) * scale, height / 2 - (p[1] - cy) * scale];
    ctx.strokeStyle = "#8cf";
    ctx.lineWidth = 4;
    ctx.lineCap = "round";
    for (const [a, b] of this.pose.segments()) {
      const [ax, ay] = at(world.get(a)!);
      const [bx, by] = at(world.get(b)!);
      ctx.beginPath();
      ctx.moveTo(ax, ay);
      ctx.lineTo(bx, by);
      ctx.stroke();
    }
    const head = world.get("Head");
    if (head) {
      const [hx, hy] = at(head);
      const r = 0.12 * scale;
      ctx.beginPath();
      ctx.arc(hx, hy - r, r, 0, 2 * Math.PI);
      ctx.stroke();
      // The mouth opens with the "A" blendshape (VRM's viseme).
      const open = Math.min(1, Math.max(0, this.pose.blendshapes.get("A") ?? 0));
      ctx.beginPath();
      ctx.ellipse(hx, hy - r * 0.6, r * 0.35, 1 + r * 0.3 * open, 0, 0, 2 * Math.PI);
      ctx.stroke();
    }
  }
}
