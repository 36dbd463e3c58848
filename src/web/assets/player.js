"use strict";
// The player: WHEP playback of the party's stream. POST our offer, apply the answer, and come
// back by ourselves when anything breaks (a server restart, a network change, a stall).
//
// State for diagnostics (and the browser tests and `cowatch bench`) is `window.cowatch`:
// `state` (connecting, live, reconnecting), `frames` shown, `connects`, and with ?timecode the
// glass-to-glass `latencies`. `timing` is the current connection attempt's start, step by step
// (see "Timing"), `timings` every attempt's, oldest first.

(() => {
  const { $, withInvite, reasonOf } = window.cowatchPage.common;

  const video = $("video");
  const badge = $("state");
  const unmute = $("unmute");
  const whepUrl = withInvite("/whep").toString();

  window.cowatch = { state: "connecting", frames: 0, connects: 0, timing: null, timings: [] };

  let pc = null;
  let resource = null;
  let retryTimer = null;
  let attempt = 0;
  let lastFrameAt = 0;

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
    const t = { attempt: window.cowatch.timings.length + 1, at: performance.now() };
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
      window.cowatch.frames++;
      lastFrameAt = performance.now();
      if (window.cowatch.state !== "live" && pc && pc.connectionState === "connected") setState("live");
      video.requestVideoFrameCallback(onFrame);
    };
    if ("requestVideoFrameCallback" in HTMLVideoElement.prototype) {
      video.requestVideoFrameCallback(onFrame);
    } else {
      video.addEventListener("timeupdate", () => { window.cowatch.frames++; lastFrameAt = performance.now(); });
    }
  }

  // ── Connecting and reconnecting ───────────────────────────────────────────────────────

  function hangUp() {
    const old = pc, oldResource = resource;
    pc = null; resource = null;
    if (old) { old.ontrack = null; old.onconnectionstatechange = null; old.close(); }
    if (oldResource) fetch(oldResource, { method: "DELETE" }).catch(() => {});
  }

  function scheduleReconnect(reason) {
    if (retryTimer) return;
    setState("reconnecting", reason ? "reconnecting… (" + reason + ")" : "reconnecting…");
    hangUp();
    // Quick first retries (a server restart takes a second or two), then back off.
    const delay = Math.min(500 * 2 ** Math.min(attempt, 4), 8000);
    attempt++;
    retryTimer = setTimeout(() => { retryTimer = null; connect(); }, delay);
  }

  async function connect() {
    const t = newTiming();
    const ours = new RTCPeerConnection();
    pc = ours;
    const videoTransceiver = ours.addTransceiver("video", { direction: "recvonly" });
    ours.addTransceiver("audio", { direction: "recvonly" });
    const stream = new MediaStream();
    const videoTrack = videoTransceiver.receiver.track;
    if (videoTrack.muted) videoTrack.addEventListener("unmute", () => mark(t, "firstPacket"), { once: true });
    else mark(t, "firstPacket");
    ours.oniceconnectionstatechange = () => {
      if (ours.iceConnectionState === "connected" || ours.iceConnectionState === "completed") mark(t, "iceConnected");
    };
    const dtls = videoTransceiver.receiver.transport;
    if (dtls) dtls.addEventListener("statechange", () => { if (dtls.state === "connected") mark(t, "dtlsConnected"); });
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
        mark(t, "connected");
        attempt = 0;
        window.cowatch.connects++;
        if (lastFrameAt) setState("live");
      } else if (s === "failed" || s === "closed") {
        scheduleReconnect();
      } else if (s === "disconnected") {
        // Often transient: give ICE a moment before starting over.
        setTimeout(() => { if (pc === ours && ours.connectionState !== "connected") scheduleReconnect(); }, 2000);
      }
    };
    try {
      const offer = await ours.createOffer();
      mark(t, "offer");
      await ours.setLocalDescription(offer);
      // The server is ICE-lite and learns our address from our checks: no need to wait for
      // candidates before posting, which makes joining faster.
      mark(t, "post");
      const response = await fetch(whepUrl, {
        method: "POST",
        headers: { "Content-Type": "application/sdp" },
        body: ours.localDescription.sdp,
      });
      if (response.status !== 201) throw new Error(await reasonOf(response));
      const loc = response.headers.get("Location");
      const answer = await response.text();
      mark(t, "answer");
      if (pc !== ours) return;
      resource = loc ? new URL(loc, whepUrl).toString() : null;
      await ours.setRemoteDescription({ type: "answer", sdp: answer });
      mark(t, "remote");
    } catch (e) {
      if (pc === ours) scheduleReconnect(String(e.message || e).slice(0, 80));
    }
  }

  // A connection that says "connected" but delivers no frames is broken too.
  setInterval(() => {
    if (window.cowatch.state === "live" && performance.now() - lastFrameAt > 5000) scheduleReconnect("stalled");
  }, 1000);

  // Leaving: the server frees the viewer's place at once rather than when it times out.
  window.addEventListener("pagehide", () => {
    if (resource) fetch(resource, { method: "DELETE", keepalive: true }).catch(() => {});
  });

  countFrames();
  connect();
})();
