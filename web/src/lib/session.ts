// Who is signed in on this browser: a token kept in localStorage, per
// room. In embedded dev mode the sign-in form can mint one with the admin
// key (POST /v1/tokens), which never leaves the form.

import { api, readClaims, type Claims } from "./api";

const KEY = "live-engine.token";

export interface Session {
  token: string;
  claims: Claims;
}

/** The stored session; `expired` when there was one that ran out. */
export function currentSession(): Session | "expired" | null {
  const token = localStorage.getItem(KEY);
  if (!token) return null;
  const claims = readClaims(token);
  if (!claims || claims.exp * 1000 < Date.now()) {
    localStorage.removeItem(KEY);
    return "expired";
  }
  return { token, claims };
}

export function signIn(token: string): Session {
  const claims = readClaims(token.trim());
  if (!claims) throw new Error("That is not a token (expected three dot-separated parts).");
  if (claims.exp * 1000 < Date.now()) throw new Error("That token has expired.");
  localStorage.setItem(KEY, token.trim());
  return { token: token.trim(), claims };
}

export function signOut(): void {
  localStorage.removeItem(KEY);
}

/** Mints a token with the admin key (dev mode), for one user in one room. */
export async function mintToken(
  adminKey: string,
  userId: string,
  room: string,
  grants: string[],
): Promise<string> {
  const minted = await api<{ token: string }>("/v1/tokens", {
    method: "POST",
    token: adminKey,
    body: { user_id: userId, name: userId, room, grants, ttl_s: 12 * 3600 },
  });
  return minted.token;
}

/** Creates the room if it does not exist (admin key only; 409 is fine). */
export async function ensureRoom(adminKey: string, room: string): Promise<void> {
  try {
    await api("/v1/rooms", { method: "POST", token: adminKey, body: { room_id: room, title: room } });
  } catch (error) {
    if ((error as { status?: number }).status !== 409) throw error;
  }
}
