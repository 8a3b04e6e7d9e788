// WHIP (publish) and WHEP (play) per RFC 9725: one POST of an SDP offer,
// a 201 with the answer and the session's Location, a DELETE to end it.
// The engine is ICE-lite with one host candidate: gather, then offer once.

import { ApiError } from "./api";

export type Layer = "auto" | "high" | "medium" | "low";

export interface MediaSession {
  pc: RTCPeerConnection;
  location: string;
  /** Ends the session: DELETE on the engine, then the peer connection. */
  stop(): Promise<void>;
}

async function negotiate(pc: RTCPeerConnection, url: string, token: string): Promise<MediaSession> {
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  let response: Response;
  try {
    response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/sdp", Authorization: `Bearer ${token}` },
      body: pc.localDescription!.sdp,
    });
  } catch {
    pc.close();
    throw new ApiError(0, "offline", "the engine cannot be reached");
  }
  if (response.status !== 201) {
    pc.close();
    const body = await response.json().catch(() => ({}));
    const error = (body as { error?: { code?: string; message?: string } }).error ?? {};
    throw new ApiError(response.status, error.code ?? "http_" + response.status, error.message ?? response.statusText);
  }
  const location = response.headers.get("Location") ?? "";
  await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
  return {
    pc,
    location,
    async stop() {
      await fetch(location, { method: "DELETE", headers: { Authorization: `Bearer ${token}` } }).catch(() => {});
      pc.close();
    },
  };
}

function gathered(pc: RTCPeerConnection): Promise<void> {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState === "complete") {
        pc.removeEventListener("icegatheringstatechange", done);
        resolve();
      }
    };
    pc.addEventListener("icegatheringstatechange", done);
    // A peer with nothing left to gather may never say "complete".
    setTimeout(resolve, 2000);
  });
}

/** Publishes a camera/microphone stream; video in three simulcast layers. */
export async function publish(
  room: string,
  stream: string,
  token: string,
  media: MediaStream,
  simulcast = true,
): Promise<MediaSession> {
  const pc = new RTCPeerConnection();
  const [video] = media.getVideoTracks();
  const [audio] = media.getAudioTracks();
  if (video) {
    pc.addTransceiver(video, {
      direction: "sendonly",
      sendEncodings: simulcast
        ? [
            { rid: "q", scaleResolutionDownBy: 4, maxBitrate: 200_000 },
            { rid: "h", scaleResolutionDownBy: 2, maxBitrate: 700_000 },
            { rid: "f", maxBitrate: 2_500_000 },
          ]
        : undefined,
    });
  }
  if (audio) pc.addTransceiver(audio, { direction: "sendonly" });
  return negotiate(pc, `/whip/${encodeURIComponent(room)}/${encodeURIComponent(stream)}`, token);
}

/** Plays a live stream into `video`. */
export async function play(
  room: string,
  stream: string,
  token: string,
  layer: Layer,
  video: HTMLVideoElement,
): Promise<MediaSession> {
  const pc = new RTCPeerConnection();
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addTransceiver("audio", { direction: "recvonly" });
  const remote = new MediaStream();
  pc.ontrack = (event) => {
    remote.addTrack(event.track);
    video.srcObject = remote;
  };
  const path = `/whep/${encodeURIComponent(room)}/${encodeURIComponent(stream)}?layer=${layer}`;
  return negotiate(pc, path, token);
}

/** Inbound or outbound video numbers, for the stats panels. */
export interface VideoStats {
  kbps: number;
  width: number;
  height: number;
  fps: number;
  codec: string;
  framesDecoded: number;
}

/** Samples a session's video every second; returns a stop function. */
export function watchStats(pc: RTCPeerConnection, direction: "inbound" | "outbound", report: (s: VideoStats) => void): () => void {
  let lastBytes = 0;
  let lastAt = 0;
  const timer = setInterval(async () => {
    const stats = await pc.getStats();
    let bytes = 0;
    const video: VideoStats = { kbps: 0, width: 0, height: 0, fps: 0, codec: "", framesDecoded: 0 };
    const codecs = new Map<string, string>();
    stats.forEach((s) => {
      if (s.type === "codec") codecs.set(s.id, (s.mimeType as string).replace("video/", "").replace("audio/", ""));
    });
    stats.forEach((s) => {
      if (s.type !== `${direction}-rtp` || s.kind !== "video") return;
      bytes += (direction === "inbound" ? s.bytesReceived : s.bytesSent) ?? 0;
      // Simulcast: the widest layer speaks for the picture.
      if ((s.frameWidth ?? 0) >= video.width) {
        video.width = s.frameWidth ?? 0;
        video.height = s.frameHeight ?? 0;
        video.fps = s.framesPerSecond ?? 0;
        video.codec = codecs.get(s.codecId) ?? video.codec;
      }
      video.framesDecoded += s.framesDecoded ?? 0;
    });
    const now = performance.now();
    if (lastAt) video.kbps = Math.round(((bytes - lastBytes) * 8) / (now - lastAt));
    lastBytes = bytes;
    lastAt = now;
    report(video);
  }, 1000);
  return () => clearInterval(timer);
}
