"use strict";
// Moderator tools, for a page opened from a moderator's link (#mod=…) or the host's (#key=…).
//
// Shown only when the server says this page's key is a moderator's or the host's (chat.js
// learns it with the session and tells us through its hooks). Every action goes to
// POST /api/mod; what it does to the chat (a line deleted, a user's lines cleared, new room
// modes) comes back through the socket, for everyone alike, so nothing here changes the lines
// itself. Every action ends in a toast: what was done, the server's reason for refusing, or
// Twitch's refusal when the party applied it but Twitch did not.

(() => {
  const { $, el, str, count, button, choose, toaster, call } = window.cowatchPage.common;
  const chat = window.cowatchPage.chat;

  // ── State and elements ──────────────────────────────────────────────────────────────────

  // For diagnostics (and the browser tests); never the key.
  const mod = { on: false, role: "viewer", name: "", toasts: [], busy: 0 };
  chat.status.mod = mod;
  const modBadge = $("mod-badge"), modToggle = $("mod-toggle"), modPanel = $("mod-panel");
  const modMenu = $("mod-menu"), modToast = $("mod-toast");
  const slowSelect = $("mod-slow"), emoteBox = $("mod-emote"), followersSelect = $("mod-followers");
  const subsBox = $("mod-subs"), partySelect = $("mod-party"), partyMinForm = $("mod-party-min-form");
  const partyMin = $("mod-party-min"), termList = $("mod-terms"), termForm = $("mod-term-form");
  const termInput = $("mod-term"), banList = $("mod-bans"), clearButton = $("mod-clear");
  const twitchNote = $("mod-twitch-note");

  const TIMEOUTS = [[60, "1 min"], [600, "10 min"], [3600, "1 hour"], [86400, "24 hours"]];

  // ── Turning the tools on ────────────────────────────────────────────────────────────────

  function startModerating(role, name) {
    if (mod.on) return;
    mod.on = true;
    mod.role = role;
    mod.name = name;
    chat.column.classList.add("moderating");
    modBadge.hidden = false;
    modBadge.title = role === "host" ? "You are the host: moderator tools are on"
      : "Moderating as " + (name || "a moderator");
    modToggle.hidden = false;
    for (const line of chat.messages.children) decorate(line);
    refreshState();
  }

  chat.onRole(startModerating);
  // Lines shown from then on get their buttons as they come (earlier ones in startModerating).
  chat.onLine((line) => { if (mod.on) decorate(line); });
  chat.onModes((modes) => { if (mod.on) syncRoom(modes); });

  // ── The buttons on each line ────────────────────────────────────────────────────────────

  // Who a line's author is, as an action's target.
  function targetOf(line) {
    const who = chat.senderOf(line);
    if (!who || !who.login) return null;
    const origin = line.dataset.origin === "party" ? "party" : "twitch";
    const target = { origin, login: who.login };
    // A party nickname has no Twitch id; a Twitch user's saves the server a look-up.
    if (origin === "twitch" && who.id) target.user_id = who.id;
    return { target, name: who.name || who.login };
  }

  // The hover (or focus) buttons of one message line.
  function decorate(line) {
    if (!line.classList.contains("msg") || line.querySelector(":scope > .mod-tools")) return;
    const author = targetOf(line);
    const id = line.dataset.id;
    if (!author && !id) return;
    const tools = el("span", "mod-tools");
    tools.setAttribute("role", "group");
    tools.setAttribute("aria-label", "Moderate" + (author ? " " + author.name : ""));
    if (id && !line.classList.contains("deleted")) {
      tools.append(button("🗑", "Delete this message", "mod-delete",
        () => act({ action: "delete_message", message_id: id }, "Message deleted")));
    }
    if (author) {
      tools.append(button("⏱", "Time out " + author.name + "…", "mod-timeout",
        (e) => openTimeoutMenu(e.currentTarget, author)));
      tools.append(button("⛔", "Ban " + author.name, "mod-ban",
        () => act({ action: "ban", target: author.target, reason: null }, author.name + " banned")));
      // A party viewer can also be kept from watching: their session's next WHEP offer is
      // refused, whatever nickname it uses.
      if (author.target.origin === "party") {
        tools.append(button("🚫", "Ban " + author.name + " from the party (chat and video)", "mod-ban-party",
          () => act({ action: "ban", target: author.target, reason: null, whole_party: true },
            author.name + " banned from the party")));
      }
    }
    line.append(tools);
  }

  // ── The timeout menu ────────────────────────────────────────────────────────────────────

  let menuOpener = null;

  function closeMenu(refocus) {
    if (modMenu.hidden) return;
    modMenu.hidden = true;
    modMenu.replaceChildren();
    if (refocus && menuOpener && menuOpener.isConnected) menuOpener.focus();
    menuOpener = null;
  }

  function openTimeoutMenu(opener, author) {
    closeMenu(false);
    menuOpener = opener;
    const timeout = (seconds) => {
      closeMenu(true);
      act({ action: "timeout", target: author.target, seconds },
        author.name + " timed out for " + chat.duration(seconds));
    };
    modMenu.append(el("div", "menu-title", "Time out " + author.name));
    for (const [seconds, label] of TIMEOUTS) {
      const item = button(label, "Time out for " + label, "", () => timeout(seconds));
      item.setAttribute("role", "menuitem");
      item.dataset.seconds = String(seconds);
      modMenu.append(item);
    }
    const custom = document.createElement("form");
    const input = document.createElement("input");
    input.type = "number";
    input.min = "1";
    input.max = "1209600";
    input.placeholder = "seconds";
    input.setAttribute("aria-label", "Custom timeout in seconds");
    const go = el("button", "", "Time out");
    go.type = "submit";
    custom.append(input, go);
    custom.addEventListener("submit", (e) => {
      e.preventDefault();
      const seconds = Number(input.value);
      if (!Number.isInteger(seconds) || seconds < 1 || seconds > 1209600) {
        toast("A timeout is 1 to 1,209,600 seconds (two weeks).", true);
        input.focus();
        return;
      }
      timeout(seconds);
    });
    modMenu.append(custom);
    modMenu.hidden = false;
    // Beside the button, inside the chat column whatever the line's place.
    const wrap = modMenu.offsetParent.getBoundingClientRect();
    const at = opener.getBoundingClientRect();
    const top = Math.min(at.bottom - wrap.top + 2, wrap.height - modMenu.offsetHeight - 4);
    modMenu.style.top = Math.max(4, top) + "px";
    modMenu.style.left = Math.max(4, Math.min(at.right - wrap.left - modMenu.offsetWidth, wrap.width - modMenu.offsetWidth - 4)) + "px";
    modMenu.querySelector("button").focus();
  }

  modMenu.addEventListener("keydown", (e) => {
    if (e.key === "Escape") { e.preventDefault(); closeMenu(true); }
  });
  document.addEventListener("pointerdown", (e) => {
    if (!modMenu.hidden && !modMenu.contains(e.target) && e.target !== menuOpener) closeMenu(false);
  });
  // The line under the menu may scroll away.
  chat.messages.addEventListener("scroll", () => closeMenu(false), { passive: true });

  // ── Actions and their outcome ───────────────────────────────────────────────────────────

  const showToast = toaster(modToast, 4000, 12000);

  function toast(text, error) {
    mod.toasts.push({ text, error: Boolean(error) });
    if (mod.toasts.length > 20) mod.toasts.shift();
    showToast(text, error);
  }

  modToast.addEventListener("click", () => { modToast.hidden = true; });

  /** The API with the page's key. */
  const modCall = (path, options) => call(path, { ...options, key: chat.key() });

  // Sends one action; resolves to the server's answer, or null when it was not applied.
  async function act(action, done) {
    mod.busy++;
    try {
      let answer;
      try {
        answer = await modCall("/api/mod", { method: "POST", json: action });
      } catch (e) {
        toast(e.status ? "Not done: " + e.message : "Not done: the server cannot be reached.", true);
        return null;
      }
      const twitch = answer && answer.twitch;
      if (twitch && twitch.ok === false) {
        toast(done + " in the party. Twitch refused: " + (str(twitch.error) || "no reason given"), true);
      } else {
        toast(done + (twitch && twitch.ok ? " (party and Twitch)." : "."), false);
      }
      return answer;
    } finally {
      mod.busy--;
      refreshState();
    }
  }

  // ── The panel: opening and closing ──────────────────────────────────────────────────────

  modToggle.addEventListener("click", () => {
    const open = modPanel.hidden;
    modPanel.hidden = !open;
    modToggle.setAttribute("aria-expanded", String(open));
    if (open) {
      refreshState();
      modPanel.querySelector("button, select, input").focus();
    }
  });

  modPanel.addEventListener("keydown", (e) => {
    if (e.key === "Escape") {
      modPanel.hidden = true;
      modToggle.setAttribute("aria-expanded", "false");
      modToggle.focus();
    }
  });

  // ── The panel: the state of the room ────────────────────────────────────────────────────
  // The panel shows the room as the server has it; a mode set elsewhere (Twitch mods may have
  // set 45 s slow mode from Twitch) is added to its list.

  function syncRoom(room) {
    if (!room || typeof room !== "object") return;
    const slow = count(room.slow_s);
    choose(slowSelect, String(slow), slow + " s");
    emoteBox.checked = Boolean(room.emote_only);
    subsBox.checked = Boolean(room.subs_only);
    const followers = room.followers_only_minutes;
    if (followers === null || followers === undefined) followersSelect.value = "";
    else choose(followersSelect, String(count(followers)), "following " + count(followers) + " min");
  }

  function syncPartyChat(mode) {
    if (mode && typeof mode === "object" && Number.isFinite(mode.min_minutes)) {
      partySelect.value = "min";
      if (document.activeElement !== partyMin) partyMin.value = String(mode.min_minutes);
      partyMinForm.hidden = false;
    } else {
      partySelect.value = mode === "closed" ? "closed" : "open";
      partyMinForm.hidden = true;
    }
  }

  function when(ms) {
    const d = new Date(ms);
    return Date.now() - ms < 86400000 && d.getDate() === new Date().getDate()
      ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
      : d.toLocaleString([], { dateStyle: "short", timeStyle: "short" });
  }

  function showTerms(terms) {
    const items = terms.filter((t) => t && str(t.term)).map((t) => {
      const li = el("li");
      const label = el("span", "", t.term);
      if (str(t.by)) label.append(el("small", "", "added by " + t.by));
      li.append(label, button("Remove", "Stop blocking “" + t.term + "”", "",
        () => act({ action: "remove_blocked_term", term: t.term }, "“" + t.term + "” no longer blocked")));
      return li;
    });
    termList.replaceChildren(...(items.length ? items : [el("li", "empty", "No blocked terms.")]));
  }

  function showBans(bans) {
    const now = Date.now();
    const items = bans
      .filter((b) => b && str(b.login) && !(Number.isFinite(b.expires_at_ms) && b.expires_at_ms <= now))
      .map((b) => {
        const origin = b.origin === "party" ? "party" : "twitch";
        const li = el("li");
        const label = el("span");
        label.append(el("span", "tag " + (origin === "party" ? "party" : ""), origin), document.createTextNode(b.login));
        const timed = Number.isFinite(b.expires_at_ms);
        let detail = timed ? "timed out until " + when(b.expires_at_ms) : "banned";
        if (str(b.by)) detail += " by " + b.by;
        if (str(b.reason)) detail += ": " + b.reason;
        label.append(el("small", "", detail));
        const target = { origin, login: b.login };
        if (origin === "twitch" && str(b.user_id)) target.user_id = b.user_id;
        li.append(label, button(timed ? "Lift" : "Unban", (timed ? "Lift the timeout of " : "Unban ") + b.login, "mod-unban",
          () => act({ action: "unban", target }, b.login + (timed ? "'s timeout lifted" : " unbanned"))));
        li.dataset.login = b.login;
        li.dataset.origin = origin;
        return li;
      });
    banList.replaceChildren(...(items.length ? items : [el("li", "empty", "Nobody is banned.")]));
  }

  let refreshing = null, refreshAgain = false;

  // Reads bans, terms and modes again; calls made while one is on its way are folded into
  // one more after it.
  function refreshState() {
    if (!mod.on) return;
    if (refreshing) { refreshAgain = true; return; }
    refreshing = (async () => {
      let state;
      try {
        state = await modCall("/api/mod/state");
      } catch (e) {
        // The socket's banner already says when the server is away.
        if (e.status) toast("Cannot read the moderation state: " + e.message, true);
        return;
      }
      if (!state) return;
      showBans(Array.isArray(state.bans) ? state.bans : []);
      showTerms(Array.isArray(state.blocked_terms) ? state.blocked_terms : []);
      syncRoom(state.room);
      syncPartyChat(state.party_chat);
      twitchNote.hidden = state.forwards_to_twitch !== false;
    })().finally(() => {
      refreshing = null;
      if (refreshAgain) { refreshAgain = false; refreshState(); }
    });
  }

  // ── The panel's controls ────────────────────────────────────────────────────────────────

  let clearArmed = null;
  clearButton.addEventListener("click", () => {
    // Clearing everyone's chat cannot be undone: the first click only arms the button.
    if (!clearArmed) {
      clearButton.textContent = "Click again to clear";
      clearButton.classList.add("armed");
      clearArmed = setTimeout(disarmClear, 4000);
      return;
    }
    disarmClear();
    act({ action: "clear_chat" }, "Chat cleared");
  });

  function disarmClear() {
    clearTimeout(clearArmed);
    clearArmed = null;
    clearButton.textContent = "Clear chat";
    clearButton.classList.remove("armed");
  }

  slowSelect.addEventListener("change", () => {
    const seconds = Number(slowSelect.value);
    act({ action: "slow", seconds }, seconds ? "Slow mode: " + seconds + " s" : "Slow mode off");
  });
  emoteBox.addEventListener("change", () => {
    act({ action: "emote_only", on: emoteBox.checked }, "Emote-only " + (emoteBox.checked ? "on" : "off"));
  });
  subsBox.addEventListener("change", () => {
    act({ action: "subs_only", on: subsBox.checked }, "Subs-only " + (subsBox.checked ? "on" : "off"));
  });
  followersSelect.addEventListener("change", () => {
    const minutes = followersSelect.value === "" ? null : Number(followersSelect.value);
    act({ action: "followers_only", minutes },
      minutes === null ? "Followers-only off" : "Followers-only" + (minutes ? ": " + minutes + " min" : " on"));
  });

  function setPartyChat(mode, done) {
    act({ action: "party_chat", mode }, done);
  }

  partySelect.addEventListener("change", () => {
    if (partySelect.value === "min") {
      partyMinForm.hidden = false;
      partyMinForm.requestSubmit();
    } else {
      partyMinForm.hidden = true;
      setPartyChat(partySelect.value, partySelect.value === "closed" ? "Party chat closed" : "Party chat open to everyone");
    }
  });
  partyMinForm.addEventListener("submit", (e) => {
    e.preventDefault();
    const minutes = Number(partyMin.value);
    if (!Number.isInteger(minutes) || minutes < 1) {
      toast("Give the minutes as a whole number, 1 or more.", true);
      return;
    }
    setPartyChat({ min_minutes: minutes }, "Party chat: viewers in the party for " + minutes + " min or more");
  });

  termForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    const term = termInput.value.trim();
    if (!term) return;
    if (await act({ action: "add_blocked_term", term }, "“" + term + "” blocked")) termInput.value = "";
  });
})();
