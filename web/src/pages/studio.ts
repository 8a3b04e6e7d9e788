// The streamer's page: camera and microphone with device choice, Go Live
// over WHIP (simulcast), stop, live stats, and the room's danmaku (with
// delete, mute and blocked words) and gifts.

import { api, explain } from "../lib/api";
import { RoomSocket, type Frame } from "../lib/room";
import { SIGNIN_HTML, signedIn } from "../lib/signin";
import { $, danmakuLine, feedLine, param, removeDanmakuLine, say, showLeaderboard } from "../lib/ui";
import { publish, watchStats, type MediaSession } from "../lib/webrtc";

$("signin").innerHTML = SIGNIN_HTML;
const session = await signedIn(["publish", "subscribe", "chat", "moderate"], param("room") ?? "demo");
const room = param("room") ?? session.claims.room;
$("app").classList.remove("hidden");
document.title = `${room} · Studio`;

const preview = $<HTMLVideoElement>("preview");
const chat = $("chat");
let camera: MediaStream | null = null;
let live: MediaSession | null = null;
let stopStats: (() => void) | null = null;

const socket = new RoomSocket(room, session.token, {
  frame: onFrame,
  connection(state, detail) {
    if (state === "reconnecting") say(`Reconnecting to the room… ${detail ?? ""}`);
  },
});
socket.connect();
await openCamera();
await listDevices();
updateWatchLink();

async function openCamera(): Promise<void> {
  camera?.getTracks().forEach((t) => t.stop());
  const cameraId = $<HTMLSelectElement>("camera").value;
  const micId = $<HTMLSelectElement>("microphone").value;
  try {
    camera = await navigator.mediaDevices.getUserMedia({
      video: cameraId ? { deviceId: { exact: cameraId }, width: 1280, height: 720 } : { width: 1280, height: 720 },
      audio: micId ? { deviceId: { exact: micId } } : true,
    });
    preview.srcObject = camera;
  } catch (error) {
    say(`No camera or microphone: ${explain(error)}`, "error");
  }
}

async function listDevices(): Promise<void> {
  const devices = await navigator.mediaDevices.enumerateDevices();
  for (const [id, kind] of [["camera", "videoinput"], ["microphone", "audioinput"]] as const) {
    const select = $<HTMLSelectElement>(id);
    const current = select.value;
    select.replaceChildren(
      ...devices
        .filter((d) => d.kind === kind)
        .map((d, i) => new Option(d.label || `${id} ${i + 1}`, d.deviceId)),
    );
    if (current) select.value = current;
  }
}

$("camera").onchange = () => void openCamera();
$("microphone").onchange = () => void openCamera();
$("stream").oninput = updateWatchLink;

function updateWatchLink(): void {
  const link = $<HTMLAnchorElement>("watch-link");
  link.href = `/watch.html?room=${encodeURIComponent(room)}&stream=${encodeURIComponent(streamName())}`;
  link.textContent = link.href;
}

function streamName(): string {
  return $<HTMLInputElement>("stream").value.trim() || "main";
}

$("go-live").onclick = async () => {
  if (!camera) return say("Allow the camera first.", "error");
  $<HTMLButtonElement>("go-live").disabled = true;
  $("state").textContent = "connecting";
  try {
    live = await publish(room, streamName(), session.token, camera, $<HTMLInputElement>("simulcast").checked);
  } catch (error) {
    $<HTMLButtonElement>("go-live").disabled = false;
    $("state").textContent = "offline";
    return say(`Could not go live: ${explain(error)}`, "error");
  }
  $<HTMLButtonElement>("stop").disabled = false;
  const sending = live;
  sending.pc.onconnectionstatechange = () => {
    $("state").textContent = sending.pc.connectionState === "connected" ? "live" : sending.pc.connectionState;
    if (sending.pc.connectionState === "connected") say("You are live.");
  };
  stopStats = watchStats(sending.pc, "outbound", (s) => {
    $("sending").textContent = `${s.codec} ${s.width}×${s.height} ${Math.round(s.fps)} fps ${s.kbps} kbit/s`;
  });
};

$("stop").onclick = async () => {
  stopStats?.();
  await live?.stop();
  live = null;
  $<HTMLButtonElement>("stop").disabled = true;
  $<HTMLButtonElement>("go-live").disabled = false;
  $("state").textContent = "offline";
  say("Stream stopped.");
};

function onFrame(frame: Frame): void {
  switch (frame.type) {
    case "danmaku": {
      const line = danmakuLine(chat, frame);
      line.dataset.user = frame.user_id;
      line.append(moderation("Delete", () => remove(frame.seq)), moderation("Mute", () => mute(frame.user_id)));
      break;
    }
    case "danmaku_deleted":
      removeDanmakuLine(chat, frame.seq);
      break;
    case "presence":
      $("viewers").textContent = String(frame.viewers);
      break;
    case "gift":
      feedLine($("gift-feed"), `${frame.name}: ${frame.gift_name} ×${frame.count} (${frame.coins} coins)` +
        (frame.combo_count > 1 ? ` combo ×${frame.combo_count}` : ""));
      break;
    case "leaderboard":
      showLeaderboard($("leaderboard"), frame.entries);
      break;
    case "error":
      say(frame.message, "error");
      break;
    case "scene":
    case "vote_tally":
    case "vote_closed":
    case "story_status":
      refreshStory();
      break;
    default:
      break;
  }
}

function moderation(label: string, action: () => Promise<void>): HTMLButtonElement {
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = label;
  button.onclick = () => void action().catch((error) => say(explain(error), "error"));
  return button;
}

async function remove(seq: number): Promise<void> {
  await api(`/v1/rooms/${encodeURIComponent(room)}/danmaku/${seq}`, { method: "DELETE", token: session.token });
}

async function mute(user: string): Promise<void> {
  await api(`/v1/rooms/${encodeURIComponent(room)}/mutes/${encodeURIComponent(user)}`, {
    method: "PUT",
    token: session.token,
    body: { duration_s: 600 },
  });
  say(`${user} is muted for 10 minutes.`);
}

/** The run as the API shows it (docs/protocol.md, Stories). */
interface StoryView {
  node: string;
  choices: { id: string; label: string }[];
  tallies: [string, number][];
  paused: boolean;
  ended: boolean;
  graph_id: string;
}

const storyPath = `/v1/rooms/${encodeURIComponent(room)}/story`;
let storyRefresh: number | undefined;

/** Reads the run again, at most four times a second. */
function refreshStory(): void {
  if (storyRefresh !== undefined) return;
  storyRefresh = window.setTimeout(() => {
    storyRefresh = undefined;
    api<StoryView>(storyPath, { token: session.token }).then(showStory, () => showStory(null));
  }, 250);
}

function showStory(view: StoryView | null): void {
  const choices = $("story-choices");
  // Rebuilt only when the node changes: a refresh must not pull a button
  // from under the operator's pointer (or keyboard focus).
  const key = view ? `${view.node}:${view.choices.map((c) => c.id).join(",")}` : "";
  if (choices.dataset.key !== key) {
    choices.dataset.key = key;
    choices.replaceChildren();
    for (const choice of view?.choices ?? []) {
      choices.append(storyAction(`Take “${choice.label || choice.id}”`, "choose", { choice: choice.id }));
    }
  }
  if (!view) {
    $("story-state").textContent = "No story running.";
    return;
  }
  const votes = view.tallies.map(([option, n]) => `${option} ${n}`).join(", ");
  const status = view.ended ? " · ended" : view.paused ? " · paused" : "";
  $("story-state").textContent = `${view.graph_id}: at ${view.node}${status}${votes ? ` · votes: ${votes}` : ""}`;
}

function storyAction(label: string, action: string, body: unknown = {}): HTMLButtonElement {
  return moderation(label, async () => {
    showStory(await api<StoryView>(`${storyPath}/${action}`, { method: "POST", token: session.token, body }));
  });
}

$("story-form").onsubmit = async (event) => {
  event.preventDefault();
  const graph_id = $<HTMLInputElement>("story-graph").value.trim();
  const version = Number($<HTMLInputElement>("story-version").value);
  try {
    showStory(await api<StoryView>(storyPath, { method: "POST", token: session.token, body: { graph_id, version } }));
    say(`Story ${graph_id} v${version} started.`);
  } catch (error) {
    say(explain(error), "error");
  }
};
for (const action of ["pause", "resume"]) {
  const button = storyAction(action === "pause" ? "Pause" : "Resume", action);
  button.id = `story-${action}`;
  $(`story-${action}`).replaceWith(button);
}
refreshStory();

$("term-form").onsubmit = async (event) => {
  event.preventDefault();
  const input = $<HTMLInputElement>("term");
  const term = input.value.trim();
  if (!term) return;
  try {
    await api(`/v1/rooms/${encodeURIComponent(room)}/blocked_terms`, { method: "POST", token: session.token, body: { term } });
    input.value = "";
    say(`“${term}” is blocked in this room.`);
  } catch (error) {
    say(explain(error), "error");
  }
};
