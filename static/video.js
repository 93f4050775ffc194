// The ?video player: fetches the raw stream (?video=false) and plays it while it arrives, through
// MediaSource for WebM and fragmented MP4 (codecs from Content-Type or sniffed), else <video src>.
// Reading pauses while the media buffer is full, so a slow viewer paces the sender (no growth).
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const video = $("video");
  const SNIFF_BYTES = 64 * 1024;
  const source = new URL(location.href);
  source.searchParams.set("video", "false");
  const rawUrl = source.toString();

  function state(name, label = name) {
    const el = $("state");
    el.textContent = label;
    el.className = "state " + name;
  }

  function fail(message) {
    state("error", "error");
    $("message").textContent = message;
  }

  video.addEventListener("playing", () => state("playing"));
  video.addEventListener("waiting", () => state("waiting", "buffering"));
  video.addEventListener("ended", () => state("ended"));
  video.addEventListener("error", () => fail("The browser cannot play this stream."));

  function latin1(bytes) {
    let out = "";
    for (let i = 0; i < bytes.length; i += 8192) {
      out += String.fromCharCode.apply(null, bytes.subarray(i, i + 8192));
    }
    return out;
  }

  function hex2(n) {
    return n.toString(16).toUpperCase().padStart(2, "0");
  }

  /** A MediaSource type for the first bytes of a stream, or null for an unknown container. */
  function sniff(bytes) {
    const text = latin1(bytes);
    if (bytes[0] === 0x1a && bytes[1] === 0x45 && bytes[2] === 0xdf && bytes[3] === 0xa3) {
      const codecs = [];
      if (text.includes("V_VP9")) codecs.push("vp9");
      else if (text.includes("V_VP8")) codecs.push("vp8");
      else if (text.includes("V_AV1")) codecs.push("av01.0.05M.08");
      else if (text.includes("V_MPEG4/ISO/AVC")) codecs.push("avc1.42E01E");
      if (text.includes("A_OPUS")) codecs.push("opus");
      else if (text.includes("A_VORBIS")) codecs.push("vorbis");
      return codecs.length ? 'video/webm; codecs="' + codecs.join(",") + '"' : "video/webm";
    }
    if (text.slice(4, 8) === "ftyp") {
      const codecs = [];
      const avcC = text.indexOf("avcC");
      if (avcC >= 0 && avcC + 8 <= bytes.length) {
        codecs.push("avc1." + hex2(bytes[avcC + 5]) + hex2(bytes[avcC + 6]) + hex2(bytes[avcC + 7]));
      } else if (text.includes("hvc1") || text.includes("hev1")) codecs.push("hvc1.1.6.L93.B0");
      else if (text.includes("av01")) codecs.push("av01.0.05M.08");
      else if (text.includes("vp09")) codecs.push("vp09.00.10.08");
      if (text.includes("mp4a")) codecs.push("mp4a.40.2");
      else if (text.includes("Opus")) codecs.push("opus");
      return codecs.length ? 'video/mp4; codecs="' + codecs.join(",") + '"' : "video/mp4";
    }
    return null;
  }

  /** The stream's own Content-Type when it names codecs MediaSource takes, else a sniffed type. */
  function mediaType(contentType, head) {
    if (contentType && /codecs\s*=/i.test(contentType) && MediaSource.isTypeSupported(contentType)) {
      return contentType;
    }
    const sniffed = sniff(head);
    return sniffed && MediaSource.isTypeSupported(sniffed) ? sniffed : null;
  }

  function once(target, name) {
    return new Promise((resolve, reject) => {
      const ok = () => {
        target.removeEventListener("error", bad);
        resolve();
      };
      const bad = () => {
        target.removeEventListener(name, ok);
        reject(new Error("the browser rejected the media data"));
      };
      target.addEventListener(name, ok, { once: true });
      target.addEventListener("error", bad, { once: true });
    });
  }

  const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  /** Append, making room behind the playhead when the buffer is full (and waiting for it). */
  async function append(buffer, chunk) {
    for (;;) {
      try {
        buffer.appendBuffer(chunk);
        await once(buffer, "updateend");
        return;
      } catch (error) {
        if (error.name !== "QuotaExceededError") throw error;
        const behind = video.currentTime - 10;
        if (behind > 0 && buffer.buffered.length && buffer.buffered.start(0) < behind) {
          buffer.remove(0, behind);
          await once(buffer, "updateend");
        } else {
          await pause(500); // nothing to drop yet: let playback catch up
        }
      }
    }
  }

  /** Read until the stream's type is known (codecs found) or SNIFF_BYTES arrived or it ended. */
  async function readHead(reader, contentType) {
    const parts = [];
    for (;;) {
      const step = await reader.read();
      if (step.done) {
        const head = Bytes.concat(parts);
        return { head, done: true, type: mediaType(contentType, head) };
      }
      parts.push(step.value);
      const head = Bytes.concat(parts);
      const type = mediaType(contentType, head);
      if ((type && /codecs/.test(type)) || head.length >= SNIFF_BYTES) return { head, done: false, type };
    }
  }

  async function stream(reader, type, head, done) {
    const media = new MediaSource();
    video.src = URL.createObjectURL(media);
    await once(media, "sourceopen");
    const buffer = media.addSourceBuffer(type);
    $("format").textContent = type;
    try {
      if (head.length) await append(buffer, head);
      video.play().catch(() => {}); // muted autoplay; the controls are there otherwise
      while (!done) {
        const step = await reader.read();
        if (step.done) break;
        await append(buffer, step.value);
      }
    } catch (error) {
      if (media.readyState === "open") media.endOfStream("network");
      throw error;
    }
    media.endOfStream();
  }

  async function whole(reader, type, head, done) {
    $("format").textContent = (type || "unknown") + " (played once it has fully arrived)";
    const parts = [head];
    while (!done) {
      const step = await reader.read();
      if (step.done) break;
      parts.push(step.value);
    }
    video.src = URL.createObjectURL(new Blob(parts, { type: type || "" }));
    video.play().catch(() => {});
  }

  async function main() {
    if (!window.MediaSource) {
      state("waiting", "waiting for the sender");
      video.src = rawUrl; // the browser streams it itself
      video.play().catch(() => {});
      return;
    }
    state("waiting", "waiting for the sender");
    let response;
    try {
      response = await fetch(rawUrl, { cache: "no-store" });
    } catch {
      fail("Could not connect.");
      return;
    }
    if (!response.ok) {
      const lines = (await response.text()).split("\n").filter((l) => l.startsWith("[ERROR]"));
      fail(lines.length ? lines[0] : "HTTP " + response.status);
      return;
    }
    state("loading", "loading");
    const reader = response.body.getReader();
    const contentType = response.headers.get("content-type");
    try {
      const { head, done, type } = await readHead(reader, contentType);
      if (type) await stream(reader, type, head, done);
      else await whole(reader, contentType, head, done);
    } catch (error) {
      fail(error instanceof TypeError ? "The stream was cut short." : error.message);
    }
  }

  main();
})();
