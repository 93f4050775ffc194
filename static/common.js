// Helpers shared by every page's script: byte and time formatting, a smoothed rate meter, and
// joining byte arrays.
// Pure functions of their arguments; nothing here touches the page or the network.
"use strict";
const Fmt = (() => {
  const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

  function size(n) {
    let i = 0;
    while (n >= 1024 && i < UNITS.length - 1) {
      n /= 1024;
      i++;
    }
    return (i ? n.toFixed(1) : String(Math.round(n))) + " " + UNITS[i];
  }

  function seconds(s) {
    if (!isFinite(s) || s < 0) return "-";
    if (s < 60) return s.toFixed(0) + " s";
    return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
  }

  /** Bytes per second over the last few seconds of (time, bytes) samples. */
  function rateMeter(windowMs = 3000) {
    const samples = [];
    return (bytes, now = performance.now()) => {
      samples.push([now, bytes]);
      while (samples.length > 2 && now - samples[0][0] > windowMs) samples.shift();
      const [t0, b0] = samples[0];
      return now > t0 ? ((bytes - b0) * 1000) / (now - t0) : 0;
    };
  }

  return { size, seconds, rateMeter };
})();

const Bytes = (() => {
  /** One Uint8Array holding `parts` one after another. */
  function concat(parts) {
    const out = new Uint8Array(parts.reduce((n, part) => n + part.length, 0));
    let at = 0;
    for (const part of parts) {
      out.set(part, at);
      at += part.length;
    }
    return out;
  }

  return { concat };
})();
