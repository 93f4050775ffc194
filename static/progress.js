// The ?progress dashboard: reads the same URL as an event stream and shows state, bytes, rate, ETA.
// Values reach the page only as textContent; the stream is closed once the transfer ends.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const url = new URL(window.location.href);
  url.searchParams.set("progress", "1");
  const source = new EventSource(url.toString());
  source.onmessage = (message) => {
    const p = JSON.parse(message.data);
    const state = $("state");
    state.textContent = p.state;
    state.className = "state " + p.state;
    $("bytes").textContent = Fmt.size(p.bytes) + (p.total !== null ? " of " + Fmt.size(p.total) : "");
    const fill = $("fill");
    if (p.total) {
      fill.classList.remove("unknown");
      fill.style.width = Math.min(100, (100 * p.bytes) / p.total).toFixed(1) + "%";
    } else {
      fill.classList.toggle("unknown", p.state === "streaming");
      fill.style.width = p.state === "done" ? "100%" : "";
    }
    fill.classList.toggle("ok", p.state === "done");
    fill.classList.toggle("bad", p.state === "aborted");
    $("rate").textContent = p.state === "streaming" ? Fmt.size(Math.round(p.rate)) + "/s" : "-";
    $("eta").textContent =
      p.total && p.rate > 0 && p.state === "streaming" ? Fmt.seconds((p.total - p.bytes) / p.rate) : "-";
    $("receivers").textContent = p.receivers.connected + " of " + (p.receivers.expected || "?");
    $("elapsed").textContent = Fmt.seconds(p.elapsed);
    if (p.state === "done" || p.state === "aborted") source.close();
  };
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) $("state").textContent += " (stream closed)";
  };
})();
