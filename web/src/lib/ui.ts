// Small DOM helpers shared by the pages.

export function $<T extends HTMLElement = HTMLElement>(id: string): T {
  const element = document.getElementById(id);
  if (!element) throw new Error(`page is missing #${id}`);
  return element as T;
}

/** Says something in the page's status line (an aria-live region). */
export function say(message: string, kind: "info" | "error" = "info"): void {
  const status = $("status");
  status.textContent = message;
  status.className = `status ${kind}`;
}

export function param(name: string): string | null {
  return new URLSearchParams(location.search).get(name);
}

/** Adds a line to a bounded feed (newest last), returning it. */
export function feedLine(feed: HTMLElement, text: string, max = 200): HTMLLIElement {
  const line = document.createElement("li");
  line.textContent = text;
  feed.append(line);
  while (feed.children.length > max) feed.firstElementChild?.remove();
  feed.scrollTop = feed.scrollHeight;
  return line;
}

/** A danmaku's line in a chat feed (`×N` when merged), found again by
 * its seq when a moderator deletes it. */
export function danmakuLine(
  feed: HTMLElement,
  item: { name: string; text: string; seq: number; count?: number },
): HTMLLIElement {
  const merged = item.count && item.count > 1 ? ` ×${item.count}` : "";
  const line = feedLine(feed, `${item.name}: ${item.text}${merged}`);
  line.dataset.seq = String(item.seq);
  return line;
}

/** Takes a deleted danmaku's line out of a chat feed. */
export function removeDanmakuLine(feed: HTMLElement, seq: number): void {
  feed.querySelector(`[data-seq="${seq}"]`)?.remove();
}

export function randomKey(): string {
  return crypto.randomUUID();
}

/** Renders a `leaderboard` frame's entries into a list. */
export function showLeaderboard(list: HTMLElement, entries: { user_id: string; coins: number }[]): void {
  list.replaceChildren(
    ...entries.map((e) => Object.assign(document.createElement("li"), { textContent: `${e.user_id} · ${e.coins}` })),
  );
}
