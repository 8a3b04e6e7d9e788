// The danmaku overlay: comments fly over the video Bilibili-style, in
// lanes, never overlapping. The lane choice is plain arithmetic (no DOM,
// testable); the DOM part only measures, places and animates.
//
// A scrolling comment of width w crosses a screen of width W in D ms, so
// its speed is (W + w) / D: longer comments move faster. A lane takes a new
// comment when the last one there has fully entered the screen and the new
// one, however fast, cannot catch it before it leaves.

export type Mode = "scroll" | "top" | "bottom";

/** How long a comment stays on screen. */
export const SCROLL_MS = 8000;
export const FIXED_MS = 4000;

interface Flight {
  start: number;
  width: number;
  until: number;
}

export class Lanes {
  private scroll: (Flight | null)[];
  private top: (Flight | null)[];
  private bottom: (Flight | null)[];

  /** `count` lanes over the video's height; `density` (0..1] of them used. */
  constructor(
    count: number,
    private screenWidth: number,
    private density = 1,
  ) {
    this.scroll = new Array(count).fill(null);
    this.top = new Array(count).fill(null);
    this.bottom = new Array(count).fill(null);
  }

  resize(count: number, screenWidth: number): void {
    this.screenWidth = screenWidth;
    for (const lanes of [this.scroll, this.top, this.bottom]) lanes.length = count;
    for (const lanes of [this.scroll, this.top, this.bottom]) lanes.fill(null, 0, count);
  }

  setDensity(density: number): void {
    this.density = Math.min(1, Math.max(0.1, density));
  }

  private usable(): number {
    return Math.max(1, Math.floor(this.scroll.length * this.density));
  }

  /** The lane for a comment of `width` px at `now` ms, or null: no room
   * (at this density the comment is dropped, as on Bilibili). */
  place(mode: Mode, width: number, now: number): number | null {
    const lanes = mode === "scroll" ? this.scroll : mode === "top" ? this.top : this.bottom;
    for (let lane = 0; lane < this.usable(); lane++) {
      const last = lanes[lane];
      if (last && !this.free(mode, last, width, now)) continue;
      const until = now + (mode === "scroll" ? SCROLL_MS : FIXED_MS);
      lanes[lane] = { start: now, width, until };
      return lane;
    }
    return null;
  }

  private free(mode: Mode, last: Flight, width: number, now: number): boolean {
    if (now >= last.until) return true;
    if (mode !== "scroll") return false;
    const w = this.screenWidth;
    const lastSpeed = (w + last.width) / SCROLL_MS;
    const entered = now - last.start >= last.width / lastSpeed;
    // The new comment's head reaches the left edge no sooner than the last
    // one's tail leaves it.
    const newSpeed = (w + width) / SCROLL_MS;
    const noCatch = now + w / newSpeed >= last.until;
    return entered && noCatch;
  }
}

export interface Shown {
  text: string;
  mode?: Mode;
  color?: number;
  mine?: boolean;
}

/** Draws comments over a video; `enabled` and density are the viewer's. */
export class Overlay {
  private lanes: Lanes;
  private laneHeight = 28;
  enabled = true;

  constructor(private readonly layer: HTMLElement) {
    this.lanes = new Lanes(1, 1);
    this.fit();
    new ResizeObserver(() => this.fit()).observe(layer);
  }

  private fit(): void {
    const { width, height } = this.layer.getBoundingClientRect();
    this.laneHeight = Math.max(20, Math.round(height / 12));
    this.lanes.resize(Math.max(1, Math.floor(height / this.laneHeight) - 1), Math.max(1, width));
  }

  setDensity(density: number): void {
    this.lanes.setDensity(density);
  }

  /** Puts a comment on screen; returns its element, or null when it is
   * not shown (overlay off, or no free lane at this density). */
  show(comment: Shown): HTMLElement | null {
    if (!this.enabled) return null;
    const mode = comment.mode ?? "scroll";
    const span = document.createElement("span");
    span.className = "danmaku" + (comment.mine ? " mine" : "");
    span.textContent = comment.text;
    span.style.color = "#" + (comment.color ?? 0xffffff).toString(16).padStart(6, "0");
    span.style.fontSize = `${Math.round(this.laneHeight * 0.8)}px`;
    span.style.visibility = "hidden";
    this.layer.append(span);
    const width = span.getBoundingClientRect().width;
    const lane = this.lanes.place(mode, width, performance.now());
    if (lane === null) {
      span.remove();
      return null;
    }
    const screen = this.layer.getBoundingClientRect().width;
    span.style.visibility = "visible";
    if (mode === "scroll") {
      span.style.top = `${lane * this.laneHeight}px`;
      span.style.left = "0";
      span.animate(
        [{ transform: `translateX(${screen}px)` }, { transform: `translateX(${-width}px)` }],
        { duration: SCROLL_MS, easing: "linear" },
      ).onfinish = () => span.remove();
    } else {
      span.style.left = `${Math.max(0, (screen - width) / 2)}px`;
      if (mode === "top") span.style.top = `${lane * this.laneHeight}px`;
      else span.style.bottom = `${lane * this.laneHeight}px`;
      setTimeout(() => span.remove(), FIXED_MS);
    }
    span.dataset.lane = String(lane);
    return span;
  }

  clear(): void {
    this.layer.replaceChildren();
    this.fit();
  }
}
