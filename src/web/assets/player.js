"use strict";
// The player: WHEP playback of the party's stream. POST our offer, apply the answer, and come
// back by ourselves when anything breaks (a server restart, a network change, a stall).
//
// State for diagnostics (and the browser tests and `cowatch bench`) is `window.cowatch`:
// `state` (connecting, live, reconnecting), `frames` shown, `connects`, and with ?timecode the
// glass-to-glass `latencies`.

(() => {
  const { $, withInvite, reasonOf } = window.cowatchPage.common;

  const video = $("video");
  const badge = $("state");
  const unmute = $("unmute");
  const whepUrl = withInvite("/whep").toString();

  window.cowatch = { state: "connecting", frames: 0, connects: 0 };

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

  // ── Frames ────────────────────────────────────────────────────────────────────────────
  // The badge says LIVE once frames are shown, not merely once the connection is up.

  function countFrames() {
    const onFrame = (now, metadata) => {
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
    const ours = new RTCPeerConnection();
    pc = ours;
    ours.addTransceiver("video", { direction: "recvonly" });
    ours.addTransceiver("audio", { direction: "recvonly" });
    const stream = new MediaStream();
    ours.ontrack = (e) => {
      stream.addTrack(e.track);
      if (video.srcObject !== stream) video.srcObject = stream;
      video.play().catch(() => {});
    };
    ours.onconnectionstatechange = () => {
      if (pc !== ours) return;
      const s = ours.connectionState;
      if (s === "connected") {
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
      await ours.setLocalDescription(await ours.createOffer());
      // The server is ICE-lite and learns our address from our checks: no need to wait for
      // candidates before posting, which makes joining faster.
      const response = await fetch(whepUrl, {
        method: "POST",
        headers: { "Content-Type": "application/sdp" },
        body: ours.localDescription.sdp,
      });
      if (response.status !== 201) throw new Error(await reasonOf(response));
      const loc = response.headers.get("Location");
      if (pc !== ours) return;
      resource = loc ? new URL(loc, whepUrl).toString() : null;
      await ours.setRemoteDescription({ type: "answer", sdp: await response.text() });
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
