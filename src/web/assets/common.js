"use strict";
// What both pages need: the key in the link, the party's invite, the server's API and a few
// DOM helpers.
//
// The pages load plain deferred scripts, as written (no modules, no build step: a module's
// imports would bypass the `?v=` that lets the browser cache every file for good). The scripts
// share one namespace, `cowatchPage`: this file opens it with `common`, and every later script
// adds its own part. A page lists its scripts in the order they run, this one first.
//
// Everything that comes from the server or from people (nicknames, labels, titles, chat) goes
// into the page as text (textContent, text nodes), never as HTML.

window.cowatchPage = {};

window.cowatchPage.common = (() => {
  // ── Storage that may be off ───────────────────────────────────────────────────────────
  // Private browsing or a strict setting can turn web storage off or make it throw: the page
  // then keeps what it knows for this load only.

  function safeStorage(area) {
    return {
      get(key) { try { return area().getItem(key); } catch { return null; } },
      set(key, value) { try { area().setItem(key, value); } catch { /* this load only */ } },
      remove(key) { try { area().removeItem(key); } catch { /* nothing kept */ } },
    };
  }

  /** Kept across visits: the nickname, the session, the column folded away. */
  const store = safeStorage(() => localStorage);
  /** Kept for this tab only: keys. */
  const tabStore = safeStorage(() => sessionStorage);

  // ── The key in the link ───────────────────────────────────────────────────────────────
  // The host's link (#key=…) and a moderator's (#mod=…) carry a key in the fragment, which the
  // browser never sends anywhere. It is kept for this tab only and taken off the address bar
  // at once, so it does not end up in a bookmark, a history entry or a screenshot. It only
  // ever travels as `Authorization: Bearer`, and is never logged.

  /** The key in the fragment under one of `names` (the last one present wins), kept in this
   *  tab's `slot`; without one in the link, the key this tab kept before. An empty one
   *  forgets the kept key. */
  function takeKey(slot, names) {
    const hash = new URLSearchParams(location.hash.slice(1));
    let found = false;
    let key = null;
    for (const name of names) {
      if (!hash.has(name)) continue;
      found = true;
      key = (hash.get(name) || "").trim() || key;
      hash.delete(name);
    }
    if (!found) return tabStore.get(slot);
    const rest = hash.toString();
    history.replaceState(history.state, "", location.pathname + location.search + (rest ? "#" + rest : ""));
    if (key) tabStore.set(slot, key);
    else tabStore.remove(slot);
    return key;
  }

  /** Forgets the key kept in `slot` (refused by the server, or revoked). */
  function forgetKey(slot) {
    tabStore.remove(slot);
  }

  // ── The invite ────────────────────────────────────────────────────────────────────────
  // An invite-only party's link carries ?invite=CODE: WHEP, the chat socket and the session
  // need it too.

  const invite = new URLSearchParams(location.search).get("invite");

  /** `path` on this server, with the page's invite when it has one. */
  function withInvite(path) {
    const url = new URL(path, location.href);
    if (invite) url.searchParams.set("invite", invite);
    return url;
  }

  // ── The API ───────────────────────────────────────────────────────────────────────────
  // The server refuses with a status and one line of plain text saying why: that line is
  // what the pages show. Status 0 stands for a server that cannot be reached.

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  /** The server's one-line reason for refusing `response`. */
  async function reasonOf(response) {
    const text = await response.text().catch(() => "");
    return text.trim().split("\n")[0].slice(0, 400) || "HTTP " + response.status;
  }

  /** Calls `path` on this server, `json` as the body and `key` as the Bearer. Resolves to the
   *  answer's JSON (null when it has none); rejects with an ApiError. */
  async function call(path, { method = "GET", key = null, json, cache } = {}) {
    const init = { method, headers: {} };
    if (key) init.headers.Authorization = "Bearer " + key;
    if (cache) init.cache = cache;
    if (json !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(json);
    }
    let response;
    try {
      response = await fetch(new URL(path, location.href), init);
    } catch {
      throw new ApiError(0, "the server cannot be reached");
    }
    if (!response.ok) throw new ApiError(response.status, await reasonOf(response));
    const type = response.headers.get("Content-Type") || "";
    return type.includes("json") ? response.json().catch(() => null) : null;
  }

  // ── Reading what the server sent ──────────────────────────────────────────────────────
  // Its JSON is read defensively: a missing or odd field shows as nothing, never as an error.

  const str = (v) => (typeof v === "string" ? v : "");
  const count = (v) => (Number.isFinite(v) && v > 0 ? v : 0);

  // ── DOM helpers ───────────────────────────────────────────────────────────────────────

  const $ = (id) => document.getElementById(id);

  /** An element with a class and its text (as text, never HTML). */
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text != null) node.textContent = String(text);
    return node;
  }

  /** A button that does `onClick`; `label`, when given, names it for tooltips and readers. */
  function button(text, label, className, onClick) {
    const node = el("button", className, text);
    node.type = "button";
    if (label) {
      node.title = label;
      node.setAttribute("aria-label", label);
    }
    node.addEventListener("click", onClick);
    return node;
  }

  /** Sets `select` to `value`, adding it (shown as `label`) when the list lacks it: the server
   *  may know more choices than the page (a layout from a file, a slow mode set on Twitch). */
  function choose(select, value, label) {
    if (![...select.options].some((o) => o.value === value)) select.append(new Option(label, value));
    select.value = value;
  }

  /** Shows a message in `node` for a while: `okMs`, or `errorMs` for a refusal, which is
   *  what must be read. Returns `show(text, error)`. */
  function toaster(node, okMs, errorMs) {
    let timer = 0;
    return (text, error) => {
      node.textContent = text;
      node.classList.toggle("error", Boolean(error));
      node.hidden = false;
      clearTimeout(timer);
      timer = setTimeout(() => { node.hidden = true; }, error ? errorMs : okMs);
    };
  }

  return {
    store, takeKey, forgetKey, invite, withInvite,
    ApiError, reasonOf, call, str, count,
    $, el, button, choose, toaster,
  };
})();
