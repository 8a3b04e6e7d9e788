// The viewer: WHEP playback (quality by the room socket's `layer` frame),
// the danmaku overlay and input, gifts with the wallet balance, the viewer
// count; reconnects after a drop and falls back to HLS when WebRTC fails.

import Hls from "hls.js";

import { api, ApiError, explain } from "../lib/api";
import { Overlay, type Mode } from "../lib/overlay";
import { RoomSocket, type Caption, type Frame } from "../lib/room";
import type { Session } from "../lib/session";
import { SIGNIN_HTML, signedIn } from "../lib/signin";
import { AvatarView } from "../lib/avatar";
import { StoryPanel, type StoryFrame } from "../lib/story";
import { $, danmakuLine, feedLine, param, randomKey, removeDanmakuLine, say, showLeaderboard } from "../lib/ui";
import { play, watchStats, type Layer, type MediaSession } from "../lib/webrtc";

interface GiftInfo {
  id: string;
  name: string;
  price: number;
}

/** WebRTC that has not shown a frame by then falls back to HLS. */
const WEBRTC_PATIENCE_MS = 10_000;
/** A `disconnected` connection may come back by itself; not after this. */
const DISCONNECTED_GRACE_MS = 3_000;

$("signin").innerHTML = SIGNIN_HTML;
const session = await signedIn(["subscribe", "chat", "gift"], param("room") ?? "demo");
const room = param("room") ?? session.claims.room;
/** The stream the URL names (`main` by default): its publisher gets the gifts. */
const home = param("stream") ?? "main";
/** While a story runs, the room's program plays instead (unless the URL names a stream). */
const followsProgram = param("stream") === null;
/** What plays: `home`, or the program. */
let stream = home;
$("app").classList.remove("hidden");
document.title = `${room} · Watch`;

const video = $<HTMLVideoElement>("video");
const overlay = new Overlay($("overlay"));
const chat = $("chat");
let media: MediaSession | null = null;
let stopStats: (() => void) | null = null;
let hls: Hls | null = null;
let retry = 1000;
let reconnecting = false;
/** Counts `watch()` calls: an older one that finishes late gives way. */
let attempt = 0;
/** Who publishes the stream: gifts go to them (`?to=` overrides). */
let creator: string | null = param("to");

const socket = new RoomSocket(room, session.token, {
  frame: onFrame,
  connection(state, detail) {
    if (state === "reconnecting") {
      reconnecting = true;
      say(`Reconnecting to the room… ${detail ?? ""}`);
    }
    // A session starts with captions as spoken: ask again for the
    // viewer's choice (and learn the languages offered).
    if (state === "open") chooseCaptions();
    if (state === "open" && reconnecting) {
      reconnecting = false;
      say(`Back in room ${room}.`);
    }
    if (state === "closed") say(`Left the room: ${detail ?? ""}`);
  },
});
socket.connect();

const avatar = new AvatarView($<HTMLCanvasElement>("avatar"));
const story = new StoryPanel($("story"), (window, option) => {
  if (!socket.send({ type: "vote", window, option })) say("Not connected: vote again in a moment.", "error");
});
void showStory();

/** Where the room's story stands now (frames keep it current after). */
async function showStory(): Promise<void> {
  interface View {
    node: string;
    scene: { clip?: string; live?: string };
    host_lines: string[];
    window: { number: number; closes_ms: number | null; kind: { vote?: { allow_change: boolean } } } | null;
    vote_options: { id: string; label: string }[];
    tallies: [string, number][];
    paused: boolean;
    ended: boolean;
    program_stream?: string;
  }
  let view: View;
  try {
    view = await api<View>(`/v1/rooms/${encodeURIComponent(room)}/story`, { token: session.token });
  } catch {
    return; // No story in this room (404), or not yet: frames will tell.
  }
  const frames: StoryFrame[] = [
    {
      type: "scene",
      node: view.node,
      scene_kind: view.scene.clip !== undefined ? "clip" : "live",
      scene_source: view.scene.clip ?? view.scene.live ?? "",
      host_lines: view.host_lines,
    },
  ];
  const vote = view.window?.kind.vote;
  if (view.window && vote) {
    frames.push(
      {
        type: "vote_open",
        window: view.window.number,
        options: view.vote_options,
        closes_ms: view.window.closes_ms ?? 0,
        allow_change: vote.allow_change,
      },
      { type: "vote_tally", window: view.window.number, tallies: view.tallies.map(([option, votes]) => ({ option, votes })) },
    );
  }
  if (view.paused || view.ended) frames.push({ type: "story_status", status: view.ended ? "ended" : "paused" });
  frames.forEach((frame) => story.apply(frame));
  follow(view.program_stream ?? null);
}

/** Plays the room's program while its story runs, `home` otherwise: one
 * WebRTC session for the whole show while scenes change under it. */
function follow(program: string | null): void {
  const wanted = followsProgram && program ? program : home;
  if (wanted === stream) return;
  stream = wanted;
  say(wanted === home ? "The show is over: back to the stream." : "The show is on.");
  void watch();
}
void watch();
void loadGifts(session);

/** Plays the stream over WHEP; on failure, tries again or falls back. */
async function watch(): Promise<void> {
  stopPlayback();
  if (!creator) void learnCreator();
  const mine = ++attempt;
  const layer = $<HTMLSelectElement>("quality").value as Layer;
  let playing: MediaSession;
  try {
    playing = await play(room, stream, session.token, layer, video);
  } catch (error) {
    if (mine !== attempt) return;
    if (error instanceof ApiError && error.status === 404) {
      $("playback").textContent = "not live";
      say("The stream is not live right now: it starts here when it does.");
    } else if (error instanceof ApiError && error.status === 0) {
      // The network, not WebRTC: the same way again, after a pause.
      say(`Cannot reach the engine: trying again in ${retry / 1000} s.`, "error");
      watchLater();
    } else {
      say(`WebRTC failed (${explain(error)}): trying HLS.`, "error");
      void fallBackToHls();
    }
    return;
  }
  if (mine !== attempt) {
    void playing.stop();
    return;
  }
  media = playing;
  retry = 1000;
  stopStats = watchStats(playing.pc, "inbound", (s) => {
    $("playback").textContent = s.width
      ? `WebRTC ${s.codec} ${s.width}×${s.height} ${Math.round(s.fps)} fps ${s.kbps} kbit/s`
      : "connecting…";
    video.dataset.framesDecoded = String(s.framesDecoded);
  });
  const lost = () => {
    if (media !== playing || playing.pc.connectionState === "connected") return;
    // A network drop: a new session (after a pause that grows).
    say("Connection to the stream lost: reconnecting…");
    stopPlayback();
    watchLater();
  };
  playing.pc.onconnectionstatechange = () => {
    if (playing.pc.connectionState === "failed") lost();
    if (playing.pc.connectionState === "disconnected") setTimeout(lost, DISCONNECTED_GRACE_MS);
  };
  setTimeout(() => {
    if (media === playing && (Number(video.dataset.framesDecoded) || 0) === 0) {
      say("No picture over WebRTC: trying HLS.", "error");
      void fallBackToHls();
    }
  }, WEBRTC_PATIENCE_MS);
}

/** The stream's publisher, from the room's live streams. */
async function learnCreator(): Promise<void> {
  try {
    const { streams } = await api<{ streams: { stream: string; publisher_user_id: string }[] }>(
      `/v1/rooms/${encodeURIComponent(room)}/streams`,
    );
    creator = streams.find((s) => s.stream === home)?.publisher_user_id || creator;
  } catch {
    // Kept as it was: a stream_started frame tells it too.
  }
}

function watchLater(): void {
  $("playback").textContent = "reconnecting…";
  const mine = attempt;
  setTimeout(() => mine === attempt && void watch(), retry);
  retry = Math.min(retry * 2, 8000);
}

async function fallBackToHls(): Promise<void> {
  stopPlayback();
  try {
    const live = await api<{ url: string }>(
      `/v1/rooms/${encodeURIComponent(room)}/streams/${encodeURIComponent(stream)}/hls`,
      { token: session.token },
    );
    if (!Hls.isSupported()) throw new Error("this browser plays neither WebRTC nor HLS here");
    const playing = new Hls();
    hls = playing;
    playing.loadSource(live.url);
    playing.attachMedia(video);
    playing.on(Hls.Events.ERROR, (_, data) => {
      if (!data.fatal || hls !== playing) return;
      say(`HLS playback failed (${data.details}): trying again.`, "error");
      stopPlayback();
      watchLater();
    });
    video.dataset.transport = "hls";
    $("playback").textContent = "HLS";
  } catch (error) {
    say(`Cannot play: ${explain(error)}. Trying again shortly.`, "error");
    watchLater();
  }
}

function stopPlayback(): void {
  stopStats?.();
  stopStats = null;
  const old = media;
  media = null;
  void old?.stop();
  hls?.destroy();
  hls = null;
  video.dataset.transport = "webrtc";
  video.dataset.framesDecoded = "0";
}

function onFrame(frame: Frame): void {
  switch (frame.type) {
    case "danmaku": {
      const mine = frame.user_id === session.claims.user_id;
      overlay.show({ text: frame.text, mode: frame.mode, color: frame.color, mine });
      danmakuLine(chat, frame);
      break;
    }
    case "danmaku_deleted":
      removeDanmakuLine(chat, frame.seq);
      break;
    case "presence":
      $("viewers").textContent = String(frame.viewers);
      break;
    case "error":
      say(explain(new ApiError(400, frame.code, frame.message, frame)), "error");
      break;
    case "stream_started":
      if (frame.stream === home && !param("to")) creator = frame.publisher_user_id || creator;
      if (frame.stream === stream) {
        say("The stream is live.");
        void watch();
      }
      break;
    case "stream_ended":
      if (frame.stream === stream && stream !== home) {
        follow(null);
      } else if (frame.stream === stream) {
        stopPlayback();
        $("playback").textContent = "ended";
        say("The stream ended.");
      }
      break;
    case "gift":
      feedLine(chat, `${frame.name} sent ${frame.gift_name} ×${frame.count}`);
      if (frame.combo_count > 1) $("combo").textContent = `${frame.name}: ${frame.gift_name} combo ×${frame.combo_count}!`;
      break;
    case "gift_receipt":
      $("balance").textContent = String(frame.balance);
      break;
    case "leaderboard":
      showLeaderboard($("leaderboard"), frame.entries);
      break;
    case "scene":
      story.apply(frame);
      // A story started (or goes on): play its program.
      if (followsProgram && stream === home) void showStory();
      break;
    case "vote_open":
    case "vote_tally":
    case "vote_closed":
    case "vote_receipt":
    case "story_trigger":
    case "story_status":
      story.apply(frame);
      break;
    case "avatar_motion":
      $("story").classList.remove("hidden");
      avatar.apply(frame);
      break;
    case "host_line":
      story.apply(frame);
      feedLine(chat, `Host → ${frame.reply_to_user ?? "all"}: ${frame.text}`);
      break;
    case "caption":
      if (frame.stream === stream) showCaption(frame);
      break;
    case "caption_choice":
      offerCaptions(frame.available);
      break;
    case "room_closed":
      stopPlayback();
      say(`The room closed: ${frame.reason}`);
      break;
    default:
      break;
  }
}

/** Shows a caption while its sound plays. Its times are the engine's
 * clock: a viewer's clock far off it (or a line long gone) shows it now,
 * for as long as it lasts. */
function showCaption(line: Caption): void {
  const box = $("caption");
  let delay = line.start_ms - Date.now();
  if (delay < 0 || delay > 60_000) delay = 0;
  const length = Math.max(1_000, line.end_ms - line.start_ms);
  setTimeout(() => {
    box.textContent = line.text;
    box.lang = line.lang;
    box.dataset.last = line.text;
    box.classList.remove("hidden");
  }, delay);
  setTimeout(() => {
    if (box.textContent === line.text) box.classList.add("hidden");
  }, delay + length);
}

$("send-form").onsubmit = (event) => {
  event.preventDefault();
  const input = $<HTMLInputElement>("text");
  const text = input.value.trim();
  if (!text) return;
  const color = parseInt($<HTMLInputElement>("color").value.slice(1), 16);
  const mode = $<HTMLSelectElement>("mode").value as Mode;
  if (!socket.send({ type: "danmaku", text, mode, color, client_msg_id: randomKey() })) {
    say("Not connected to the room yet: try again in a moment.", "error");
    return;
  }
  input.value = "";
};

/** Asks the room for caption lines in the language chosen. */
function chooseCaptions(): void {
  const lang = $<HTMLSelectElement>("captions").value;
  if (lang === "off") $("caption").classList.add("hidden");
  socket.send({ type: "captions", lang });
}

/** Lists the languages the engine offers (the spoken one is "As spoken"). */
function offerCaptions(available: string[]): void {
  const select = $<HTMLSelectElement>("captions");
  const names = new Intl.DisplayNames([navigator.language], { type: "language" });
  for (const lang of available.slice(1)) {
    if ([...select.options].some((option) => option.value === lang)) continue;
    select.add(new Option(names.of(lang) ?? lang, lang));
  }
}

$("captions").onchange = chooseCaptions;

$("quality").onchange = () => {
  const layer = $<HTMLSelectElement>("quality").value;
  if (!socket.send({ type: "layer", layer })) void watch();
};
$("density").onchange = () => overlay.setDensity(Number($<HTMLSelectElement>("density").value));
$<HTMLInputElement>("danmaku-on").onchange = (event) => {
  overlay.enabled = (event.target as HTMLInputElement).checked;
  if (!overlay.enabled) overlay.clear();
};
$("unmute").onclick = () => {
  video.muted = !video.muted;
  $("unmute").textContent = video.muted ? "Unmute" : "Mute";
};

async function loadGifts(session: Session): Promise<void> {
  try {
    const [{ gifts }, wallet] = await Promise.all([
      api<{ gifts: GiftInfo[] }>("/v1/gifts"),
      api<{ balance: number }>(`/v1/wallets/${encodeURIComponent(session.claims.user_id)}`, { token: session.token }),
    ]);
    $("balance").textContent = String(wallet.balance);
    $("gifts").replaceChildren(
      ...gifts.map((gift) => {
        const button = document.createElement("button");
        button.type = "button";
        button.textContent = `${gift.name} · ${gift.price}`;
        button.dataset.gift = gift.id;
        button.onclick = () => {
          const to = creator;
          if (!to) {
            say("Nobody is live to receive gifts right now.", "error");
            return;
          }
          if (!socket.send({ type: "gift", gift_id: gift.id, count: 1, to, idempotency_key: randomKey() })) {
            say("Not connected to the room yet.", "error");
          }
        };
        return button;
      }),
    );
  } catch (error) {
    say(`Gifts unavailable: ${explain(error)}`, "error");
  }
}
