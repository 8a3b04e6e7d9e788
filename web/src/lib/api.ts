// The engine's HTTP API: JSON in and out, errors as ApiError carrying the
// engine's `{"error": {"code", "message", ...}}` body (docs/protocol.md).

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

export interface Request {
  method?: string;
  token?: string;
  body?: unknown;
  headers?: Record<string, string>;
}

/** Calls the API on this page's origin (the gateway serves both). */
export async function api<T>(path: string, request: Request = {}): Promise<T> {
  const headers: Record<string, string> = { ...request.headers };
  if (request.token) headers["Authorization"] = `Bearer ${request.token}`;
  if (request.body !== undefined) headers["Content-Type"] = "application/json";
  let response: Response;
  try {
    response = await fetch(path, {
      method: request.method ?? "GET",
      headers,
      body: request.body === undefined ? undefined : JSON.stringify(request.body),
    });
  } catch {
    throw new ApiError(0, "offline", "the engine cannot be reached: check your connection");
  }
  const text = await response.text();
  const json = text ? safeJson(text) : null;
  if (!response.ok) {
    const error = (json as { error?: Record<string, unknown> } | null)?.error ?? {};
    const code = typeof error.code === "string" ? error.code : "http_" + response.status;
    const message = typeof error.message === "string" ? error.message : response.statusText;
    throw new ApiError(response.status, code, message, error);
  }
  return json as T;
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

/** Claims of a token, read without verifying (the engine verifies). */
export interface Claims {
  user_id: string;
  name?: string;
  room: string;
  grants: string[];
  exp: number;
}

export function readClaims(token: string): Claims | null {
  const part = token.split(".")[1];
  if (!part) return null;
  try {
    const json = atob(part.replace(/-/g, "+").replace(/_/g, "/"));
    return JSON.parse(json) as Claims;
  } catch {
    return null;
  }
}

/** A human sentence for an error, for the page (never a stack trace). */
export function explain(error: unknown): string {
  if (error instanceof ApiError) {
    switch (error.code) {
      case "token_expired":
        return "Your sign-in has expired. Sign in again.";
      case "invalid_token":
      case "unauthorized":
        return "You are not signed in (or the token is not valid here).";
      case "forbidden":
        return "Your token does not allow this in this room.";
      case "not_found":
        return error.message.includes("stream")
          ? "The stream is not live right now."
          : "Not found: " + error.message;
      case "insufficient_funds": {
        const balance = error.details.balance;
        return balance === undefined ? "Not enough coins for that gift." : `Not enough coins (balance: ${balance}).`;
      }
      case "rate_limited":
        return "Slow down: you are sending too fast.";
      case "blocked":
        return "That message contains a blocked word.";
      case "full":
        return "The stream is full right now. Try again in a moment.";
      default:
        return error.message;
    }
  }
  return error instanceof Error ? error.message : String(error);
}
