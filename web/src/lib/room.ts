// The room WebSocket (docs/protocol.md, "The room WebSocket"): JSON frames,
// the token in Sec-WebSocket-Protocol, reconnect with backoff, and on
// reconnect `after_seq` so nothing is missed or repeated.

import type { AvatarMotion } from "./avatar";
import type { StoryFrame } from "./story";

export interface Danmaku {
  type: "danmaku";
  seq: number;
  user_id: string;
  name: string;
  text: string;
  mode?: "scroll" | "top" | "bottom";
  color?: number;
  ts_ms?: number;
  client_msg_id?: string;
  count?: number;
}

export interface Gift {
  type: "gift";
  id: string;
  user_id: string;
  name: string;
  to: string;
  gift_id: string;
  gift_name: string;
  tier: number;
  count: number;
  coins: number;
  combo_id: string;
  combo_count: number;
}

export type Frame =
  | StoryFrame
  | AvatarMotion
  | { type: "welcome"; user_id: string; last_seq: number }
  | Danmaku
  | { type: "danmaku_deleted"; seq: number }
  | { type: "presence"; viewers: number }
  | { type: "ack"; client_msg_id: string; seq: number }
  | {
      type: "error";
      code: string;
      message: string;
      client_msg_id?: string;
      retry_after_ms?: number;
      idempotency_key?: string;
    }
  | { type: "room_closed"; reason: string }
  | { type: "stream_started"; stream: string; tracks: string[]; publisher_user_id: string }
  | { type: "stream_ended"; stream: string; reason: string }
  | Gift
  | { type: "gift_receipt"; idempotency_key: string; id: string; balance: number; replayed?: boolean }
  | { type: "leaderboard"; entries: { user_id: string; coins: number }[] }
  | { type: "gift_goal"; target: number; coins: number; reached?: boolean }
  | { type: "pong"; nonce?: string }
  | Caption
  | { type: "caption_choice"; lang: string; available: string[] };

/** A line of what is said on a stream, timed with its sound (wall-clock ms). */
export interface Caption {
  type: "caption";
  stream: string;
  lang: string;
  start_ms: number;
  end_ms: number;
  text: string;
  final?: boolean;
  /** "asr" (recognized: partial lines, then a final with the same
   * `start_ms`), "host" (the program's voice), "text" (typed). */
  source: string;
  /** The language said, when `text` is a translation. */
  translated_from?: string;
}

export type Connection = "connecting" | "open" | "reconnecting" | "closed";

export interface RoomEvents {
  frame(frame: Frame): void;
  connection(state: Connection, detail?: string): void;
}

const MAX_BACKOFF_MS = 8000;
/** A ping this often; a socket silent for `SILENT_MS` is taken for dead
 * (a network that vanished without closing anything) and replaced. */
const PING_MS = 10_000;
const SILENT_MS = 25_000;

export class RoomSocket {
  private socket: WebSocket | null = null;
  private lastSeq: number | null = null;
  private backoff = 500;
  private stopped = false;
  private lastHeard = 0;
  private pinger: ReturnType<typeof setInterval> | null = null;

  constructor(
    private readonly room: string,
    private readonly token: string,
    private readonly events: RoomEvents,
  ) {}

  connect(): void {
    this.stopped = false;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const after = this.lastSeq === null ? "" : `?after_seq=${this.lastSeq}`;
    const url = `${scheme}://${location.host}/v1/rooms/${encodeURIComponent(this.room)}/ws${after}`;
    this.events.connection(this.lastSeq === null ? "connecting" : "reconnecting");
    const socket = new WebSocket(url, ["live.v1.json", `access_token.${this.token}`]);
    this.socket = socket;
    socket.onopen = () => {
      this.backoff = 500;
      this.lastHeard = Date.now();
      this.pinger = setInterval(() => this.checkAlive(), PING_MS);
      this.events.connection("open");
    };
    socket.onmessage = (message) => {
      this.lastHeard = Date.now();
      if (typeof message.data !== "string") return;
      const frame = JSON.parse(message.data) as Frame | { type: "batch"; items: Frame[] };
      for (const each of frame.type === "batch" ? frame.items : [frame]) {
        if (each.type === "danmaku") this.lastSeq = Math.max(this.lastSeq ?? 0, each.seq);
        if (each.type === "welcome" && this.lastSeq === null) this.lastSeq = each.last_seq;
        this.events.frame(each);
      }
    };
    socket.onclose = (event) => {
      if (this.stopped || event.code === 1000) {
        this.detach();
        this.events.connection("closed", event.reason || "closed");
        return;
      }
      this.dropped(`connection lost (${event.code})`);
    };
  }

  /** Dropped (network, engine restart, slow consumer): come back after a
   * pause that grows, and catch up from the last seq seen. */
  private dropped(why: string): void {
    this.detach();
    this.events.connection("reconnecting", why);
    setTimeout(() => this.stopped || this.connect(), this.backoff);
    this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF_MS);
  }

  private checkAlive(): void {
    if (Date.now() - this.lastHeard > SILENT_MS) {
      // A dead network may never deliver the close: do not wait for it.
      this.socket?.close();
      this.dropped("no answer from the engine");
      return;
    }
    this.send({ type: "ping", nonce: Date.now() });
  }

  /** Forgets the current socket (its late events are ignored). */
  private detach(): void {
    if (this.pinger !== null) clearInterval(this.pinger);
    this.pinger = null;
    if (this.socket) this.socket.onclose = this.socket.onmessage = this.socket.onopen = null;
    this.socket = null;
  }

  send(frame: Record<string, unknown>): boolean {
    if (this.socket?.readyState !== WebSocket.OPEN) return false;
    this.socket.send(JSON.stringify(frame));
    return true;
  }

  close(): void {
    this.stopped = true;
    this.socket?.close(1000);
  }
}
