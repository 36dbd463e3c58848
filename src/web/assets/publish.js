"use strict";
// The host's own camera and mic from this browser, over WHIP (POST /whip with the host key),
// in place of the party's webcam and mic: pick a camera and a mic, see the preview, publish.
// Another camera or mic picked while publishing goes on the same connection (replaceTrack), so
// the party sees no gap. A browser may only open a camera on https:// or on this machine.

(() => {
  const { $, takeKey, reasonOf } = window.cowatchPage.common;
  // The host page keeps the host key; the phone page (body data-key-slot) the ingest key.
  const KEY_SLOT = document.body.dataset.keySlot || "cowatch.host-key";

  const st = {
    pc: null,          // the RTCPeerConnection while publishing
    stream: null,      // the camera and mic
    location: null,    // the WHIP session URL, for DELETE
  };

  const status = (text, warn) => {
    $("cam-status").textContent = text;
    $("cam-status").classList.toggle("warn", !!warn);
  };

  function showButtons() {
    const publishing = !!st.pc;
    $("cam-start").hidden = publishing;
    $("cam-stop").hidden = !publishing;
    $("cam-replace").hidden = true;
  }

  /** Opens the chosen camera and mic (the first ones, the first time) into the preview. */
  async function open() {
    const video = $("cam-video").value;
    const audio = $("cam-audio").value;
    const stream = await navigator.mediaDevices.getUserMedia({
      video: video ? { deviceId: { exact: video } } : { width: 1280, height: 720 },
      audio: audio ? { deviceId: { exact: audio } } : true,
    });
    if (st.stream) st.stream.getTracks().forEach((t) => t.stop());
    st.stream = stream;
    $("cam-preview").srcObject = stream;
    await listDevices();
    return stream;
  }

  /** Fills the pickers; their labels are known once the browser has granted the camera. */
  async function listDevices() {
    const devices = await navigator.mediaDevices.enumerateDevices();
    for (const [kind, select] of [["videoinput", $("cam-video")], ["audioinput", $("cam-audio")]]) {
      const current = st.stream && st.stream.getTracks()
        .find((t) => t.kind === (kind === "videoinput" ? "video" : "audio"));
      const chosen = current ? current.getSettings().deviceId : select.value;
      select.replaceChildren();
      for (const d of devices.filter((d) => d.kind === kind)) {
        const option = document.createElement("option");
        option.value = d.deviceId;
        option.textContent = d.label || (kind === "videoinput" ? "camera" : "microphone");
        select.append(option);
      }
      if (chosen) select.value = chosen;
    }
  }

  /** Publishes: the offer with the camera and mic, answered by cowatch. */
  async function publish(replace) {
    const key = takeKey(KEY_SLOT, ["key"]);
    status("starting the camera…");
    const stream = st.stream || (await open());
    const pc = new RTCPeerConnection();
    for (const track of stream.getTracks()) pc.addTransceiver(track, { direction: "sendonly", streams: [stream] });
    await pc.setLocalDescription(await pc.createOffer());
    const response = await fetch("/whip" + (replace ? "?replace=true" : ""), {
      method: "POST",
      headers: { "Content-Type": "application/sdp", Authorization: "Bearer " + key },
      body: pc.localDescription.sdp,
    });
    if (!response.ok) {
      pc.close();
      const reason = await reasonOf(response);
      if (response.status === 409) {
        status("Someone else is publishing a camera now.", true);
        $("cam-replace").hidden = false;
        return;
      }
      throw new Error(reason);
    }
    st.location = response.headers.get("Location");
    await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
    st.pc = pc;
    pc.addEventListener("connectionstatechange", () => {
      if (st.pc !== pc) return;
      const state = pc.connectionState;
      if (state === "connected") status("Your camera and mic are in the party.");
      else if (state === "failed" || state === "disconnected") status("The connection to cowatch was lost.", true);
    });
    status("connecting…");
    showButtons();
  }

  /** Stops publishing: the party's own webcam and mic come back. */
  async function stop() {
    const key = takeKey(KEY_SLOT, ["key"]);
    const location = st.location;
    if (st.pc) st.pc.close();
    st.pc = null;
    st.location = null;
    if (st.stream) st.stream.getTracks().forEach((t) => t.stop());
    st.stream = null;
    $("cam-preview").srcObject = null;
    showButtons();
    status("Stopped.");
    if (location) {
      await fetch(location, { method: "DELETE", headers: { Authorization: "Bearer " + key } }).catch(() => {});
    }
  }

  /** Another camera or mic: into the preview and, while publishing, onto the same connection. */
  async function switchDevice() {
    if (!st.stream && !st.pc) return;
    const stream = await open();
    if (!st.pc) return;
    for (const sender of st.pc.getSenders()) {
      const track = stream.getTracks().find((t) => sender.track && t.kind === sender.track.kind);
      if (track) await sender.replaceTrack(track);
    }
  }

  const failed = (e) => status(String(e && e.message || e), true);

  /** The phone link as a QR code: this page's own address (what the phone must reach) with
   *  the ingest key in the fragment. Fetched with the key in a header into a blob URL. */
  async function showPhoneLink() {
    const key = takeKey(KEY_SLOT, ["key"]);
    const response = await fetch("/api/phone-link", {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: "Bearer " + key },
      body: JSON.stringify({ origin: location.origin }),
    });
    if (!response.ok) throw new Error(await reasonOf(response));
    const img = $("phone-qr");
    if (img.src) URL.revokeObjectURL(img.src);
    img.src = URL.createObjectURL(await response.blob());
    img.hidden = false;
    const local = ["localhost", "127.0.0.1", "[::1]"].includes(location.hostname);
    $("phone-note").textContent = local
      ? "This page is open on this machine's own address, which a phone cannot reach: open the dashboard at its network address (or behind https) and show the code again."
      : "Scan it with the phone. Phones open cameras only on https:// pages.";
    $("phone-note").hidden = false;
  }

  function start() {
    if (!$("cam-card")) return;
    // The phone page's key is in its link (#key=): taken off the address bar at once.
    takeKey(KEY_SLOT, ["key"]);
    if ($("phone-show")) $("phone-show").addEventListener("click", () => showPhoneLink().catch(failed));
    if (!navigator.mediaDevices || !window.RTCPeerConnection) {
      status("This browser cannot open a camera here: open the host page over https:// or on the cowatch machine.", true);
      $("cam-start").disabled = true;
      return;
    }
    $("cam-start").addEventListener("click", () => publish(false).catch(failed));
    $("cam-replace").addEventListener("click", () => publish(true).catch(failed));
    $("cam-stop").addEventListener("click", () => stop().catch(failed));
    $("cam-video").addEventListener("change", () => switchDevice().catch(failed));
    $("cam-audio").addEventListener("change", () => switchDevice().catch(failed));
    addEventListener("pagehide", () => { if (st.pc) stop(); });
    listDevices().catch(() => {});
    showButtons();
  }

  start();
})();
