// Recordings: the room's VOD list, playback with hls.js, and danmaku
// replayed in sync with the playhead (seek included): each comment shows
// when the playhead passes its `offset_ms`; so does each frame of the
// virtual host's motion, drawn as it was live.

import Hls from "hls.js";

import { api, explain } from "../lib/api";
import { AvatarView, type AvatarMotion } from "../lib/avatar";
import { Overlay } from "../lib/overlay";
import type { Danmaku } from "../lib/room";
import { SIGNIN_HTML, signedIn } from "../lib/signin";
import { $, param, say } from "../lib/ui";

interface Vod {
  id: string;
  status: string;
  started_at_ms: number;
  duration_ms: number;
  playlist_url: string;
  danmaku_segments: number;
}

type Replayed = Danmaku & { offset_ms: number };
type ReplayedMotion = Omit<AvatarMotion, "type"> & { offset_ms: number };

$("signin").innerHTML = SIGNIN_HTML;
const session = await signedIn(["subscribe"], param("room") ?? "demo");
const room = param("room") ?? session.claims.room;
$("app").classList.remove("hidden");
$("room").textContent = room;

const video = $<HTMLVideoElement>("video");
const overlay = new Overlay($("overlay"));
let hls: Hls | null = null;
let current: Vod | null = null;
/** Danmaku of the recording by 6-minute segment, fetched as needed. */
const segments = new Map<number, Promise<Replayed[]>>();
/** The playhead (ms) up to which danmaku were shown. */
let shownUntil = 0;
const avatar = new AvatarView($<HTMLCanvasElement>("avatar"));
/** Motion of the recording by 1-minute segment, fetched as needed. */
const motionSegments = new Map<number, Promise<ReplayedMotion[]>>();
/** The playhead (ms) up to which motion was applied. */
let movedUntil = 0;

try {
  const { items } = await api<{ items: Vod[] }>(`/v1/vod?room=${encodeURIComponent(room)}`, { token: session.token });
  if (items.length === 0) say("No recordings in this room yet.");
  $("list").replaceChildren(...items.map(row));
  const wanted = param("vod");
  const first = items.find((v) => v.id === wanted) ?? (wanted ? undefined : items[0]);
  if (first) open(first);
} catch (error) {
  say(explain(error), "error");
}

function row(vod: Vod): HTMLTableRowElement {
  const tr = document.createElement("tr");
  const play = document.createElement("button");
  play.type = "button";
  const started = new Date(vod.started_at_ms).toLocaleString();
  play.textContent = vod.status === "ready" ? "Play" : "Play (live)";
  play.setAttribute("aria-label", `Play the recording of ${started}`);
  play.dataset.vod = vod.id;
  play.onclick = () => open(vod);
  const action = document.createElement("td");
  action.append(play);
  tr.append(cell(started), cell(`${Math.round(vod.duration_ms / 1000)} s`), action);
  return tr;
}

function cell(text: string): HTMLTableCellElement {
  return Object.assign(document.createElement("td"), { textContent: text });
}

function open(vod: Vod): void {
  current = vod;
  segments.clear();
  motionSegments.clear();
  overlay.clear();
  shownUntil = 0;
  movedUntil = 0;
  hls?.destroy();
  $("now-playing").textContent = `Playing ${new Date(vod.started_at_ms).toLocaleString()}`;
  if (Hls.isSupported()) {
    hls = new Hls();
    hls.loadSource(vod.playlist_url);
    hls.attachMedia(video);
    hls.on(Hls.Events.ERROR, (_, data) => {
      if (data.fatal) say(`Cannot play this recording (${data.details}).`, "error");
    });
  } else {
    video.src = vod.playlist_url;
  }
  void video.play().catch(() => {});
}

/** One segment of a recording's `danmaku` or `avatar` replay, fetched once. */
function segmentOf<T>(cache: Map<number, Promise<T[]>>, what: string, segment: number, list: (page: Record<string, T[]>) => T[]): Promise<T[]> {
  if (!current) return Promise.resolve([]);
  let fetched = cache.get(segment);
  if (!fetched) {
    fetched = api<Record<string, T[]>>(`/v1/vod/${current.id}/${what}?segment=${segment}`, { token: session.token })
      .then(list)
      .catch(() => []);
    cache.set(segment, fetched);
  }
  return fetched;
}

const danmakuOf = (segment: number) => segmentOf<Replayed>(segments, "danmaku", segment, (page) => page.items);
const motionOf = (segment: number) => segmentOf<ReplayedMotion>(motionSegments, "avatar", segment, (page) => page.frames);

const SEGMENT_MS = 360_000;
const MOTION_SEGMENT_MS = 60_000;
/** A whole pose comes every second: a seek replays from one before. */
const FULL_POSE_EVERY_MS = 1_000;

/** Applies the motion the playhead passed since the last call. */
async function move(now: number): Promise<void> {
  const from = movedUntil;
  movedUntil = now;
  if (now <= from) return;
  for (let segment = Math.floor(from / MOTION_SEGMENT_MS); segment <= Math.floor(now / MOTION_SEGMENT_MS); segment++) {
    for (const frame of await motionOf(segment)) {
      if (frame.offset_ms > from && frame.offset_ms <= now) avatar.apply({ ...frame, type: "avatar_motion" });
    }
  }
}

/** Shows what the playhead passed since the last call. */
async function replay(): Promise<void> {
  if (!current) return;
  const now = video.currentTime * 1000;
  await move(now);
  const from = shownUntil;
  shownUntil = now;
  if (now <= from) return;
  for (let segment = Math.floor(from / SEGMENT_MS); segment <= Math.floor(now / SEGMENT_MS); segment++) {
    for (const item of await danmakuOf(segment)) {
      if (item.offset_ms > from && item.offset_ms <= now) {
        const shown = overlay.show({ text: item.text, mode: item.mode, color: item.color });
        // Where it belongs and where it was shown, for whoever inspects the page.
        if (shown) Object.assign(shown.dataset, { offsetMs: item.offset_ms, playheadMs: Math.round(now) });
      }
    }
  }
}

// Checked every animation frame, not on `timeupdate` (4 times a second):
// a comment appears within a frame of its moment.
let replaying = false;
function tick(): void {
  if (!replaying && !video.paused) {
    replaying = true;
    void replay().finally(() => (replaying = false));
  }
  requestAnimationFrame(tick);
}
requestAnimationFrame(tick);
video.addEventListener("seeking", () => {
  // A jump: what lies between is not replayed, what comes next is.
  overlay.clear();
  shownUntil = video.currentTime * 1000;
  movedUntil = Math.max(0, shownUntil - FULL_POSE_EVERY_MS);
});
$<HTMLInputElement>("danmaku-on").onchange = (event) => {
  overlay.enabled = (event.target as HTMLInputElement).checked;
  if (!overlay.enabled) overlay.clear();
};
// Prefetch the first segment's danmaku as soon as a recording opens.
video.addEventListener("loadedmetadata", () => void danmakuOf(0));
