// The story panel of the watch page (docs/story.md): the scene and what the
// host says, the audience vote with live counts and a countdown, and the
// progress of a gift goal or keyword. `StoryState` is plain data updated
// by frames (tested without a browser); `StoryPanel` draws it.

export interface VoteOption {
  id: string;
  label: string;
}

export interface VoteCount {
  option: string;
  votes: number;
}

export type StoryFrame =
  | {
      type: "scene";
      node: string;
      scene_kind: string;
      scene_source: string;
      host_lines?: string[];
      by?: string;
      at_ms?: number;
    }
  | { type: "vote_open"; window: number; options: VoteOption[]; closes_ms: number; allow_change?: boolean }
  | { type: "vote_tally"; window: number; tallies?: VoteCount[]; voters?: number }
  | {
      type: "vote_closed";
      window: number;
      tallies?: VoteCount[];
      voters?: number;
      winner?: string;
      tie_break?: string;
      seed?: number;
    }
  | { type: "vote_receipt"; window: number; option: string; changed_from?: string }
  | { type: "story_trigger"; window: number; trigger: string; count?: number; target?: number; closes_ms?: number }
  | { type: "story_status"; status: string; node?: string; at_ms?: number }
  | { type: "host_line"; text: string; faq_id?: string; reply_to_user?: string; reply_to_seq?: number };

export interface Vote {
  window: number;
  options: (VoteOption & { votes: number })[];
  closesMs: number;
  allowChange: boolean;
  voters: number;
  /** What this viewer's last counted vote was. */
  mine: string | null;
  /** Set once the vote closed. */
  result: { winner: string; tieBreak: string } | null;
}

export interface StoryState {
  node: string | null;
  scene: string;
  hostLines: string[];
  /** The host's latest answer to the chat, and to whom. */
  answer: { text: string; to: string } | null;
  vote: Vote | null;
  /** A gift goal or keyword in progress. */
  trigger: { kind: string; count: number; target: number; closesMs: number } | null;
  status: "running" | "paused" | "ended";
}

export function emptyStory(): StoryState {
  return { node: null, scene: "", hostLines: [], answer: null, vote: null, trigger: null, status: "running" };
}

/** Applies one frame; frames of other types leave the state as it is. */
export function applyStoryFrame(state: StoryState, frame: StoryFrame): StoryState {
  switch (frame.type) {
    case "scene":
      return {
        ...state,
        node: frame.node,
        scene: frame.scene_kind === "clip" ? `Clip: ${frame.scene_source}` : `Live: ${frame.scene_source}`,
        hostLines: frame.host_lines ?? [],
        // A new node: the previous vote's result stays visible until the
        // next vote opens, a finished trigger does not.
        trigger: null,
      };
    case "vote_open":
      return {
        ...state,
        vote: {
          window: frame.window,
          options: frame.options.map((o) => ({ ...o, votes: 0 })),
          closesMs: frame.closes_ms,
          allowChange: frame.allow_change ?? false,
          voters: 0,
          mine: null,
          result: null,
        },
      };
    case "vote_tally":
    case "vote_closed": {
      const vote = state.vote;
      if (!vote || vote.window !== frame.window) return state;
      const counts = new Map((frame.tallies ?? []).map((t) => [t.option, t.votes ?? 0]));
      const options = vote.options.map((o) => ({ ...o, votes: counts.get(o.id) ?? o.votes }));
      const result =
        frame.type === "vote_closed" ? { winner: frame.winner ?? "", tieBreak: frame.tie_break ?? "none" } : vote.result;
      return { ...state, vote: { ...vote, options, voters: frame.voters ?? vote.voters, result } };
    }
    case "vote_receipt": {
      const vote = state.vote;
      if (!vote || vote.window !== frame.window) return state;
      return { ...state, vote: { ...vote, mine: frame.option } };
    }
    case "story_trigger":
      return {
        ...state,
        trigger: {
          kind: frame.trigger,
          count: frame.count ?? 0,
          target: frame.target ?? 0,
          closesMs: frame.closes_ms || state.trigger?.closesMs || 0,
        },
      };
    case "host_line":
      return { ...state, answer: { text: frame.text, to: frame.reply_to_user ?? "" } };
    case "story_status":
      return { ...state, status: frame.status === "paused" ? "paused" : frame.status === "ended" ? "ended" : "running" };
  }
}

/** Whole percentages of the votes cast, summing to 100 when any were. */
export function shares(options: { votes: number }[]): number[] {
  const total = options.reduce((sum, o) => sum + o.votes, 0);
  if (total === 0) return options.map(() => 0);
  const exact = options.map((o) => (o.votes * 100) / total);
  const floors = exact.map(Math.floor);
  let left = 100 - floors.reduce((a, b) => a + b, 0);
  // Largest remainders get the points rounding took away.
  const order = exact.map((e, i) => [e - Math.floor(e), i] as const).sort((a, b) => b[0] - a[0]);
  for (const [, i] of order) {
    if (left <= 0) break;
    floors[i] += 1;
    left -= 1;
  }
  return floors;
}

/** `m:ss` until `closesMs`, never negative. */
export function countdown(closesMs: number, nowMs: number): string {
  const seconds = Math.max(0, Math.ceil((closesMs - nowMs) / 1000));
  return `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`;
}

const TIE_BREAKS: Record<string, string> = {
  none: "",
  default: " (a tie: the default option)",
  draw: " (a tie: decided by a draw)",
  operator: " (decided by the host)",
};

/** Draws a `StoryState` into the panel's elements. */
export class StoryPanel {
  state = emptyStory();
  private timer: number | undefined;

  constructor(
    private readonly root: HTMLElement,
    private readonly castVote: (window: number, option: string) => void,
  ) {}

  apply(frame: StoryFrame): void {
    this.state = applyStoryFrame(this.state, frame);
    this.render();
  }

  render(): void {
    const { state, root } = this;
    root.classList.toggle("hidden", state.node === null);
    root.querySelector<HTMLElement>("[data-scene]")!.textContent =
      state.status === "paused" ? `${state.scene} · paused` : state.status === "ended" ? `${state.scene} · the end` : state.scene;
    const answer = state.answer ? ` @${state.answer.to}: ${state.answer.text}` : "";
    root.querySelector<HTMLElement>("[data-host]")!.textContent = state.hostLines.join(" ") + answer;
    const trigger = root.querySelector<HTMLElement>("[data-trigger]")!;
    const t = state.trigger;
    trigger.textContent =
      t && t.kind === "gift_goal"
        ? `Gift goal: ${t.count} / ${t.target} coins`
        : t && t.kind === "keyword"
          ? `Say it in the chat: ${t.count} / ${t.target} viewers`
          : "";
    this.renderVote(root.querySelector<HTMLElement>("[data-vote]")!);
  }

  private renderVote(box: HTMLElement): void {
    const vote = this.state.vote;
    box.replaceChildren();
    window.clearInterval(this.timer);
    if (!vote) return;
    const title = document.createElement("p");
    const open = vote.result === null && this.state.status === "running";
    const winner = vote.options.find((o) => o.id === vote.result?.winner);
    title.textContent = open
      ? "Vote now"
      : vote.result
        ? `Result: ${winner?.label ?? vote.result.winner}${TIE_BREAKS[vote.result.tieBreak] ?? ""}`
        : "Voting is paused";
    box.append(title);
    const percent = shares(vote.options);
    vote.options.forEach((option, i) => {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "vote-option";
      button.dataset.option = option.id;
      button.disabled = !open || (vote.mine !== null && !vote.allowChange);
      button.setAttribute("aria-pressed", String(vote.mine === option.id));
      button.style.setProperty("--share", `${percent[i]}%`);
      button.textContent = `${option.label} · ${percent[i]}% (${option.votes})`;
      button.onclick = () => this.castVote(vote.window, option.id);
      box.append(button);
    });
    const clock = document.createElement("p");
    clock.className = "stats";
    box.append(clock);
    const tick = () => {
      clock.textContent = open ? `${vote.voters} voters · closes in ${countdown(vote.closesMs, Date.now())}` : `${vote.voters} voters`;
    };
    tick();
    if (open) this.timer = window.setInterval(tick, 500);
  }
}
