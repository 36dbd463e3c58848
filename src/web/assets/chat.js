"use strict";
// The chat column: the party's chat as the server streams it over /chat, drawn like Twitch's,
// and the box where party viewers chat under a nickname.
//
// Every piece of text that comes from chat goes into the page as text (textContent or text
// nodes), never as HTML; images only ever load from Twitch's CDN, for emote ids that match
// a strict pattern and for the badges listed below.
//
// The chat knows nothing of moderation: modtools.js hooks in (see "For the moderator tools")
// to give each line its buttons, follow the room modes and learn the page's role.

(() => {
  const { $, el, str, count, store, takeKey, forgetKey, invite, withInvite, call, ApiError } =
    window.cowatchPage.common;

  // ── Constants ───────────────────────────────────────────────────────────────────────────

  const MAX_LINES = 300;
  const EMOTE_ID = /^[A-Za-z0-9_-]+$/;
  const COLOR = /^#[0-9A-Fa-f]{6}$/;
  const emoteUrl = (id) => "https://static-cdn.jtvnw.net/emoticons/v2/" + id + "/default/dark/1.0";
  const badgeUrl = (uuid) => "https://static-cdn.jtvnw.net/badges/v1/" + uuid + "/1";
  // Twitch's global badges: image id, text shown when the image cannot load, name.
  const BADGES = {
    broadcaster: ["5527c58c-fb7d-422d-b71b-f309dcb85cc1", "▶", "Broadcaster"],
    moderator: ["3267646d-33f0-4b17-b3df-f923a41db1d0", "MOD", "Moderator"],
    vip: ["b817aba4-fad8-49e2-b88a-7cc744dfa6ec", "VIP", "VIP"],
    subscriber: ["5d9f2208-5dd8-11e7-8513-2ff4adfae661", "SUB", "Subscriber"],
    premium: ["bbbe0db0-a598-423e-86d0-f9fb98ca1933", "PRIME", "Prime Gaming"],
    turbo: ["bd444ec6-8f34-4bf9-91f4-af1e3428d80f", "TURBO", "Turbo"],
    partner: ["d12a2e27-16f6-41d0-ab77-b780518f00a3", "✓", "Verified"],
    staff: ["d97c37bd-a6f5-4c38-8f57-4e4bef88af34", "STAFF", "Staff"],
    global_mod: ["9384c43e-4ce7-4e94-b2a1-b93656896eba", "GMOD", "Global moderator"],
    admin: ["9ef7e029-4cdf-4d4d-a0d5-e2b3fb2583fe", "ADMIN", "Admin"],
  };
  // Badges only the server gives, on party lines (no Twitch image): text shown, name.
  const PARTY_BADGES = { host: ["HOST", "Party host"] };
  const NOTICE_KINDS = new Set(["sub", "sub_gift", "sub_mystery_gift", "gift_paid_upgrade", "raid",
    "announcement", "bits_badge_tier", "viewer_milestone", "ritual", "other"]);
  const ANNOUNCEMENT_COLORS = new Set(["PRIMARY", "BLUE", "GREEN", "ORANGE", "PURPLE"]);
  const BANNER = { connecting: "connecting to chat…", reconnecting: "chat reconnecting…" };

  const layout = document.querySelector(".layout");
  const column = $("chat");
  const messages = $("messages");
  const modes = $("chat-modes");
  const banner = $("chat-banner");
  const more = $("chat-more");
  const nickForm = $("nick-form"), nickInput = $("nick-input");
  const sayForm = $("say-form"), sayInput = $("say-input"), sayButton = $("say-send");
  const nickShown = $("nick-shown"), errorLine = $("chat-error");
  const hideButton = $("chat-hide"), showButton = $("chat-show");

  // For diagnostics (and the browser tests).
  const status = { socket: "connecting", link: "unknown", events: 0, resets: 0 };
  window.cowatch.chat = status;

  // ── Hooks (what modtools.js follows) ────────────────────────────────────────────────────
  // The tools hook in rather than being called from here: the chat runs the same without them.

  // Each line's author, for the moderator tools (a Twitch ban needs the user id).
  const senders = new WeakMap();
  const hooks = { line: [], modes: [], role: [] };
  const emit = (kind, ...args) => { for (const hook of hooks[kind]) hook(...args); };

  // ── Images from Twitch's CDN ────────────────────────────────────────────────────────────
  // Images from the CDN show their text first and take its place once loaded, so a slow or
  // unreachable CDN (no internet, a blocked host) leaves readable text, never an empty box.
  // URLs seen to load are shown as images at once; failed ones are not asked for again soon.
  const loaded = new Set();
  const failed = new Map();
  const RETRY_FAILED_MS = 60000;

  function cdnImage(url, fallback, className, alt, title) {
    const failedAt = failed.get(url);
    if (failedAt !== undefined && performance.now() - failedAt < RETRY_FAILED_MS) return fallback;
    const img = document.createElement("img");
    img.className = className;
    img.alt = alt;
    if (title) img.title = title;
    img.decoding = "async";
    img.referrerPolicy = "no-referrer";
    img.addEventListener("error", () => {
      failed.set(url, performance.now());
      loaded.delete(url);
      if (img.isConnected) img.replaceWith(fallback);
    }, { once: true });
    if (loaded.has(url)) {
      img.src = url;
      return img;
    }
    img.addEventListener("load", () => {
      loaded.add(url);
      failed.delete(url);
      // A line deleted or scrolled away meanwhile has let go of its fallback: nothing to swap.
      if (fallback.isConnected) {
        fallback.replaceWith(img);
        // An emote is taller than its text: stay at the newest line if following it.
        if (stick) scheduleSettle();
      }
    }, { once: true });
    img.src = url;
    return fallback;
  }

  // ── Events as lines ─────────────────────────────────────────────────────────────────────
  // Each event becomes one line of the log; a line's data attributes (id, login, origin) are
  // how deletions, clears and the moderator tools find it again.

  function badgeNode(badge) {
    const name = str(badge && badge.name), version = str(badge && badge.version);
    if (Object.hasOwn(PARTY_BADGES, name)) {
      const pill = el("span", "chat-badge b-" + name, PARTY_BADGES[name][0]);
      pill.title = PARTY_BADGES[name][1];
      return pill;
    }
    const known = Object.hasOwn(BADGES, name) ? BADGES[name] : null;
    const title = known ? known[2] : name + (version ? " " + version : "");
    const pill = el("span", "chat-badge", known ? known[1] : name.replace(/[_-]+/g, " ").slice(0, 8).toUpperCase());
    if (known) pill.classList.add("b-" + name);
    pill.title = title;
    return known ? cdnImage(badgeUrl(known[0]), pill, "chat-badge", known[1], title) : pill;
  }

  function badgesNode(list) {
    const span = el("span", "badges");
    if (Array.isArray(list)) for (const b of list) if (b && str(b.name)) span.append(badgeNode(b));
    return span;
  }

  // The text of a message or notice, emotes as images (or their code while they cannot load).
  function textNode(fragments, text) {
    const span = el("span", "text");
    const parts = Array.isArray(fragments) && fragments.length ? fragments : [{ kind: "text", text }];
    for (const part of parts) {
      if (!part) continue;
      if (part.kind === "emote" && typeof part.id === "string" && EMOTE_ID.test(part.id)) {
        const code = str(part.code);
        span.append(cdnImage(emoteUrl(part.id), el("span", "emote-code", code), "emote", code, code));
      } else {
        span.append(document.createTextNode(str(part.text !== undefined ? part.text : part.code)));
      }
    }
    return span;
  }

  function nameNode(user, color) {
    const shown = str(user && user.display_name) || str(user && user.login);
    const login = str(user && user.login);
    // Localised display names (Korean, Japanese…) also show the login, as Twitch does.
    const label = login && shown.toLowerCase() !== login ? shown + " (" + login + ")" : shown;
    const span = el("span", "name", label);
    if (COLOR.test(str(color))) span.style.color = color;
    return span;
  }

  function lineFor(className, ev) {
    const line = el("div", className);
    line.dataset.id = str(ev.id);
    line.dataset.login = str(ev.sender && ev.sender.login);
    line.dataset.origin = ev.origin === "party" ? "party" : "twitch";
    if (Number.isFinite(ev.timestamp_ms)) line.title = new Date(ev.timestamp_ms).toLocaleTimeString();
    return line;
  }

  function renderMessage(ev) {
    const line = lineFor("msg", ev);
    // Who said it, for the moderator tools (a Twitch ban needs the user id).
    senders.set(line, {
      id: str(ev.sender && ev.sender.id),
      login: str(ev.sender && ev.sender.login),
      name: str(ev.sender && ev.sender.display_name) || str(ev.sender && ev.sender.login),
    });
    const party = ev.origin === "party";
    if (party) line.classList.add("party");
    if (ev.first_msg) {
      line.classList.add("first");
      line.append(el("span", "label", "First message"));
    }
    const bits = count(ev.bits);
    if (bits) {
      line.classList.add("bits");
      line.append(el("span", "label", "Cheered " + bits + (bits === 1 ? " bit" : " bits")));
    }
    if (ev.msg_id === "highlighted-message") {
      line.classList.add("highlighted");
      line.append(el("span", "label", "Highlighted message"));
    }
    if (ev.reply && typeof ev.reply === "object") {
      const to = str(ev.reply.user && ev.reply.user.display_name) || str(ev.reply.user && ev.reply.user.login);
      line.append(el("span", "reply", "↪ replying to @" + to + ": " + str(ev.reply.text)));
    }
    line.append(badgesNode(ev.badges));
    if (party) line.append(el("span", "tag party", "party"));
    line.append(nameNode(ev.sender, ev.display_color));
    const text = textNode(ev.fragments, ev.text);
    if (ev.is_action) {
      // `/me`: the text in the name's colour, in italics, without the colon.
      line.classList.add("action");
      line.append(document.createTextNode(" "));
      if (COLOR.test(str(ev.display_color))) text.style.color = ev.display_color;
    } else {
      line.append(document.createTextNode(": "));
    }
    line.append(text);
    emit("line", line);
    return line;
  }

  const NOTICE_TITLES = { announcement: "📣 Announcement" };

  function renderNotice(ev) {
    const event = ev.event && typeof ev.event === "object" ? ev.event : {};
    const kind = NOTICE_KINDS.has(event.kind) ? event.kind : "other";
    const line = lineFor("notice notice-" + kind, ev);
    if (kind === "announcement") {
      const color = ANNOUNCEMENT_COLORS.has(event.color) ? event.color : "PRIMARY";
      line.classList.add("notice-ann-" + color.toLowerCase());
    }
    line.append(el("div", "system", str(ev.system_message) || NOTICE_TITLES[kind] || str(ev.msg_id)));
    if (typeof ev.text === "string" && ev.text) {
      const body = el("div", "body");
      body.append(badgesNode(ev.badges), nameNode(ev.sender, ev.display_color),
        document.createTextNode(": "), textNode(ev.fragments, ev.text));
      line.append(body);
    }
    return line;
  }

  // ── Lines, scrolling, trimming ──────────────────────────────────────────────────────────

  // Whether the view follows the newest line; false once the reader scrolls up.
  let stick = true;
  let settlePending = false;
  // Where the page last scrolled to by itself. Scroll events arrive a frame late, when more
  // lines may have come in below: only a move above this point is the reader's doing.
  let autoTop = 0;

  const atBottom = () => messages.scrollHeight - messages.scrollTop - messages.clientHeight < 40;

  messages.addEventListener("scroll", () => {
    if (messages.scrollTop < autoTop - 2) stick = atBottom();
    else if (atBottom()) stick = true;
    if (stick) more.hidden = true;
  }, { passive: true });

  // The column changing size (the banner, a window resize, a phone turned) must not leave
  // a following view short of the newest line.
  new ResizeObserver(() => { if (stick) scheduleSettle(); }).observe(messages);

  more.addEventListener("click", () => {
    stick = true;
    more.hidden = true;
    messages.scrollTop = messages.scrollHeight;
    autoTop = messages.scrollTop;
  });

  function append(line) {
    messages.append(line);
    if (!stick) more.hidden = false;
    scheduleSettle();
  }

  // Trimming and scrolling once per frame rather than per line keeps a busy chat cheap.
  function scheduleSettle() {
    if (settlePending) return;
    settlePending = true;
    requestAnimationFrame(settle);
    // A hidden tab gets no frames; timers still run there (if slowly), so lines stay bounded.
    setTimeout(settle, 250);
  }

  function settle() {
    if (!settlePending) return;
    settlePending = false;
    const excess = messages.childElementCount - MAX_LINES;
    if (stick) {
      for (let i = 0; i < excess; i++) messages.firstElementChild.remove();
      messages.scrollTop = messages.scrollHeight;
      autoTop = messages.scrollTop;
    } else if (excess > 0) {
      // Keep what the reader is looking at in place while older lines go.
      const before = messages.scrollHeight;
      for (let i = 0; i < excess; i++) messages.firstElementChild.remove();
      messages.scrollTop -= before - messages.scrollHeight;
    }
  }

  function findLine(id) {
    if (!id) return null;
    for (const line of messages.children) if (line.dataset.id === id) return line;
    return null;
  }

  function markDeleted(line) {
    if (line.classList.contains("deleted")) return;
    // The name stays (as on Twitch) so the reader knows whose line it was; the content goes.
    const name = line.classList.contains("msg") ? line.querySelector(":scope > .name") : null;
    line.replaceChildren();
    if (name) line.append(name, document.createTextNode(": "));
    line.append(el("span", "deleted-text", "message deleted"));
    line.classList.remove("first", "bits", "highlighted", "action");
    line.classList.add("deleted");
    // The author can still be timed out or banned from a deleted line.
    emit("line", line);
  }

  // ── Deletions, clears, room modes, the link ─────────────────────────────────────────────

  function systemLine(text) {
    append(el("div", "sys", text));
  }

  function clear(ev) {
    const target = str(ev.target_login);
    if (!target) {
      messages.replaceChildren();
      systemLine("Chat was cleared by a moderator");
      return;
    }
    // A timeout or ban covers the lines of its own side only: a Twitch user's never touches
    // a party nickname that happens to be spelt the same, and the other way round.
    const origin = ev.origin === "party" ? "party" : "twitch";
    for (const line of messages.children) {
      if (line.dataset.origin === origin && line.dataset.login === target) markDeleted(line);
    }
  }

  function duration(seconds) {
    if (seconds % 86400 === 0) return seconds / 86400 + "d";
    if (seconds % 3600 === 0) return seconds / 3600 + "h";
    if (seconds % 60 === 0) return seconds / 60 + "m";
    return seconds + "s";
  }

  function showModes(ev) {
    const chips = [];
    const slow = count(ev.slow_s);
    if (slow) chips.push(["slow " + slow + "s", "Slow mode: one message every " + slow + " s"]);
    if (ev.emote_only) chips.push(["emote-only", "Emote-only chat"]);
    if (ev.followers_only_minutes !== null && ev.followers_only_minutes !== undefined) {
      const min = count(ev.followers_only_minutes);
      chips.push([min ? "followers-only " + duration(min * 60) : "followers-only", "Followers-only chat"]);
    }
    if (ev.subs_only) chips.push(["subs-only", "Subscriber-only chat"]);
    if (ev.r9k) chips.push(["unique chat", "Unique chat: no repeated messages"]);
    modes.replaceChildren(...chips.map(([text, title]) => {
      const chip = el("span", "mode-chip", text);
      chip.title = title;
      return chip;
    }));
    emit("modes", ev);
  }

  function updateBanner() {
    let text = "";
    if (status.socket === "connecting") text = BANNER.connecting;
    else if (status.socket === "closed") text = "chat disconnected, retrying…";
    else text = BANNER[status.link] || "";
    banner.textContent = text;
    banner.hidden = !text;
  }

  function setLink(state) {
    status.link = ["off", "connecting", "connected", "reconnecting"].includes(state) ? state : "unknown";
    column.dataset.linkState = status.link;
    updateBanner();
  }

  function setSocket(state) {
    status.socket = state;
    column.dataset.socket = state;
    updateBanner();
  }

  function reset() {
    status.resets++;
    messages.replaceChildren();
    modes.replaceChildren();
    more.hidden = true;
    stick = true;
    autoTop = 0;
  }

  // ── Events ──────────────────────────────────────────────────────────────────────────────
  // The event types of the server's stream (the chat model in src/chat/); an unknown one is
  // skipped, so an open page survives a newer server.

  function handle(ev) {
    switch (ev.type) {
      case "message":
        if (!findLine(str(ev.id))) append(renderMessage(ev));
        break;
      case "notice":
        if (!findLine(str(ev.id))) append(renderNotice(ev));
        break;
      case "delete": {
        const line = findLine(str(ev.message_id));
        if (line) markDeleted(line);
        break;
      }
      case "clear": clear(ev); break;
      case "room_state": showModes(ev); break;
      case "server_notice": systemLine(str(ev.text)); break;
      case "connection": setLink(ev.state); break;
      case "reset": reset(); break;
      default: break;
    }
  }

  // ── The event stream ────────────────────────────────────────────────────────────────────

  let socketAttempt = 0;

  function connectChat() {
    const url = withInvite("/chat");
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    let sock;
    try {
      sock = new WebSocket(url);
    } catch (e) {
      retryChat();
      return;
    }
    // Every connection starts with a full snapshot: drop what the page shows when it arrives
    // (not on open, so the old lines stay up until the new ones are there).
    let first = true;
    sock.onopen = () => setSocket("open");
    sock.onmessage = (e) => {
      if (typeof e.data !== "string") return;
      // A frame holds one or more events, one JSON object per line (JSON escapes newlines).
      for (const json of e.data.split("\n")) {
        let ev;
        try { ev = JSON.parse(json); } catch { continue; }
        if (!ev || typeof ev !== "object") continue;
        if (first) { first = false; socketAttempt = 0; reset(); }
        status.events++;
        try { handle(ev); } catch (err) { console.warn("chat event not shown:", ev.type, err); }
      }
    };
    sock.onclose = () => {
      sock.onmessage = null;
      retryChat();
    };
  }

  function retryChat() {
    setSocket("closed");
    // Quick first retries, then back off; jitter spreads a server restart's reconnect wave.
    const delay = Math.min(500 * 2 ** Math.min(socketAttempt, 5), 15000) * (0.75 + Math.random() * 0.5);
    socketAttempt++;
    setTimeout(connectChat, delay);
  }

  // ── The nickname rule ───────────────────────────────────────────────────────────────────
  // The server states the rule it applies to nicknames (GET /api/party, `nick_rule`): the page
  // checks a nickname against it before using it, and shows its hint. A server that does not
  // say leaves the checking to itself: its refusal shows when the message is sent.

  const anyNick = { fits: (nick) => nick.length > 0, hint: "", max: Infinity };

  function nickRuleFrom(rule) {
    if (!rule || typeof rule.pattern !== "string") return anyNick;
    let pattern;
    try { pattern = new RegExp(rule.pattern, "u"); } catch { return anyNick; }
    const min = count(rule.min_chars), max = count(rule.max_chars) || Infinity;
    return {
      fits(nick) {
        // Characters as the server counts them: code points, not UTF-16 units.
        const chars = [...nick].length;
        return chars >= min && chars <= max && pattern.test(nick);
      },
      hint: str(rule.hint),
      max,
    };
  }

  // The player goes first (see player.js): nothing of the chat's reaches the server before
  // the first picture is up.
  const playerStarted = window.cowatchPage.player ? window.cowatchPage.player.started : Promise.resolve();

  const nickRule = playerStarted.then(() => call("/api/party")).then((party) => nickRuleFrom(party && party.nick_rule), () => anyNick);

  // ── Party chat: the nickname ────────────────────────────────────────────────────────────

  let nick = store.get("cowatch.nick") || "";
  let sending = false;

  function showError(text) {
    errorLine.textContent = text;
    errorLine.hidden = !text;
  }

  function showNickStep(show) {
    nickForm.hidden = !show;
    sayForm.hidden = show;
    nickShown.textContent = nick;
    if (show) nickInput.value = nick;
  }

  nickRule.then((rule) => {
    // The field stops taking characters where the rule ends.
    if (Number.isFinite(rule.max)) nickInput.maxLength = rule.max;
    // A kept nickname that no longer fits the rule is picked again.
    if (nick && !rule.fits(nick)) {
      nick = "";
      showNickStep(true);
    }
  });

  nickForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    const picked = nickInput.value.trim();
    const rule = await nickRule;
    if (!rule.fits(picked)) {
      showError(rule.hint ? "nickname must be " + rule.hint + "." : "Pick a nickname first.");
      return;
    }
    nick = picked;
    store.set("cowatch.nick", nick);
    showError("");
    showNickStep(false);
    sayInput.focus();
  });

  $("nick-change").addEventListener("click", () => {
    showError("");
    showNickStep(true);
    nickInput.focus();
  });

  // ── Party chat: the session and the page's role ─────────────────────────────────────────
  // The party knows each page by a session (POST /api/session): it keeps the viewer's time in
  // the party across reloads and holds their nickname, so nobody else can post under it.
  // The token is kept for the next visit; an invite code in the page's link goes with it.
  // The page's key (a moderator's or the host's link) goes with it too: the answer says
  // which role the page has.

  const KEY_SLOT = "cowatch.modKey";
  let modKey = takeKey(KEY_SLOT, ["mod", "key"]);
  let session = null;
  let sessionless = false;
  let sessionOpening = null;

  // Resolves to null when there is a session (or the server has none to give), else to the
  // reason there is none.
  function openSession() {
    if (!sessionOpening) {
      sessionOpening = (async () => {
        const body = {};
        const known = store.get("cowatch.session");
        if (known) body.token = known;
        if (invite) body.invite = invite;
        let data;
        try {
          data = await call("/api/session", { method: "POST", key: modKey, json: body });
        } catch (e) {
          // A server without sessions takes party messages as they are.
          if (e.status === 404 || e.status === 405) {
            sessionless = true;
            return null;
          }
          return e.message;
        }
        if (!data || typeof data.token !== "string") return "the server sent no session";
        session = data.token;
        store.set("cowatch.session", session);
        if (data.role === "moderator" || data.role === "host") {
          emit("role", data.role, str(data.moderator_name));
        } else if (modKey) {
          // Revoked, or mistyped: the page is a viewer's, and says so once.
          modKey = null;
          forgetKey(KEY_SLOT);
          showError("this moderator link no longer works: ask the host for a new one");
        }
        const rule = await nickRule;
        if (!nick && typeof data.nick === "string" && rule.fits(data.nick)) {
          nick = data.nick;
          store.set("cowatch.nick", nick);
          showNickStep(false);
        }
        return null;
      })().finally(() => { sessionOpening = null; });
    }
    return sessionOpening;
  }

  const ensureSession = () => (session || sessionless ? Promise.resolve(null) : openSession());

  // ── Party chat: sending ─────────────────────────────────────────────────────────────────

  // Posts `text` under the page's nickname; resolves to the message as the server took it.
  async function say(text) {
    for (let attempt = 0; ; attempt++) {
      try {
        return await call("/api/chat", { method: "POST", json: session ? { session, nick, text } : { nick, text } });
      } catch (e) {
        // A session the server no longer knows (it restarted, or the page slept for long):
        // get a fresh one and try once more.
        if (e.status !== 401 || !session || attempt > 0) throw e;
        session = null;
        const refused = await openSession();
        if (refused) throw new ApiError(0, refused);
      }
    }
  }

  sayForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    const text = sayInput.value;
    if (sending || !text.trim()) return;
    sending = true;
    sayButton.disabled = true;
    showError("");
    try {
      const refused = await ensureSession();
      if (refused) throw new ApiError(0, refused);
      const ev = await say(text);
      sayInput.value = "";
      // Shown from the answer too, in case the stream is slower; the id avoids a repeat.
      if (ev && ev.type === "message" && !findLine(str(ev.id))) {
        stick = true;
        append(renderMessage(ev));
      }
    } catch (e) {
      if (e.status) {
        showError(e.message);
        // A refused or taken nickname: back to picking one.
        if (e.status === 409 || (e.status === 400 && e.message.startsWith("nickname"))) showNickStep(true);
      } else {
        showError("not sent: " + (e instanceof ApiError ? e.message : "the server cannot be reached"));
      }
    } finally {
      sending = false;
      sayButton.disabled = false;
    }
  });

  // ── Where the chat goes ─────────────────────────────────────────────────────────────────
  // Over the video (the default, on a desktop-wide page whose layout burns a chat area into
  // the picture): the live chat is laid exactly over that area, scaled and letterboxed as the
  // video is, so the page shows one chat, under the webcam, as Twitch's Séances ciné did; the
  // video gets the whole width. Beside the video: the column, for viewers who prefer it.
  // Hidden: the composite as it is, burned-in chat included. Phones keep the chat under the
  // video, and a layout without a chat area keeps it beside. The choice is kept per browser.

  const placeButton = $("chat-place");
  const video = $("video");
  const MODES = ["over", "beside", "hidden"];
  let mode = store.get("cowatch.chatMode");
  if (!MODES.includes(mode)) mode = store.get("cowatch.chatHidden") === "1" ? "hidden" : "over";
  /** The mode "Show chat" goes back to. */
  let shownMode = mode === "hidden" ? "over" : mode;
  /** The composite's canvas and chat area (canvas pixels), from /api/party; null without one. */
  let geometry = null;
  // The phone rules of viewer.css, the other way round: where the chat may go over the video.
  const desktop = matchMedia("(min-width: 801px) and (orientation: landscape) and (min-height: 501px)");

  const overlaid = () => mode === "over" && !!geometry && desktop.matches;

  function place(focus) {
    const over = overlaid();
    layout.classList.toggle("chat-over", over);
    layout.classList.toggle("chat-hidden", mode === "hidden");
    showButton.hidden = mode !== "hidden";
    hideButton.setAttribute("aria-expanded", String(mode !== "hidden"));
    placeButton.hidden = !geometry || !desktop.matches;
    const label = over ? "Chat beside the video" : "Chat over the video";
    placeButton.title = label;
    placeButton.setAttribute("aria-label", label);
    placeButton.textContent = over ? "⇥" : "⧉";
    if (over) fit();
    else for (const p of ["left", "top", "width", "height"]) column.style.removeProperty(p);
    if (mode !== "hidden") {
      stick = true;
      autoTop = 0;
      more.hidden = true;
      settlePending = false;
      scheduleSettle();
    }
    if (focus) (mode === "hidden" ? showButton : hideButton).focus();
  }

  /** Lays the column over the chat area where the video shows it (`object-fit: contain`). */
  function fit() {
    const { canvas, chat } = geometry;
    const box = video.getBoundingClientRect(), page = layout.getBoundingClientRect();
    const scale = Math.min(box.width / canvas.width, box.height / canvas.height);
    if (!(scale > 0)) return;
    const left = box.left - page.left + (box.width - canvas.width * scale) / 2;
    const top = box.top - page.top + (box.height - canvas.height * scale) / 2;
    column.style.left = `${left + chat.x * scale}px`;
    column.style.top = `${top + chat.y * scale}px`;
    column.style.width = `${chat.width * scale}px`;
    column.style.height = `${chat.height * scale}px`;
  }

  function choose(next, focus) {
    mode = next;
    if (mode !== "hidden") shownMode = mode;
    store.set("cowatch.chatMode", mode);
    place(focus);
  }

  hideButton.addEventListener("click", () => choose("hidden", true));
  showButton.addEventListener("click", () => choose(shownMode, true));
  placeButton.addEventListener("click", () => choose(overlaid() ? "beside" : "over", false));
  desktop.addEventListener("change", () => place(false));
  new ResizeObserver(() => { if (overlaid()) fit(); }).observe(video);
  // Fullscreen takes the whole page, not the video element alone: the chat area is part of
  // the picture, so the overlaid chat stays.
  $("video").closest(".player").addEventListener("dblclick", (e) => {
    if (e.target.closest("button, select, label")) return;
    if (document.fullscreenElement) document.exitFullscreen().catch(() => {});
    else layout.requestFullscreen().catch(() => {});
  });

  /** The layout's chat area, asked every second while the page is seen: the host may switch
   *  layouts while live. */
  function loadGeometry() {
    call("/api/party").then((party) => {
      const g = party && party.geometry;
      const next = g && g.chat ? { canvas: g.canvas, chat: g.chat } : null;
      if (JSON.stringify(next) !== JSON.stringify(geometry)) {
        geometry = next;
        place(false);
      }
    }, () => {}).finally(() => setTimeout(loadGeometry, document.hidden ? 5000 : 1000));
  }

  // ── What modtools.js uses ───────────────────────────────────────────────────────────────
  // The chat itself depends on none of it.

  window.cowatchPage.chat = {
    column,
    messages,
    status,
    duration,
    /** The page's key (a moderator's or the host's link), null without one. */
    key: () => modKey,
    /** Who wrote a message line: { id, login, name }. */
    senderOf: (line) => senders.get(line),
    /** `hook(line)` for each message line shown or deleted. */
    onLine: (hook) => hooks.line.push(hook),
    /** `hook(modes)` for each change of the room's modes. */
    onModes: (hook) => hooks.modes.push(hook),
    /** `hook(role, name)` once the server says the page is a moderator's or the host's. */
    onRole: (hook) => hooks.role.push(hook),
  };

  // ── Start ───────────────────────────────────────────────────────────────────────────────
  // The socket and the session start once every script of the page has run, so the
  // moderator tools see the first line and the page's role, and once the player has its first
  // picture, so the backlog's drawing never holds it up.

  place(false);
  showNickStep(!nick);
  updateBanner();
  document.addEventListener("DOMContentLoaded", () => {
    playerStarted.then(() => {
      loadGeometry();
      connectChat();
      openSession().then((refused) => { if (refused) showError(refused); });
    });
  });
})();
