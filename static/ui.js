// The web UI's shared part: paths and URLs, the curl line's quoting, file names both ways, Copy, the
// progress bar of each tab and the tab switch. Every value reaches the page as textContent.
"use strict";
const Ui = (() => {
  const $ = (id) => document.getElementById(id);
  const PREFIX = $("app").dataset.prefix || "";
  const MAX_RECEIVERS = Number($("app").dataset.maxReceivers) || 1; // the server's --max-receivers

  // ---- paths, URLs and the curl line ------------------------------------------------------

  function randomPath() {
    const alphabet = "abcdefghijkmnpqrstuvwxyz23456789"; // 32 letters: b % 32 is uniform
    return Array.from(crypto.getRandomValues(new Uint8Array(10)), (b) => alphabet[b % 32]).join("");
  }

  /** The path typed in `input`, without surrounding space or leading slashes. */
  function pathIn(input) {
    return input.value.trim().replace(/^\/+/, "");
  }

  /** The user's path without leading slashes; each segment percent-encoded. */
  function encodedPath(raw) {
    const trimmed = raw.trim().replace(/^\/+/, "");
    return trimmed.split("/").map((s) => encodeURIComponent(s)).join("/");
  }

  function pipeUrl(raw, n) {
    const query = n > 1 ? "?n=" + n : "";
    return location.origin + PREFIX + "/" + encodedPath(raw) + query;
  }

  function shellQuote(s) {
    return /^[A-Za-z0-9._\/:@%+=,-]+$/.test(s) ? s : "'" + s.replace(/'/g, "'\\''") + "'";
  }

  function receivers(input) {
    const n = Number(input.value);
    return Number.isInteger(n) && n >= 1 ? n : 1;
  }

  /** Why a Receivers field's value cannot go to this server (its `--max-receivers`), or null. */
  function receiversProblem(input) {
    const n = Number(input.value);
    if (input.value.trim() === "" || (Number.isInteger(n) && n >= 1 && n <= MAX_RECEIVERS)) return null;
    return "receivers: 1 to " + MAX_RECEIVERS + " on this server";
  }

  /** The last line of `text` that starts with `prefix` (a status line such as "[ERROR]"), or null. */
  function lastLine(text, prefix) {
    const lines = text.split("\n").filter((l) => l.startsWith(prefix));
    return lines.length ? lines[lines.length - 1] : null;
  }

  // ---- file names ----------------------------------------------------------------------------

  /** RFC 6266 Content-Disposition with an ASCII fallback and the UTF-8 name. */
  function attachment(name) {
    const ascii = name.replace(/[^\x20-\x7e]|["\\]/g, "_");
    const utf8 = encodeURIComponent(name).replace(/['()*]/g, (c) => "%" + c.charCodeAt(0).toString(16).toUpperCase());
    return 'attachment; filename="' + ascii + "\"; filename*=UTF-8''" + utf8;
  }

  /** The file name a response's Content-Disposition carries, if any. */
  function dispositionName(value) {
    if (!value) return null;
    const star = /filename\*\s*=\s*UTF-8''([^;]+)/i.exec(value);
    if (star) {
      try {
        return decodeURIComponent(star[1].trim());
      } catch {
        // fall through to the plain parameter
      }
    }
    const plain = /filename\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;]+))/i.exec(value);
    if (!plain) return null;
    return (plain[1] !== undefined ? plain[1].replace(/\\(.)/g, "$1") : plain[2].trim()) || null;
  }

  function safeFileName(name, fallback) {
    const clean = (name || "").replace(/[\x00-\x1f\x7f/\\]/g, "_").replace(/^\.+/, "").trim();
    return clean || fallback;
  }

  // ---- Copy -----------------------------------------------------------------------------------

  function copy(text, button) {
    const done = () => {
      const label = button.textContent;
      button.textContent = "Copied";
      setTimeout(() => (button.textContent = label), 1200);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, () => fallbackCopy(text) && done());
    } else if (fallbackCopy(text)) {
      done();
    }
  }

  function fallbackCopy(text) {
    const area = document.createElement("textarea");
    area.value = text;
    document.body.appendChild(area);
    area.select();
    const ok = document.execCommand("copy");
    area.remove();
    return ok;
  }

  // ---- progress display shared by both tabs -------------------------------------------------

  /**
   * One tab's state label and bar. show() counts bytes once they move; waiting() says who is awaited
   * instead; finish() gives the average rate of a complete transfer; fail() says what a failed one
   * delivered, so a refused or cut transfer never reads as "100%".
   */
  function progressView(prefix) {
    let meter = Fmt.rateMeter();
    let started = null; // performance.now() at the first count shown
    let last = 0; // the last count shown
    const state = $(prefix + "-state");
    const fill = $(prefix + "-fill");
    const bytes = $(prefix + "-bytes");
    const rate = $(prefix + "-rate");
    return {
      state(name, label = name) {
        state.textContent = label;
        state.className = "state " + name;
      },
      show(done, total) {
        $(prefix + "-progress").hidden = false;
        if (started === null) started = performance.now();
        last = done;
        const perSecond = meter(done);
        if (total) {
          fill.classList.remove("unknown");
          const percent = Math.min(100, (100 * done) / total);
          fill.style.width = percent.toFixed(1) + "%";
          bytes.textContent = Fmt.size(done) + " of " + Fmt.size(total) + " (" + percent.toFixed(0) + "%)";
        } else {
          fill.classList.add("unknown");
          fill.style.width = "100%"; // so finishing does not animate from zero
          bytes.textContent = Fmt.size(done);
        }
        rate.textContent = Fmt.size(Math.round(perSecond)) + "/s";
      },
      waiting(label) {
        meter = Fmt.rateMeter(); // the count and the average start again when bytes move
        started = null;
        $(prefix + "-progress").hidden = false;
        fill.className = "fill";
        fill.style.width = "0";
        bytes.textContent = label;
        rate.textContent = "-";
      },
      finish(ok) {
        fill.classList.remove("unknown");
        fill.classList.toggle("ok", ok);
        fill.classList.toggle("bad", !ok);
        if (!ok) return;
        fill.style.width = "100%";
        const seconds = started === null ? 0 : (performance.now() - started) / 1000;
        if (seconds > 0) rate.textContent = Fmt.size(Math.round(last / seconds)) + "/s (average)";
      },
      fail(what, keepBar) {
        if (!keepBar) fill.style.width = "0";
        bytes.textContent = what;
        rate.textContent = "-";
      },
      reset() {
        meter = Fmt.rateMeter();
        started = null;
        last = 0;
        fill.className = "fill";
        fill.style.width = "0";
        bytes.textContent = "-";
        rate.textContent = "-";
      },
    };
  }

  // ---- tabs -----------------------------------------------------------------------------------

  function selectTab(name) {
    for (const tab of ["send", "receive"]) {
      $("tab-" + tab).setAttribute("aria-selected", String(tab === name));
      $(tab).hidden = tab !== name;
    }
  }

  return {
    $,
    randomPath,
    pathIn,
    pipeUrl,
    shellQuote,
    receivers,
    receiversProblem,
    lastLine,
    attachment,
    dispositionName,
    safeFileName,
    copy,
    progressView,
    selectTab,
  };
})();
