// The sign-in panel every page shares: paste a token, or (embedded dev
// mode) mint one with the admin key for a user name and room.

import { explain } from "./api";
import { currentSession, ensureRoom, mintToken, signIn, signOut, type Session } from "./session";
import { $, say } from "./ui";

/** Resolves with a session once the user is signed in (at once if they
 * already are); `grants` are what a dev-mode token gets. */
export function signedIn(grants: string[], defaultRoom: string): Promise<Session> {
  const panel = $("signin");
  const existing = currentSession();
  const who = $("who");
  const out = $<HTMLButtonElement>("signout");
  out.onclick = () => {
    signOut();
    location.reload();
  };
  if (existing === "expired") say("Your sign-in has expired. Sign in again.", "error");
  if (existing && existing !== "expired") {
    panel.classList.add("hidden");
    who.textContent = `${existing.claims.name || existing.claims.user_id} · ${existing.claims.room}`;
    return Promise.resolve(existing);
  }
  panel.classList.remove("hidden");
  out.classList.add("hidden");
  $<HTMLInputElement>("dev-room").value = defaultRoom;
  return new Promise((resolve) => {
    $("token-form").onsubmit = (event) => {
      event.preventDefault();
      try {
        resolve(done(signIn($<HTMLTextAreaElement>("token").value)));
      } catch (error) {
        say(explain(error), "error");
      }
    };
    $("dev-form").onsubmit = async (event) => {
      event.preventDefault();
      const key = $<HTMLInputElement>("admin-key").value.trim();
      const user = $<HTMLInputElement>("dev-user").value.trim();
      const room = $<HTMLInputElement>("dev-room").value.trim();
      if (!key || !user || !room) {
        say("Fill in the admin key, a user name and a room.", "error");
        return;
      }
      try {
        await ensureRoom(key, room);
        resolve(done(signIn(await mintToken(key, user, room, grants))));
      } catch (error) {
        say(explain(error), "error");
      }
    };
  });

  function done(session: Session): Session {
    panel.classList.add("hidden");
    out.classList.remove("hidden");
    who.textContent = `${session.claims.name || session.claims.user_id} · ${session.claims.room}`;
    say("Signed in.");
    return session;
  }
}

/** The sign-in markup, shared by the pages (inserted at #signin). */
export const SIGNIN_HTML = `
  <h2>Sign in</h2>
  <form id="token-form" class="row">
    <label>Token <textarea id="token" rows="2" cols="40" autocomplete="off"></textarea></label>
    <button type="submit">Sign in</button>
  </form>
  <details>
    <summary>Dev mode: mint a token with the admin key</summary>
    <form id="dev-form" class="row">
      <label>Admin key <input id="admin-key" type="password" autocomplete="off"></label>
      <label>User <input id="dev-user" value="ann"></label>
      <label>Room <input id="dev-room"></label>
      <button type="submit">Mint and sign in</button>
    </form>
  </details>`;
