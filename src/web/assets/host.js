"use strict";
// The host's dashboard: the party's library, going live, the live controls, who is watching,
// each viewer's video stream (its quality and link, to see who struggles), the link to share
// and the moderator links. It polls the API with the host key (from the link's #key=, see
// common.js) and shows what the server says; every control is one call.
//
// Everything the server sends (titles come from file names, labels and nicknames from
// people) is put into the page with textContent, never as HTML.

(() => {
  const { $, el, button, choose, toaster, takeKey, forgetKey, call, ApiError } = window.cowatchPage.common;

  const KEY_SLOT = "cowatch.host-key";
  const NEEDS_KEY = "This page needs the host link printed when cowatch started.";
  const PARTY_EVERY_MS = 1000;
  const VIEWERS_EVERY_MS = 3000;
  const LIBRARY_PROBING_MS = 2000;
  const LIBRARY_IDLE_MS = 15000;

  /** The page's state between polls. */
  const st = {
    key: null,
    locked: false,           // the key was refused: nothing more is asked of the server
    party: null,             // latest GET /api/party
    library: null,           // latest GET /api/library (null: none, or not loaded yet)
    hasLibrary: true,
    selected: null,          // the title id chosen in the grid
    setupTouched: false,     // the host changed the go-live switches: stop mirroring the pipeline
    scrubbing: false,        // the host holds the timeline: the poll must not move it
    shownTitle: null,        // the movie the timeline shows
    revealed: null,          // id of the moderator whose new link is on show
  };

  // ── the key ───────────────────────────────────────────────────────────────────────────

  /** Stops everything and says which link to open. */
  function needsKey() {
    if (st.locked) return;
    st.locked = true;
    st.key = null;
    forgetKey(KEY_SLOT);
    $("dash").hidden = true;
    $("gate").hidden = false;
    $("gate-text").textContent = NEEDS_KEY;
    $("live-badge").hidden = true;
    $("viewer-chip").hidden = true;
    $("conn").hidden = true;
    document.body.dataset.state = "needs-key";
  }

  // A host link pasted into this tab later: start over with it.
  addEventListener("hashchange", () => {
    if (new URLSearchParams(location.hash.slice(1)).get("key")) {
      takeKey(KEY_SLOT, ["key"]);
      location.reload();
    }
  });

  // ── the API ───────────────────────────────────────────────────────────────────────────

  /** Calls the API with the host key (fresh, never from the cache); resolves to the JSON
   *  answer, rejects with an ApiError carrying the server's one-line reason. A refused key
   *  locks the page. */
  async function api(method, path, json) {
    if (st.locked) throw new ApiError(0, NEEDS_KEY);
    try {
      return await call(path, { method, key: st.key, json, cache: "no-store" });
    } catch (e) {
      if (e.status === 401 || e.status === 403) {
        needsKey();
        throw new ApiError(e.status, NEEDS_KEY);
      }
      if (!e.status) throw new ApiError(0, "cowatch does not answer (is it still running?)");
      throw e;
    }
  }

  /** A short message at the bottom; errors stay longer. */
  const toast = toaster($("toast"), 3000, 8000);

  /** Runs an action for `button` (disabled meanwhile), shows a failure as a toast and
   *  refreshes what the action may have changed. */
  async function act(button, action, after) {
    if (button) { button.disabled = true; button.setAttribute("aria-busy", "true"); }
    try {
      return await action();
    } catch (e) {
      if (!st.locked) toast(e.message, true);
      return undefined;
    } finally {
      if (button) { button.removeAttribute("aria-busy"); button.disabled = false; }
      if (after && !st.locked) await after();
    }
  }

  const busy = (el) => el.getAttribute("aria-busy") === "true";

  /** Runs `fn` now and every `ms` (after each run finishes) until the page is locked. */
  function every(ms, fn) {
    const tick = async () => {
      if (st.locked) return;
      try { await fn(); } catch (_) { /* each poller reports its own trouble */ }
      if (!st.locked) setTimeout(tick, typeof ms === "function" ? ms() : ms);
    };
    tick();
  }

  // ── formatting ────────────────────────────────────────────────────────────────────────

  /** Seconds as h:mm:ss. */
  function hms(seconds) {
    if (seconds == null || !Number.isFinite(seconds)) return "–:––:––";
    const s = Math.max(0, Math.floor(seconds));
    const pad = (n) => String(n).padStart(2, "0");
    return `${Math.floor(s / 3600)}:${pad(Math.floor(s / 60) % 60)}:${pad(s % 60)}`;
  }

  /** A stay's length in words: "3 min", "1 h 05 min". */
  function stay(seconds) {
    const m = Math.floor(seconds / 60);
    if (m < 1) return "just joined";
    if (m < 60) return `${m} min`;
    return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")} min`;
  }

  // ── library ───────────────────────────────────────────────────────────────────────────

  /** One card per title id, kept across polls so thumbnails load once. */
  const cards = new Map();

  function makeCard(id) {
    const button = el("button", "title");
    button.type = "button";
    button.dataset.id = id;
    const thumb = el("span", "thumb");
    const name = el("span", "name");
    const meta = el("span", "meta");
    const now = el("span", "now", "Now playing");
    now.hidden = true;
    button.append(thumb, name, meta, now);
    button.addEventListener("click", () => select(id));
    return { button, thumb, name, meta, now, img: null };
  }

  /** Fetches a thumbnail with the key in a header and shows it from a blob URL: an `<img src>`
   *  would carry the key in its URL, where proxies and access logs keep it. */
  async function loadThumbnail(img, id) {
    try {
      const response = await fetch(`/api/library/${encodeURIComponent(id)}/thumbnail`, {
        headers: { Authorization: "Bearer " + st.key },
      });
      if (!response.ok) throw new Error(String(response.status));
      const url = URL.createObjectURL(await response.blob());
      img.addEventListener("load", () => URL.revokeObjectURL(url), { once: true });
      img.src = url;
    } catch {
      img.dispatchEvent(new Event("error"));
    }
  }

  function updateCard(card, t, current) {
    card.button.classList.toggle("error", !!t.error);
    card.button.disabled = !!t.error;
    card.button.title = t.error ? `${t.name}: ${t.error}` : t.name;
    card.button.setAttribute("aria-pressed", String(st.selected === t.id));
    card.name.textContent = t.name;
    if (t.error) card.meta.textContent = t.error;
    else if (!t.probed) card.meta.textContent = "probing…";
    else card.meta.textContent = t.duration_s == null ? "length unknown" : hms(Math.round(t.duration_s));
    card.now.hidden = current !== t.id;
    if (t.has_thumbnail && !card.img) {
      const img = new Image();
      img.alt = "";
      img.decoding = "async";
      img.addEventListener("error", () => {
        img.remove();
        card.thumb.textContent = "no picture";
      });
      loadThumbnail(img, t.id);
      card.img = img;
      card.thumb.textContent = "";
      card.thumb.append(img);
    } else if (!t.has_thumbnail) {
      card.img = null;
      card.thumb.textContent = t.error ? "⚠" : t.probed ? "no picture" : "…";
    }
  }

  function renderLibrary() {
    const lib = st.library;
    const grid = $("library");
    const note = $("library-note");
    if (!lib) { grid.hidden = true; return; }
    grid.hidden = false;
    const seen = new Set();
    lib.titles.forEach((t, i) => {
      let card = cards.get(t.id);
      if (!card) { card = makeCard(t.id); cards.set(t.id, card); }
      if (t.error && st.selected === t.id) st.selected = null;
      updateCard(card, t, lib.current);
      if (grid.children[i] !== card.button) grid.insertBefore(card.button, grid.children[i] || null);
      seen.add(t.id);
    });
    for (const [id, card] of cards) {
      if (!seen.has(id)) { card.button.remove(); cards.delete(id); }
    }
    if (st.selected && !seen.has(st.selected)) st.selected = null;
    note.hidden = lib.titles.length > 0;
    if (!lib.titles.length) note.textContent = "The library folder has no movies.";
    renderSelection();
  }

  function select(id) {
    st.selected = st.selected === id ? null : id;
    for (const [cid, card] of cards) card.button.setAttribute("aria-pressed", String(st.selected === cid));
    renderSelection();
  }

  function selectedTitle() {
    return st.library && st.library.titles.find((t) => t.id === st.selected);
  }

  function renderSelection() {
    const t = selectedTitle();
    const current = st.library && st.library.current;
    $("selected-name").textContent = t ? `Selected: ${t.name}` : "Select a title to switch to it.";
    const play = $("play-selected");
    if (!busy(play)) play.disabled = !t || t.id === current;
  }

  async function loadLibrary() {
    if (!st.hasLibrary) return;
    try {
      st.library = await api("GET", "/api/library");
    } catch (e) {
      if (e.status === 404) {
        // Started without --library: the party plays the movie it was started with.
        st.hasLibrary = false;
        st.library = null;
        const note = $("library-note");
        note.hidden = false;
        note.textContent = e.message;
        $("library").hidden = true;
        renderSelection();
        return;
      }
      throw e;
    }
    renderLibrary();
  }

  function libraryEvery() {
    const probing = st.library && st.library.titles.some((t) => !t.probed);
    return probing ? LIBRARY_PROBING_MS : LIBRARY_IDLE_MS;
  }

  // ── party state ───────────────────────────────────────────────────────────────────────

  const LAYOUT_NAMES = { "side-panel": "Side panel", inset: "Inset" };

  // Both layout lists (going live, live) offer the built-in layouts.
  for (const select of [$("setup-layout"), $("live-layout")]) {
    for (const [value, name] of Object.entries(LAYOUT_NAMES)) select.append(new Option(name, value));
  }

  /** Sets a layout select, adding an option for a layout loaded from a file. */
  function showLayout(select, name) {
    if (name) choose(select, name, LAYOUT_NAMES[name] || name);
  }

  /** A switch from a webcam or mic state: none configured → disabled. */
  function showSwitch(input, sub, state, offWord) {
    input.disabled = state === "none" || busy(input);
    if (!busy(input)) input.checked = state === "live" || state === "lost";
    if (sub) {
      sub.textContent = state === "none" ? "(none configured)"
        : state === "lost" ? "(lost, retrying)"
        : state === offWord ? "(off)" : "";
    }
  }

  async function loadParty() {
    let p;
    try {
      p = await api("GET", "/api/party");
    } catch (e) {
      if (st.locked) return;
      $("conn").hidden = false;
      $("conn").textContent = e.message;
      return;
    }
    $("conn").hidden = true;
    st.party = p;
    renderParty();
  }

  function renderParty() {
    const p = st.party;
    if (!p) return;
    const badge = $("live-badge");
    badge.textContent = p.live ? "Live" : "Offline";
    badge.classList.toggle("live", p.live);
    const chip = $("viewer-chip");
    chip.hidden = false;
    chip.textContent = `${p.viewers} / ${p.max_viewers} watching`;

    $("setup").hidden = p.live;
    $("switch-title").hidden = !p.live || !st.hasLibrary;
    $("offline").hidden = p.live;
    $("live-panel").hidden = !p.live;
    document.body.dataset.live = String(p.live);

    if (!st.setupTouched) {
      showSwitch($("setup-webcam"), null, p.webcam, "off");
      showSwitch($("setup-mic"), null, p.mic, "muted");
      showLayout($("setup-layout"), p.layout);
    } else {
      $("setup-webcam").disabled = p.webcam === "none";
      $("setup-mic").disabled = p.mic === "none";
    }

    const movie = p.movie || {};
    $("movie-title").textContent = movie.title || "";
    $("movie-title").title = movie.title || "";
    $("movie-state").textContent = movie.state || "";
    const play = $("playpause");
    const playing = movie.state === "playing";
    play.dataset.action = playing ? "pause" : "play";
    $("playpause-label").textContent = playing ? "Pause" : "Play";
    if (!busy(play)) play.disabled = false;

    const timeline = $("timeline");
    const duration = movie.duration_s;
    timeline.disabled = !(duration > 0);
    // Right after a seek or a load the pipeline may not know the position for a moment:
    // the timeline stays where it was rather than jumping to the start.
    if (!st.scrubbing && (movie.position_s != null || movie.title !== st.shownTitle)) {
      timeline.max = duration > 0 ? String(duration) : "0";
      timeline.value = String(Math.min(movie.position_s || 0, duration || 0));
      $("pos").textContent = hms(movie.position_s);
      st.shownTitle = movie.title;
    }
    $("dur").textContent = hms(duration);
    $("next").disabled = !st.hasLibrary || busy($("next"));

    showSwitch($("live-webcam"), $("webcam-sub"), p.webcam, "off");
    showSwitch($("live-mic"), $("mic-sub"), p.mic, "muted");
    if (!busy($("live-layout"))) showLayout($("live-layout"), p.layout);
    const volume = $("volume");
    if (!busy(volume) && !volume.matches(":active")) {
      volume.value = String(Math.round(p.movie_volume * 100));
      $("volume-out").textContent = `${volume.value}%`;
    }
    const duck = $("duck");
    if (!busy(duck) && !duck.matches(":active")) {
      duck.value = String(Math.round(p.duck_db));
      $("duck-out").textContent = `${duck.value} dB`;
    }

    $("share-link").value = location.origin + "/";
    $("invite-note").hidden = !p.invite_only;
  }

  // ── viewers ───────────────────────────────────────────────────────────────────────────

  /** The Twitch account the party signed in with (`cowatch twitch login`), or why it no
   *  longer is; hidden when the party uses none. */
  function renderSignIn(twitch) {
    const line = $("twitch-sign-in");
    line.hidden = !twitch;
    if (!twitch) return;
    line.textContent = twitch.signed_in ? `Twitch: signed in as ${twitch.login}` : twitch.problem;
    line.classList.toggle("warn", !twitch.signed_in);
  }

  async function loadViewers() {
    const v = await api("GET", "/api/viewers");
    const edges = Array.isArray(v.edges) ? v.edges : [];
    const onEdges = edges.reduce((n, e) => n + (e.state === "up" ? e.viewers : 0), 0);
    $("viewer-count").textContent = edges.length
      ? `${v.watching} watching + ${onEdges} on edges` : `${v.watching} watching`;
    renderEdges(edges);
    renderSignIn(v.twitch);
    $("viewer-sessions").textContent =
      `${v.sessions} ${v.sessions === 1 ? "page" : "pages"} open · ${v.nicknames.length} in the chat`;
    const list = $("viewer-list");
    list.replaceChildren(...v.nicknames.map((n) => {
      const li = el("li");
      li.append(el("span", "nick", n.nick), el("span", "since", stay(n.in_party_s)));
      return li;
    }));
    if (!v.nicknames.length) list.append(el("li", "since", "No one has picked a nickname yet."));
    renderStreams(Array.isArray(v.streams) ? v.streams : []);
  }

  /** One line per edge: "edge http://…/janus · up · 12 watching · mountpoint 123". */
  function renderEdges(edges) {
    const list = $("edge-list");
    list.hidden = !edges.length;
    list.replaceChildren(...edges.map((e) => {
      const li = el("li");
      li.dataset.state = e.state;
      const state = e.state === "down" && e.error ? `down (${e.error})` : e.state;
      li.append(el("span", "nick", `edge ${e.url}`),
        el("span", "since", `${state} · ${e.viewers} watching · mountpoint ${e.mountpoint}`));
      return li;
    }));
  }

  // ── restream ──────────────────────────────────────────────────────────────────────────

  /** One line per RTMP target: its URL (key hidden by the server), state, bitrate, Remove. */
  async function loadRestream() {
    const targets = await api("GET", "/api/restream");
    const list = $("restream-list");
    list.replaceChildren(...targets.map((t) => {
      const li = el("li");
      li.dataset.state = t.status;
      let state = t.status === "live" ? `live · ${mbits(t.bitrate_kbps)}` : t.status;
      if (t.status === "retrying" && t.last_error) state = `retrying (${t.last_error})`;
      const remove = el("button", "btn", "Remove");
      remove.type = "button";
      remove.addEventListener("click", () =>
        act(remove, () => api("DELETE", `/api/restream/${t.id}`), loadRestream));
      li.append(el("span", "nick", t.url), el("span", "since", state), remove);
      return li;
    }));
    if (!targets.length) list.append(el("li", "since", "Not restreaming."));
  }

  $("restream-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = $("restream-url");
    const url = input.value.trim();
    if (!url) return;
    act($("restream-add"), async () => {
      await api("POST", "/api/restream", { url });
      input.value = "";
    }, loadRestream);
  });

  // ── video streams ─────────────────────────────────────────────────────────────────────
  // Who struggles: a stream Auto moved below the top rendition (its link's estimate is too
  // low), or one losing packets. A viewer who picked a lower quality is not struggling.

  /** Loss at or above this fraction marks a stream as struggling. */
  const LOSSY = 0.02;

  const mbits = (kbps) => `${(kbps / 1000).toFixed(1)} Mbit/s`;
  const percent = (loss) => `${Math.round(loss * 100)} % loss`;

  /** The rendition a stream gets when its link allows: the party's best. */
  function topRendition(streams) {
    const offered = st.party && Array.isArray(st.party.qualities) ? st.party.qualities : [];
    if (offered.length) return offered[0];
    return streams.map((s) => s.rendition).sort((a, b) => parseInt(b, 10) - parseInt(a, 10))[0];
  }

  function struggles(s, top) {
    return Boolean(s.connected) && ((s.quality === "auto" && s.rendition !== top)
      || (Number.isFinite(s.loss) && s.loss >= LOSSY));
  }

  /** "est. 0.9 Mbit/s · 4 % loss · 35 ms": the link figures a stream has, in words (the round
   *  trip only `withRtt`). */
  function linkFigures(s, separator, withRtt) {
    const parts = [];
    if (Number.isFinite(s.estimate_kbps)) parts.push(`est. ${mbits(s.estimate_kbps)}`);
    if (Number.isFinite(s.loss)) parts.push(percent(s.loss));
    if (withRtt && Number.isFinite(s.rtt_ms)) parts.push(`${Math.round(s.rtt_ms)} ms`);
    return parts.join(separator);
  }

  /** "3 streams · 1 on 360p (est. 0.9 Mbit/s, 4 % loss)". */
  function streamSummary(streams, top) {
    const parts = [`${streams.length} ${streams.length === 1 ? "stream" : "streams"}`];
    const below = new Map();
    for (const s of streams) {
      if (s.connected && s.rendition !== top) below.set(s.rendition, [...(below.get(s.rendition) || []), s]);
    }
    for (const [rendition, those] of below) {
      const figures = those.length === 1 ? linkFigures(those[0], ", ") : "";
      parts.push(`${those.length} on ${rendition}${figures ? ` (${figures})` : ""}`);
    }
    const lossy = streams.filter((s) => s.connected && s.rendition === top && s.loss >= LOSSY).length;
    if (lossy) parts.push(`${lossy} losing packets`);
    return parts.join(" · ");
  }

  function renderStreams(streams) {
    const top = topRendition(streams);
    $("stream-summary").textContent = streams.length ? streamSummary(streams, top) : "No video streams.";
    // The ones that struggle first, then by id so a row does not jump between polls.
    const sorted = [...streams].sort((a, b) =>
      struggles(b, top) - struggles(a, top) || String(a.id).localeCompare(String(b.id)));
    $("stream-list").replaceChildren(...sorted.map((s) => {
      const li = el("li", struggles(s, top) ? "struggling" : null);
      li.dataset.id = s.id;
      const chose = s.quality === "auto" ? "auto" : `picked ${s.quality}`;
      li.append(
        el("span", "sid", String(s.id).slice(0, 8)),
        el("span", "rendition", `${s.rendition} ${s.codec} · ${chose}`),
        el("span", "link", s.connected ? (linkFigures(s, " · ", true) || "measuring…") : "connecting…"),
      );
      if (s.switches) li.title = `moved between qualities ${s.switches} ${s.switches === 1 ? "time" : "times"}`;
      return li;
    }));
  }

  // ── moderators ────────────────────────────────────────────────────────────────────────

  async function loadModerators() {
    const { moderators } = await api("GET", "/api/moderators");
    const list = $("mod-list");
    // Live links first, newest first; revoked ones after, for the record.
    const sorted = [...moderators].sort((a, b) =>
      (a.revoked_at_ms != null) - (b.revoked_at_ms != null) || b.created_at_ms - a.created_at_ms);
    list.replaceChildren(...sorted.map((m) => {
      const li = el("li", m.revoked_at_ms != null ? "revoked" : null);
      li.dataset.id = m.id;
      const when = m.revoked_at_ms != null
        ? "revoked " + new Date(m.revoked_at_ms).toLocaleDateString()
        : new Date(m.created_at_ms).toLocaleDateString();
      li.append(el("span", "label", m.label), el("span", "when", when));
      if (m.revoked_at_ms == null) {
        const revoke = button("Revoke", null, "btn danger small", () => {
          if (!confirm(`Revoke the moderator link of “${m.label}”? It stops working at once.`)) return;
          act(revoke, async () => {
            await api("DELETE", `/api/moderators/${encodeURIComponent(m.id)}`);
            if (st.revealed === m.id) hideReveal();
          }, loadModerators);
        });
        li.append(revoke);
      }
      return li;
    }));
    $("mod-empty").hidden = moderators.length > 0;
  }

  $("mod-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("mod-label");
    const label = input.value.trim();
    if (!label) { toast("Give the moderator link a label, e.g. their name.", true); input.focus(); return; }
    act($("mod-add"), async () => {
      const made = await api("POST", "/api/moderators", { label });
      input.value = "";
      // The page's own origin is where the host reached cowatch (the server only sees its
      // Host header, not whether a proxy added https).
      $("mod-link").value = made.key ? `${location.origin}/#mod=${made.key}` : made.link;
      $("mod-reveal-label").textContent = made.label;
      $("mod-reveal").hidden = false;
      st.revealed = made.id;
    }, loadModerators);
  });

  // ── copying ───────────────────────────────────────────────────────────────────────────

  /** Copies `text`: the Clipboard API where the page may use it (https or localhost), else a
   *  selected textarea and execCommand. */
  async function copy(text) {
    try {
      if (navigator.clipboard && window.isSecureContext) {
        await navigator.clipboard.writeText(text);
        return true;
      }
    } catch (_) { /* fall back */ }
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.append(area);
    area.select();
    let ok = false;
    try { ok = document.execCommand("copy"); } catch (_) {}
    area.remove();
    return ok;
  }

  function copyFrom(input) {
    copy(input.value).then((ok) => {
      if (ok) toast("Copied");
      else { input.select(); toast("Press Ctrl+C (⌘C) to copy the selected link", true); }
    });
  }
  $("share-copy").addEventListener("click", () => copyFrom($("share-link")));
  $("mod-copy").addEventListener("click", () => copyFrom($("mod-link")));
  // The key is not kept anywhere on the page once the host is done with it.
  function hideReveal() {
    $("mod-link").value = "";
    $("mod-reveal").hidden = true;
    st.revealed = null;
  }
  $("mod-done").addEventListener("click", hideReveal);

  // ── going live ────────────────────────────────────────────────────────────────────────

  for (const id of ["setup-webcam", "setup-mic", "setup-layout"]) {
    $(id).addEventListener("change", () => { st.setupTouched = true; });
  }

  const afterControl = () => Promise.all([loadParty(), loadLibrary()]);

  $("go-live").addEventListener("click", () => {
    const p = st.party || {};
    const body = { layout: $("setup-layout").value };
    if (st.selected) body.title = st.selected;
    // A webcam or mic that is not configured cannot be switched either way.
    if (p.webcam !== "none") body.webcam = $("setup-webcam").checked;
    if (p.mic !== "none") body.mic = $("setup-mic").checked;
    const button = $("go-live");
    button.textContent = "Going live…";
    act(button, async () => {
      await api("POST", "/api/party/start", body);
      st.setupTouched = false;
    }, afterControl).finally(() => { button.textContent = "Go live"; });
  });

  $("play-selected").addEventListener("click", () => {
    if (!st.selected) return;
    act($("play-selected"), () => api("POST", "/api/control/load", { title: st.selected }), afterControl);
  });

  $("end-party").addEventListener("click", () => {
    if (!confirm("End the party? The movie pauses and the party chat is cleared.")) return;
    act($("end-party"), () => api("POST", "/api/party/end"), afterControl);
  });

  // ── live controls ─────────────────────────────────────────────────────────────────────

  $("playpause").addEventListener("click", () => {
    const button = $("playpause");
    const action = button.dataset.action === "pause" ? "pause" : "play";
    act(button, () => api("POST", `/api/control/${action}`), loadParty);
  });

  $("next").addEventListener("click", () => {
    act($("next"), async () => {
      const answer = await api("POST", "/api/control/next");
      if (answer && answer.title) toast(`Now playing ${answer.title.name}`);
    }, afterControl);
  });

  // The timeline follows the movie except while the host holds it; letting go seeks.
  const timeline = $("timeline");
  timeline.addEventListener("pointerdown", () => { st.scrubbing = true; });
  timeline.addEventListener("input", () => {
    st.scrubbing = true;
    $("pos").textContent = hms(Number(timeline.value));
  });
  timeline.addEventListener("pointerup", () => {
    // A click that does not move the thumb fires no change: hand the timeline back.
    setTimeout(() => { if (!busy(timeline)) st.scrubbing = false; }, 300);
  });
  timeline.addEventListener("change", () => {
    const position = Number(timeline.value);
    timeline.setAttribute("aria-busy", "true");
    st.scrubbing = true;
    api("POST", "/api/control/seek", { position_s: position })
      .catch((e) => { if (!st.locked) toast(e.message, true); })
      .finally(() => {
        timeline.removeAttribute("aria-busy");
        st.scrubbing = false;
        loadParty();
      });
  });

  /** Wires a control whose change is one POST; the poll leaves it alone meanwhile. */
  function control(input, request) {
    input.addEventListener("change", () => {
      input.setAttribute("aria-busy", "true");
      api("POST", ...request())
        .catch((e) => { if (!st.locked) toast(e.message, true); })
        .finally(() => { input.removeAttribute("aria-busy"); loadParty(); });
    });
  }
  control($("live-webcam"), () => ["/api/control/webcam", { on: $("live-webcam").checked }]);
  control($("live-mic"), () => ["/api/control/mic", { on: $("live-mic").checked }]);
  control($("live-layout"), () => ["/api/control/layout", { layout: $("live-layout").value }]);
  control($("volume"), () => ["/api/control/audio", { volume: Number($("volume").value) / 100 }]);
  control($("duck"), () => ["/api/control/audio", { duck_db: Number($("duck").value) }]);
  $("volume").addEventListener("input", () => { $("volume-out").textContent = `${$("volume").value}%`; });
  $("duck").addEventListener("input", () => { $("duck-out").textContent = `${$("duck").value} dB`; });

  // ── start ─────────────────────────────────────────────────────────────────────────────

  async function start() {
    st.key = takeKey(KEY_SLOT, ["key"]);
    if (!st.key) { needsKey(); return; }
    // A host-only call first: a wrong key shows the gate before any dashboard.
    try {
      await loadModerators();
    } catch (e) {
      if (st.locked) return;
      toast(e.message, true);
    }
    $("gate").hidden = true;
    $("dash").hidden = false;
    document.body.dataset.state = "ready";
    every(PARTY_EVERY_MS, loadParty);
    every(libraryEvery, () => loadLibrary().catch((e) => {
      if (!st.locked) { const note = $("library-note"); note.hidden = false; note.textContent = e.message; }
    }));
    every(VIEWERS_EVERY_MS, () => loadViewers().catch((e) => {
      if (!st.locked) $("viewer-sessions").textContent = e.message;
    }));
    every(VIEWERS_EVERY_MS, () => loadRestream().catch(() => {}));
  }

  start();
})();
