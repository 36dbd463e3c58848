"use strict";
// The player: WHEP playback of the party's stream. POST our offer, apply the answer, and come
// back by ourselves when anything breaks (a server restart, a network change, a stall).
//
// It goes first: the page's other parts (the chat's socket and backlog, its session) wait
// for the first picture, `cowatchPage.player.started`, so they never hold it up.
//
// On a lossy link, frames that stop are first met with a keyframe request (the picture may
// only be waiting for one); only frames stopped for RECONNECT_AFTER_MS start a new connection,
// and the badge says "reconnecting…" only then.
//
// The quality menu: Auto, or a cap such as 360p, from the renditions the party offers
// (GET /api/party, `qualities`). The choice is kept in localStorage and POSTed to every session
// this page opens; the server moves the stream at a keyframe, on the same connection. The menu
// shows the choice and the height that plays now ("Auto · 360p").
//
// Edges: a party may hand a viewer to a Janus edge (GET /api/placement, asked before every
// connection): when the origin is full, or by the streamer's least-loaded policy. The page
// then plays the edge's streaming mountpoint through Janus's HTTP API (create a session,
// attach the streaming plugin, watch, Janus's offer, our answer, start; the long poll keeps
// the session alive). The chat and the rest of the page still talk to the origin. An edge
// that dies (its long poll fails, ICE fails, or no frame for EDGE_RECONNECT_AFTER_MS) is
// reported back in the next placement (`failed=`), which sends the page elsewhere.
//
// State for diagnostics (and the browser tests and `cowatch bench`) is `window.cowatch`:
// `state` (connecting, live, reconnecting), `frames` shown, `attempts` at connecting,
// `connects` that got through, `reconnects` started, `freezes` (gaps over FREEZE_MS between
// frames of one connection) and the `longestFreezeMs`, `keyframeRequests` sent, and with ?timecode the glass-to-glass
// `latencies`. `timing` is the current attempt's start, step by step (see "Timing"), `timings`
// every attempt's, oldest first. `quality` is the menu's choice (`auto`, `360p`) and
// `playingHeight` the height of the frames shown now (0 before the first one). `where` is
// "origin" or the edge's URL this connection plays from, `placements` how many were asked.

(() => {
  const { $, withInvite, reasonOf, call, store } = window.cowatchPage.common;

  const video = $("video");
  const badge = $("state");
  const unmute = $("unmute");
  const qualityBox = $("quality-box");
  const qualityMenu = $("quality");
  const whepUrl = withInvite("/whep").toString();

  /** A gap between two frames of one connection that a viewer sees as a freeze. */
  const FREEZE_MS = 200;
  /** Frames stopped this long on a connected peer: ask the server for a keyframe. */
  const KEYFRAME_AFTER_MS = 1000;
  /** While they stay stopped, ask again this often (the server sends at most one a second). */
  const KEYFRAME_AGAIN_MS = 1500;
  /** Frames still stopped this long: the connection is gone, start a new one. */
  const RECONNECT_AFTER_MS = 5000;
  /** ... or this long, when the connection no longer says it is connected either. */
  const RECONNECT_DISCONNECTED_MS = 3000;
  /** A connection attempt that has shown no frame this long is given up. */
  const FIRST_FRAME_TIMEOUT_MS = 10000;
  /** The rest of the page waits at most this long for the first picture. */
  const HOLD_OTHERS_MS = 1500;
  /** How often the frames are watched. */
  const WATCH_MS = 250;
  /** On an edge, frames stopped this long mean it is gone (it has no keyframe endpoint of
   *  ours to ask first; Janus asks the origin itself). */
  const EDGE_RECONNECT_AFTER_MS = 3000;
  /** How long an edge answer waits for our ICE candidates (host ones only: quick). */
  const GATHER_MS = 2000;
  /** Where the menu's choice is kept across visits. */
  const QUALITY_SLOT = "cowatch.quality";

  window.cowatch = {
    state: "connecting", frames: 0, attempts: 0, connects: 0, reconnects: 0,
    freezes: 0, longestFreezeMs: 0, keyframeRequests: 0, timing: null, timings: [],
    quality: store.get(QUALITY_SLOT) || "auto", playingHeight: 0, qualityError: null,
    where: null, placements: 0,
  };

  /** The current peer connection; any other one is old, and its callbacks do nothing. */
  let pc = null;
  /** The current session's WHEP resource URL (from the answer's Location). */
  let resource = null;
  /** Aborts the current attempt's POST when it is given up. */
  let posting = null;
  /** The one pending reconnect. */
  let retryTimer = null;
  let backoff = 0;
  /** When the current connection last showed a frame (0: none yet). */
  let lastFrameAt = 0;
  /** When the current freeze last asked for a keyframe (0: not yet). */
  let keyframeAskedAt = 0;
  /** The current connection's Janus session URL, when it plays from an edge. */
  let edgeSession = null;
  /** The edge the current connection plays from (null: the origin). */
  let edgeUrl = null;
  /** An edge that just failed us, for the next placement to avoid. */
  let failedEdge = null;
  /** The DTLS certificate the first connection made, for every later one: making one costs a
   *  new connection ~30 ms before its offer (measured with Chromium on a busy machine). */
  let certificate = null;

  // The rest of the page starts once the first picture is up, or after HOLD_OTHERS_MS.
  let othersMayStart;
  const started = new Promise((resolve) => { othersMayStart = resolve; });
  setTimeout(() => othersMayStart(), HOLD_OTHERS_MS);
  window.cowatchPage.player = { started };

  // ── The status badge ──────────────────────────────────────────────────────────────────

  function setState(state, text) {
    window.cowatch.state = state;
    badge.className = "badge " + state;
    badge.textContent = text || { connecting: "connecting…", live: "LIVE", reconnecting: "reconnecting…" }[state] || state;
  }

  // ── Sound ─────────────────────────────────────────────────────────────────────────────
  // Browsers only autoplay muted video: the viewer turns the sound on with one click.

  unmute.addEventListener("click", () => {
    video.muted = false;
    video.play().catch(() => {});
    unmute.hidden = true;
  });

  // ── The timecode reader ───────────────────────────────────────────────────────────────
  // With ?timecode, read the clock strip the pipeline stamps (--timecode) from each displayed
  // frame: 40 blocks of 16 px, most significant bit first, wall-clock ms modulo 2^40.

  const timecode = new URLSearchParams(location.search).has("timecode");
  const strip = timecode ? document.createElement("canvas") : null;
  if (strip) { strip.width = 640; strip.height = 16; window.cowatch.latencies = []; }

  function readTimecode(metadata) {
    const ctx = strip.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(video, 0, 0, 640, 16, 0, 0, 640, 16);
    const px = ctx.getImageData(0, 0, 640, 16).data;
    let value = 0;
    for (let bit = 0; bit < 40; bit++) {
      const i = (8 * 640 + bit * 16 + 8) * 4;
      value = value * 2 + ((px[i] + px[i + 1] + px[i + 2]) / 3 > 128 ? 1 : 0);
    }
    const shown = performance.timeOrigin + (metadata && metadata.expectedDisplayTime || performance.now());
    const latency = (Math.floor(shown) % 2 ** 40) - value;
    if (latency > -1000 && latency < 60000) {
      const l = window.cowatch.latencies;
      l.push(latency);
      if (l.length > 2000) l.shift();
    }
  }

  // ── Timing ────────────────────────────────────────────────────────────────────────────
  // Where a viewer's wait for the first picture goes, in ms since `new RTCPeerConnection`
  // (performance.now(), so monotonic): offer, post, answer, remote (description set),
  // iceConnected, dtlsConnected, connected, firstPacket (the video track unmutes when its
  // first RTP packet arrives), firstFrame (the first frame composited, from
  // requestVideoFrameCallback; `frame` has that frame's own receive/present times), then
  // `stats`: the receiver's counters from getStats() at that moment.

  const MAX_TIMINGS = 50;

  function newTiming() {
    const t = { attempt: window.cowatch.attempts, at: performance.now() };
    window.cowatch.timing = t;
    window.cowatch.timings.push(t);
    if (window.cowatch.timings.length > MAX_TIMINGS) window.cowatch.timings.shift();
    return t;
  }

  /** Records `step` once, at `now` (a performance.now() time) or at once. */
  function mark(t, step, now) {
    if (t && t[step] === undefined) t[step] = round((now === undefined ? performance.now() : now) - t.at);
  }

  const round = (ms) => Math.round(ms * 10) / 10;

  /** A stats timestamp (epoch ms in Chromium, page-relative in some others) as ms since `t.at`. */
  function sinceStart(t, stamp) {
    if (!Number.isFinite(stamp) || stamp <= 0) return undefined;
    const page = stamp > 1e12 ? stamp - performance.timeOrigin : stamp;
    return round(page - t.at);
  }

  /** The receiver's counters once the first frame is shown: what it took to get there. */
  async function recordStats(t, ours) {
    let report;
    try { report = await ours.getStats(); } catch { return; }
    const stats = {};
    report.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") {
        Object.assign(stats, {
          framesReceived: s.framesReceived, framesDecoded: s.framesDecoded,
          keyFramesDecoded: s.keyFramesDecoded, framesDropped: s.framesDropped,
          pliCount: s.pliCount, firCount: s.firCount, nackCount: s.nackCount,
          packetsReceived: s.packetsReceived, packetsLost: s.packetsLost,
          jitterBufferMs: s.jitterBufferEmittedCount
            ? round(1000 * s.jitterBufferDelay / s.jitterBufferEmittedCount) : undefined,
          jitterBufferTargetMs: s.jitterBufferEmittedCount && s.jitterBufferTargetDelay !== undefined
            ? round(1000 * s.jitterBufferTargetDelay / s.jitterBufferEmittedCount) : undefined,
          decodeMs: s.framesDecoded && s.totalDecodeTime !== undefined
            ? round(1000 * s.totalDecodeTime / s.framesDecoded) : undefined,
          lastPacket: sinceStart(t, s.lastPacketReceivedTimestamp),
        });
      } else if (s.type === "inbound-rtp" && s.kind === "audio") {
        stats.audioPacketsReceived = s.packetsReceived;
      } else if (s.type === "candidate-pair" && s.nominated) {
        stats.pairFirstRequest = sinceStart(t, s.firstRequestTimestamp);
        stats.pairLastRequest = sinceStart(t, s.lastRequestTimestamp);
        stats.pairFirstResponse = sinceStart(t, s.firstResponseTimestamp);
        stats.pairLastPacketReceived = sinceStart(t, s.lastPacketReceivedTimestamp);
        stats.pairRttMs = s.currentRoundTripTime !== undefined ? round(1000 * s.currentRoundTripTime) : undefined;
      } else if (s.type === "transport") {
        stats.dtlsState = s.dtlsState;
      }
    });
    t.stats = stats;
  }

  // ── Frames ────────────────────────────────────────────────────────────────────────────
  // The badge says LIVE once frames are shown, not merely once the connection is up.

  function countFrames() {
    const onFrame = (now, metadata) => {
      video.requestVideoFrameCallback(onFrame);
      const t = window.cowatch.timing;
      if (t && t.firstFrame === undefined && pc) {
        mark(t, "firstFrame", now);
        t.frame = {
          receive: metadata.receiveTime !== undefined ? round(metadata.receiveTime - t.at) : undefined,
          presented: round(metadata.presentationTime - t.at),
          expectedDisplay: round(metadata.expectedDisplayTime - t.at),
          processingMs: metadata.processingDuration !== undefined ? round(1000 * metadata.processingDuration) : undefined,
          width: metadata.width,
        };
        recordStats(t, pc);
      }
      if (strip && video.videoWidth >= 640) readTimecode(metadata);
      frameShown(now);
    };
    if ("requestVideoFrameCallback" in HTMLVideoElement.prototype) {
      video.requestVideoFrameCallback(onFrame);
    } else {
      video.addEventListener("timeupdate", () => frameShown(performance.now()));
    }
  }

  function frameShown(now) {
    window.cowatch.frames++;
    if (video.videoHeight !== window.cowatch.playingHeight) showPlaying();
    if (!pc) return;
    if (lastFrameAt && now - lastFrameAt > FREEZE_MS && !document.hidden) {
      window.cowatch.freezes++;
      window.cowatch.longestFreezeMs = Math.max(window.cowatch.longestFreezeMs, Math.round(now - lastFrameAt));
    }
    lastFrameAt = now;
    keyframeAskedAt = 0;
    backoff = 0;
    othersMayStart();
    if (window.cowatch.state !== "live") setState("live");
  }

  // A hidden tab shows no frames (requestVideoFrameCallback stops): that is no freeze.
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && lastFrameAt) lastFrameAt = performance.now();
  });

  // ── Frames that stop ──────────────────────────────────────────────────────────────────
  // A lost packet of a keyframe, or a burst of loss, leaves the decoder waiting for the next
  // keyframe: ask for one at once rather than tearing down a working connection. Only
  // frames stopped for RECONNECT_AFTER_MS mean the connection is gone.

  function requestKeyframe(now) {
    if (!resource) return;
    const ours = pc;
    keyframeAskedAt = now;
    window.cowatch.keyframeRequests++;
    fetch(resource + "/keyframe", { method: "POST" }).then((response) => {
      // The server no longer knows this session (it restarted, or timed us out): no keyframe
      // will come, start over now rather than at RECONNECT_AFTER_MS.
      if (response.status === 404 && pc === ours) scheduleReconnect("session ended");
    }, () => {});
  }

  function watchFrames() {
    if (!pc || retryTimer || document.hidden) return;
    const now = performance.now();
    const connected = pc.connectionState === "connected";
    const t = window.cowatch.timing;
    // Before the first frame, time from when the connection came up (or the attempt began).
    const since = lastFrameAt || (t && t.connected !== undefined ? t.at + t.connected : 0);
    if (!lastFrameAt && now - t.at > FIRST_FRAME_TIMEOUT_MS) {
      scheduleReconnect("no video");
    } else if (lastFrameAt && now - lastFrameAt > (edgeUrl ? EDGE_RECONNECT_AFTER_MS
               : connected ? RECONNECT_AFTER_MS : RECONNECT_DISCONNECTED_MS)) {
      scheduleReconnect("stalled");
    } else if (connected && since && now - since > KEYFRAME_AFTER_MS
               && (!keyframeAskedAt || now - keyframeAskedAt > KEYFRAME_AGAIN_MS)) {
      requestKeyframe(now);
    }
  }

  // ── Quality ───────────────────────────────────────────────────────────────────────────
  // The server knows each session's choice; the page remembers it and tells every new
  // session. Choices are sent one after another, so a quick Auto → 360p → Auto ends on Auto.

  /** The quality calls in flight, chained. */
  let sending = Promise.resolve();

  const playingText = () => (video.videoHeight ? video.videoHeight + "p" : "");

  /** The menu's text for the choice: what was picked and, when it says more, what plays. */
  function showPlaying() {
    window.cowatch.playingHeight = video.videoHeight;
    const choice = window.cowatch.quality;
    const playing = playingText();
    for (const option of qualityMenu.options) {
      const base = option.value === "auto" ? "Auto" : option.value;
      const more = option.value === choice && playing && (choice === "auto" || playing !== choice);
      option.textContent = more ? base + " · " + playing : base;
    }
  }

  /** Tells the current session the current choice. */
  function sendQuality() {
    sending = sending.then(async () => {
      const ours = pc, where = resource;
      if (!where) return;  // the next session gets it when it opens
      let response;
      try {
        response = await fetch(where + "/quality", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ quality: window.cowatch.quality }),
        });
      } catch {
        return;  // the server is gone: the reconnect will send it again
      }
      if (response.status === 204) {
        window.cowatch.qualityError = null;
        qualityMenu.title = "";
      } else if (response.status === 404) {
        if (pc === ours) scheduleReconnect("session ended");
      } else {
        window.cowatch.qualityError = await reasonOf(response);
        qualityMenu.title = window.cowatch.qualityError;
      }
    });
  }

  function pick(quality) {
    window.cowatch.quality = quality;
    store.set(QUALITY_SLOT, quality);
    qualityMenu.value = quality;
    showPlaying();
    sendQuality();
  }

  qualityMenu.addEventListener("change", () => pick(qualityMenu.value));
  video.addEventListener("resize", showPlaying);

  /** Fills the menu with what the party offers (labels, highest first); one quality alone
   *  leaves nothing to pick. */
  function offer(qualities) {
    const offered = Array.isArray(qualities) ? qualities.filter((q) => typeof q === "string") : [];
    qualityMenu.replaceChildren(new Option("Auto", "auto"), ...offered.map((q) => new Option(q, q)));
    const choice = window.cowatch.quality;
    if (choice !== "auto" && !offered.includes(choice)) {
      // Kept for a party that offers it again; this one plays Auto (the server refused it).
      window.cowatch.quality = "auto";
    }
    qualityMenu.value = window.cowatch.quality;
    qualityBox.hidden = offered.length < 2;
    showPlaying();
  }

  /** What the party offers, asked once the picture is up so it never holds up the first
   *  frame; asked again a little later while the server cannot answer. */
  function loadQualities() {
    call("/api/party").then(
      (party) => offer(party && party.qualities),
      () => setTimeout(loadQualities, 5000),
    );
  }
  started.then(loadQualities);

  // ── Connecting and reconnecting ───────────────────────────────────────────────────────
  // One connection at a time and one pending reconnect: hanging up makes the old peer's
  // callbacks and its unfinished signalling do nothing.

  function hangUp() {
    const old = pc, oldResource = resource, oldEdge = edgeSession;
    pc = null; resource = null; lastFrameAt = 0; keyframeAskedAt = 0;
    edgeSession = null; edgeUrl = null;
    if (posting) { posting.abort(); posting = null; }
    if (old) {
      old.ontrack = null; old.onconnectionstatechange = null; old.oniceconnectionstatechange = null;
      old.close();
    }
    if (oldResource) fetch(oldResource, { method: "DELETE" }).catch(() => {});
    if (oldEdge) janusPost(oldEdge, { janus: "destroy" }).catch(() => {});
  }

  function scheduleReconnect(reason) {
    if (retryTimer) return;
    othersMayStart();
    if (edgeUrl) failedEdge = edgeUrl;
    window.cowatch.reconnects++;
    setState("reconnecting", reason ? "reconnecting… (" + reason + ")" : "reconnecting…");
    hangUp();
    // Quick first retries (a server restart takes a second or two), then back off.
    const delay = Math.min(500 * 2 ** Math.min(backoff, 4), 8000);
    backoff++;
    retryTimer = setTimeout(() => { retryTimer = null; connect(); }, delay);
  }

  /** Where to watch: `{kind: "origin"}` or `{kind: "edge", url, mountpoint}`. */
  async function placement() {
    window.cowatch.placements++;
    const url = withInvite("/api/placement");
    if (failedEdge) url.searchParams.set("failed", failedEdge);
    try {
      const response = await fetch(url);
      if (response.ok) {
        const place = await response.json();
        failedEdge = null;
        if (place && place.kind === "edge" && typeof place.url === "string") return place;
      }
    } catch {
      // The origin is unreachable: its WHEP will say so and the retries take over.
    }
    return { kind: "origin" };
  }

  async function connect() {
    hangUp();
    window.cowatch.attempts++;
    const t = newTiming();
    // Where to play is asked while the origin's offer is made, so a party without edges
    // waits for nothing more than before; a page sent to an edge drops that offer.
    const placing = placement().then((place) => { mark(t, "placed"); return place; });
    window.cowatch.where = "origin";
    const ours = new RTCPeerConnection(certificate ? { certificates: [certificate] } : undefined);
    pc = ours;
    if (!certificate) [certificate] = ours.getConfiguration().certificates || [];
    const videoTransceiver = ours.addTransceiver("video", { direction: "recvonly" });
    ours.addTransceiver("audio", { direction: "recvonly" });
    const stream = new MediaStream();
    const videoTrack = videoTransceiver.receiver.track;
    if (videoTrack.muted) videoTrack.addEventListener("unmute", () => mark(t, "firstPacket"), { once: true });
    else mark(t, "firstPacket");
    ours.oniceconnectionstatechange = () => {
      if (ours.iceConnectionState === "connected" || ours.iceConnectionState === "completed") mark(t, "iceConnected");
    };
    ours.ontrack = (e) => {
      mark(t, "track");
      stream.addTrack(e.track);
      if (video.srcObject !== stream) video.srcObject = stream;
      video.play().catch(() => {});
    };
    ours.onconnectionstatechange = () => {
      if (pc !== ours) return;
      const s = ours.connectionState;
      if (s === "connected") {
        // Once per connection, however often ICE comes back after a moment's loss.
        if (t.connected === undefined) window.cowatch.connects++;
        mark(t, "connected");
      } else if (s === "failed") {
        scheduleReconnect("connection failed");
      }
      // "disconnected" is often a moment's loss: the frames decide (watchFrames).
    };
    const abort = new AbortController();
    posting = abort;
    try {
      const offer = await ours.createOffer();
      mark(t, "offer");
      await ours.setLocalDescription(offer);
      // The transport exists once the offer is set.
      const dtls = videoTransceiver.receiver.transport;
      if (dtls) dtls.addEventListener("statechange", () => { if (dtls.state === "connected") mark(t, "dtlsConnected"); });
      const place = await placing;
      if (pc !== ours) return;
      if (place.kind === "edge") {
        ours.ontrack = null; ours.onconnectionstatechange = null; ours.oniceconnectionstatechange = null;
        ours.close();
        pc = null; posting = null;
        return connectEdge(t, place);
      }
      // The server is ICE-lite and learns our address from our checks: no need to wait for
      // candidates before posting, which makes joining faster.
      mark(t, "post");
      // The party's session (chat.js keeps it) goes in a header, never in the URL: a viewer
      // banned from the whole party is refused here, whatever nickname they now use.
      const headers = { "Content-Type": "application/sdp" };
      const sessionToken = store.get("cowatch.session");
      if (sessionToken) headers["X-Cowatch-Session"] = sessionToken;
      const response = await fetch(whepUrl, {
        method: "POST",
        headers,
        body: ours.localDescription.sdp,
        signal: abort.signal,
      });
      if (response.status !== 201) throw new Error(await reasonOf(response));
      const loc = response.headers.get("Location");
      const where = loc ? new URL(loc, whepUrl).toString() : null;
      const answer = await response.text();
      mark(t, "answer");
      if (pc !== ours) {
        // Given up meanwhile: free the seat the server just gave us.
        if (where) fetch(where, { method: "DELETE" }).catch(() => {});
        return;
      }
      resource = where;
      posting = null;
      // A new session starts on Auto: give it this viewer's cap before its first frames.
      if (window.cowatch.quality !== "auto") sendQuality();
      await ours.setRemoteDescription({ type: "answer", sdp: answer });
      mark(t, "remote");
    } catch (e) {
      if (pc === ours) scheduleReconnect(String(e.message || e).slice(0, 80));
    }
  }


  // ── Playing from an edge (Janus) ──────────────────────────────────────────────────────

  /** One Janus HTTP API request; its answer, or an error in one line. */
  async function janusPost(url, body, signal) {
    body.transaction = Math.random().toString(36).slice(2);
    const response = await fetch(url, {
      method: "POST", body: JSON.stringify(body), signal, keepalive: body.janus === "destroy",
    });
    const answer = await response.json();
    if (answer.janus === "error") throw new Error("edge: " + ((answer.error && answer.error.reason) || "error"));
    return answer;
  }

  /** The next event on a Janus session (the long poll: it also keeps the session alive). */
  async function janusEvent(session, signal) {
    const response = await fetch(session + "?maxev=1&rid=" + Date.now(), { signal });
    if (!response.ok) throw new Error("edge: " + response.status);
    return response.json();
  }

  /** Resolves once our candidates are in the local description (or after GATHER_MS). */
  function gathered(ours) {
    if (ours.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => { if (ours.iceGatheringState === "complete") resolve(); };
      ours.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, GATHER_MS);
    });
  }

  async function connectEdge(t, place) {
    const ours = new RTCPeerConnection(certificate ? { certificates: [certificate] } : undefined);
    pc = ours;
    edgeUrl = place.url;
    window.cowatch.where = place.url;
    if (!certificate) [certificate] = ours.getConfiguration().certificates || [];
    const stream = new MediaStream();
    ours.oniceconnectionstatechange = () => {
      if (ours.iceConnectionState === "connected" || ours.iceConnectionState === "completed") mark(t, "iceConnected");
    };
    ours.ontrack = (e) => {
      mark(t, "track");
      if (e.track.kind === "video") {
        if (e.track.muted) e.track.addEventListener("unmute", () => mark(t, "firstPacket"), { once: true });
        else mark(t, "firstPacket");
      }
      stream.addTrack(e.track);
      if (video.srcObject !== stream) video.srcObject = stream;
      video.play().catch(() => {});
    };
    ours.onconnectionstatechange = () => {
      if (pc !== ours) return;
      const s = ours.connectionState;
      if (s === "connected") {
        if (t.connected === undefined) window.cowatch.connects++;
        mark(t, "connected");
      } else if (s === "failed") {
        scheduleReconnect("connection failed");
      }
    };
    const abort = new AbortController();
    posting = abort;
    try {
      const base = place.url;
      mark(t, "post");
      const created = await janusPost(base, { janus: "create" }, abort.signal);
      const session = base + "/" + created.data.id;
      if (pc !== ours) { janusPost(session, { janus: "destroy" }).catch(() => {}); return; }
      edgeSession = session;
      const attached = await janusPost(session, { janus: "attach", plugin: "janus.plugin.streaming" }, abort.signal);
      const handle = session + "/" + attached.data.id;
      await janusPost(handle, { janus: "message", body: { request: "watch", id: place.mountpoint } }, abort.signal);
      let offer = null;
      while (!offer) {
        const event = await janusEvent(session, abort.signal);
        const data = event.plugindata && event.plugindata.data;
        if (data && data.error) throw new Error("edge: " + data.error);
        if (event.jsep && event.jsep.type === "offer") offer = event.jsep;
      }
      mark(t, "answer");
      if (pc !== ours) return;
      await ours.setRemoteDescription(offer);
      mark(t, "remote");
      await ours.setLocalDescription(await ours.createAnswer());
      const dtls = ours.getReceivers()[0] && ours.getReceivers()[0].transport;
      if (dtls) dtls.addEventListener("statechange", () => { if (dtls.state === "connected") mark(t, "dtlsConnected"); });
      await gathered(ours);
      if (pc !== ours) return;
      await janusPost(handle, {
        janus: "message", body: { request: "start" },
        jsep: { type: "answer", sdp: ours.localDescription.sdp },
      }, abort.signal);
      posting = null;
      listenToEdge(session, ours);
    } catch (e) {
      if (pc === ours) scheduleReconnect(String(e.message || e).slice(0, 80));
    }
  }

  /** Reads the session's events for as long as this connection lasts: an edge that stops
   *  answering, or hangs us up, is left at once. */
  async function listenToEdge(session, ours) {
    while (pc === ours) {
      let event;
      try {
        event = await janusEvent(session);
      } catch {
        if (pc === ours) scheduleReconnect("edge lost");
        return;
      }
      if (pc !== ours) return;
      const data = event.plugindata && event.plugindata.data;
      const status = data && data.result && data.result.status;
      if (event.janus === "hangup" || status === "stopped" || (data && data.error)) {
        scheduleReconnect("edge ended");
        return;
      }
    }
  }

  setInterval(watchFrames, WATCH_MS);

  // Leaving: the server frees the viewer's place at once rather than when it times out.
  window.addEventListener("pagehide", () => {
    if (resource) fetch(resource, { method: "DELETE", keepalive: true }).catch(() => {});
    if (edgeSession) janusPost(edgeSession, { janus: "destroy" }).catch(() => {});
  });

  connect();
  countFrames();
})();
