// The ?progress dashboard: reads the same URL as an event stream and shows state, bytes, rate, ETA.
// Values reach the page only as textContent; the stream is closed once the transfer ends.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const url = new URL(window.location.href);
  url.searchParams.set("progress", "1");
  const source = new EventSource(url.toString());
  const LABELS = { idle: "nobody here yet", waiting: "waiting", streaming: "streaming", done: "done", aborted: "aborted" };
  let seenParties = false; // a sender or receiver was on the path while this page watched

  /** One sentence on what the state means, for the line under the label. */
  function explain(p) {
    if (p.state === "idle") {
      return seenParties
        ? "Nobody is on this path now: its sender and receivers left before the transfer started."
        : "Nobody is on this path yet. This page follows it as soon as a sender or a receiver comes.";
    }
    if (p.state === "waiting") {
      const missing = p.receivers.expected > p.receivers.connected;
      return missing
        ? "The transfer starts once " + p.receivers.expected + " receiver(s) and the sender are here."
        : "Every receiver is here: waiting for the sender.";
    }
    if (p.state === "done") return "The transfer is complete.";
    if (p.state === "aborted") return "The transfer stopped before the end.";
    return "";
  }

  function receivers(p) {
    if (p.state === "idle") return "none yet";
    return p.receivers.connected + " of " + p.receivers.expected;
  }

  const perSecond = (r) => Fmt.size(Math.round(r)) + "/s";
  const tenths = (s) => (s < 60 ? s.toFixed(1) + " s" : Fmt.seconds(s));
  const average = (p) => "average " + perSecond(p.bytes / p.elapsed) + " over " + tenths(p.elapsed);

  function rate(p) {
    if (p.state === "streaming") return perSecond(p.rate);
    if (p.state === "done" && p.elapsed > 0) return average(p);
    return "-";
  }

  source.onmessage = (message) => {
    const p = JSON.parse(message.data);
    if (p.state !== "idle") seenParties = true;
    const state = $("state");
    state.textContent = LABELS[p.state] || p.state;
    state.className = "state " + p.state;
    $("explain").textContent = explain(p);
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
    $("rate").textContent = rate(p);
    $("eta").textContent =
      p.total && p.rate > 0 && p.state === "streaming" ? Fmt.seconds((p.total - p.bytes) / p.rate) : "-";
    $("receivers").textContent = receivers(p);
    $("elapsed").textContent = p.state === "idle" || p.state === "waiting" ? "-" : tenths(p.elapsed);
    if (p.state === "done" || p.state === "aborted") source.close();
  };
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) $("state").textContent += " (stream closed)";
  };
})();
