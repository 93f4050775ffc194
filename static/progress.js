// The ?progress dashboard: reads the same URL as an event stream; shows state, bytes, rate, ETA, a rate chart.
// Values reach the page only as textContent and SVG attributes (its CSP allows no style); at most 600 samples.
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

  /** The rate chart: a polyline of (elapsed, rate) samples in a plot that stretches to the page's
   * width; the y-axis goes up to the peak seen. When full, the samples are halved. */
  const chart = (() => {
    const NS = "http://www.w3.org/2000/svg";
    const MAX_POINTS = 600;
    const W = 600; // the plot's viewBox: x 0..W is 0..latest elapsed, y 0..H is peak..0
    const H = 100;
    const TOP = 18; // px: the peak's line, under its label
    const BASE = 100; // px: the zero line, above the elapsed labels
    let points = [];
    let peak = 0;
    let previous = null; // the state of the last event
    let root, line, area, peakLabel, endLabel;

    /** Every two samples become one: the later time, the mean rate (samples come 4 a second). */
    const halve = (all) => all.filter((_, i) => i % 2 === 1).map(([t, r], i) => [t, (all[2 * i][1] + r) / 2]);

    function make(name, attributes, parent) {
      const el = document.createElementNS(NS, name);
      for (const key in attributes) el.setAttribute(key, String(attributes[key]));
      parent.appendChild(el);
      return el;
    }

    function build() {
      const box = $("chart");
      root = make("svg", { width: "100%", height: 120, role: "img", fill: "currentColor", "font-size": 12 }, box);
      const rule = { x1: 0, x2: "100%", stroke: "currentColor" };
      make("line", { ...rule, y1: TOP, y2: TOP, "stroke-opacity": 0.3, "stroke-dasharray": "3 3" }, root);
      make("line", { ...rule, y1: BASE, y2: BASE, "stroke-opacity": 0.5 }, root);
      const plot = make(
        "svg",
        {
          y: TOP,
          width: "100%",
          height: BASE - TOP,
          viewBox: "0 0 " + W + " " + H,
          preserveAspectRatio: "none",
          overflow: "visible", // the line at the peak is not cut in half
        },
        root,
      );
      area = make("polygon", { "fill-opacity": 0.12, stroke: "none" }, plot);
      const stroke = { stroke: "currentColor", "stroke-width": 2, "stroke-linejoin": "round" };
      line = make("polyline", { ...stroke, fill: "none", "vector-effect": "non-scaling-stroke" }, plot);
      peakLabel = make("text", { x: 0, y: TOP - 5 }, root);
      make("text", { x: 0, y: 116 }, root).textContent = "0 s";
      endLabel = make("text", { x: "100%", y: 116, "text-anchor": "end" }, root);
      box.hidden = false;
    }

    function draw(p) {
      const last = points[points.length - 1];
      const span = last[0] > 0 ? last[0] : 1;
      const xy = points.map(([t, r]) => {
        const y = peak > 0 ? H - (H * r) / peak : H;
        return ((W * t) / span).toFixed(1) + "," + y.toFixed(1);
      });
      line.setAttribute("points", xy.join(" "));
      const x0 = ((W * points[0][0]) / span).toFixed(1);
      area.setAttribute("points", x0 + "," + H + " " + xy.join(" ") + " " + W + "," + H);
      peakLabel.textContent = "peak " + perSecond(peak);
      endLabel.textContent = tenths(last[0]);
      let label = "Transfer rate over time: latest " + perSecond(last[1]) + ", peak " + perSecond(peak);
      if (p.state === "done" && p.elapsed > 0) label += ", " + average(p);
      if (p.state === "aborted") label += "; the transfer stopped before the end";
      root.setAttribute("aria-label", label);
      root.classList.toggle("muted", p.state === "aborted"); // (base.css: the muted colour)
      if (p.state === "aborted") line.setAttribute("stroke-dasharray", "6 4");
    }

    /** Take one event: a sample while streaming and at the end; the chart appears at the first. */
    return (p) => {
      const sawStart = previous === "waiting"; // this page watched the transfer from its first byte
      previous = p.state;
      if (p.state !== "streaming" && p.state !== "done" && p.state !== "aborted") return;
      if (sawStart || (points.length && p.elapsed < points[points.length - 1][0])) {
        points = sawStart && p.elapsed > 0 ? [[0, p.rate]] : []; // (its rate since the start)
        peak = 0;
      }
      if (!points.length || p.elapsed > points[points.length - 1][0]) {
        if (points.length >= MAX_POINTS) points = halve(points);
        points.push([p.elapsed, p.rate]);
        peak = Math.max(peak, p.rate);
      }
      if (!root && p.state !== "streaming") return; // this page saw no byte move: nothing to draw
      if (!root) build();
      draw(p);
    };
  })();

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
    $("rate").textContent = rate(p) + (p.limit ? " (capped at " + perSecond(p.limit) + ")" : "");
    $("eta").textContent =
      p.total && p.rate > 0 && p.state === "streaming" ? Fmt.seconds((p.total - p.bytes) / p.rate) : "-";
    $("receivers").textContent = receivers(p);
    $("elapsed").textContent = p.state === "idle" || p.state === "waiting" ? "-" : tenths(p.elapsed);
    chart(p);
    if (p.state === "done" || p.state === "aborted") source.close();
  };
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) $("state").textContent += " (stream closed)";
  };
})();
