// The web UI: send text or files (upload progress, cancel, optional E2E encryption) and receive a
// path in the browser. Every value from the user or the network reaches the page as textContent.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const app = $("app");
  const PREFIX = app.dataset.prefix || "";
  const TEXT_PREVIEW_LIMIT = 1 << 20;

  // ---- paths, URLs and the curl line ------------------------------------------------------

  function randomPath() {
    const alphabet = "abcdefghijkmnpqrstuvwxyz23456789"; // 32 letters: b % 32 is uniform
    return Array.from(crypto.getRandomValues(new Uint8Array(10)), (b) => alphabet[b % 32]).join("");
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

  function progressView(prefix) {
    const meter = Fmt.rateMeter();
    const state = $(prefix + "-state");
    return {
      state(name, label = name) {
        state.textContent = label;
        state.className = "state " + name;
      },
      show(done, total) {
        $(prefix + "-progress").hidden = false;
        const fill = $(prefix + "-fill");
        const rate = meter(done);
        if (total) {
          fill.classList.remove("unknown");
          const percent = Math.min(100, (100 * done) / total);
          fill.style.width = percent.toFixed(1) + "%";
          $(prefix + "-bytes").textContent =
            Fmt.size(done) + " of " + Fmt.size(total) + " (" + percent.toFixed(0) + "%)";
        } else {
          fill.classList.add("unknown");
          fill.style.width = "100%"; // so finishing does not animate from zero
          $(prefix + "-bytes").textContent = Fmt.size(done);
        }
        $(prefix + "-rate").textContent = Fmt.size(Math.round(rate)) + "/s";
      },
      finish(ok) {
        const fill = $(prefix + "-fill");
        fill.classList.remove("unknown");
        fill.classList.toggle("ok", ok);
        fill.classList.toggle("bad", !ok);
        if (ok) fill.style.width = "100%";
      },
      reset() {
        const fill = $(prefix + "-fill");
        fill.className = "fill";
        fill.style.width = "0";
        $(prefix + "-bytes").textContent = "-";
        $(prefix + "-rate").textContent = "-";
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
  $("tab-send").addEventListener("click", () => selectTab("send"));
  $("tab-receive").addEventListener("click", () => selectTab("receive"));

  // ---- send -------------------------------------------------------------------------------------

  const sendView = progressView("send");
  let sending = null; // { xhr, cancelled } while a send runs

  function mode() {
    return document.querySelector("input[name=mode]:checked").value;
  }

  function chosenFiles() {
    return Array.from($("files").files);
  }

  function describeFiles() {
    const files = chosenFiles();
    const total = files.reduce((n, f) => n + f.size, 0);
    $("files-info").textContent = files.length
      ? files.length + " file(s), " + Fmt.size(total)
      : "or drop files here";
  }

  function receiveCommand() {
    let command = "curl " + shellQuote(pipeUrl($("send-path").value, receivers($("send-n"))));
    if ($("send-pass").value) command += " | openssl aes-256-cbc -d -pbkdf2 -iter 100000 -md sha256";
    const files = chosenFiles();
    if (mode() === "file" && files.length > 1) command += " | tar xvf -";
    else if (mode() === "file" && files.length === 1) command += " > " + shellQuote(safeFileName(files[0].name, "file"));
    return command;
  }

  function updateShare() {
    $("send-url").value = pipeUrl($("send-path").value, receivers($("send-n")));
    $("send-curl").textContent = receiveCommand();
  }

  function setMode() {
    const text = mode() === "text";
    $("text-field").hidden = !text;
    $("file-field").hidden = text;
    updateShare();
  }

  for (const radio of document.querySelectorAll("input[name=mode]")) radio.addEventListener("change", setMode);
  for (const id of ["send-path", "send-n", "send-pass"]) $(id).addEventListener("input", updateShare);
  $("files").addEventListener("change", () => {
    describeFiles();
    updateShare();
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    $("files").files = e.dataTransfer.files;
    describeFiles();
    updateShare();
  });
  $("copy-url").addEventListener("click", (e) => copy($("send-url").value, e.currentTarget));
  $("copy-curl").addEventListener("click", (e) => copy($("send-curl").textContent, e.currentTarget));

  function sendLog(text) {
    const log = $("send-log");
    log.textContent = text;
    log.scrollTop = log.scrollHeight;
  }

  function lastLine(text, prefix) {
    const lines = text.split("\n").filter((l) => l.startsWith(prefix));
    return lines.length ? lines[lines.length - 1] : null;
  }

  function sendBusy(busy) {
    $("send-start").disabled = busy;
    $("send-cancel").disabled = !busy;
  }

  /** What to upload: the body Blob, its Content-Type and Content-Disposition (or null). */
  function sendBody() {
    if (mode() === "text") {
      return { body: new Blob([$("text").value]), type: "text/plain; charset=utf-8", disposition: null };
    }
    const files = chosenFiles();
    if (!files.length) throw new Error("Choose a file first.");
    if (files.length === 1) {
      const file = files[0];
      return { body: file, type: file.type || "application/octet-stream", disposition: attachment(file.name) };
    }
    return { body: Tar.archive(files), type: "application/x-tar", disposition: attachment("files.tar") };
  }

  async function startSend() {
    const path = $("send-path").value.trim().replace(/^\/+/, "");
    sendView.reset();
    sendLog("");
    if (!path) {
      sendView.state("error", "choose a path");
      return;
    }
    const job = { xhr: null, cancelled: false };
    sending = job;
    sendBusy(true);
    try {
      let { body, type, disposition } = sendBody();
      const passphrase = $("send-pass").value;
      if (passphrase) {
        sendView.state("sending", "encrypting");
        body = await OpensslAes.encryptBlob(
          body, passphrase, (done, total) => sendView.show(done, total), () => job.cancelled);
        // the server sees ciphertext only: no file name, no type
        type = "application/octet-stream";
        disposition = null;
        sendView.reset();
      }
      upload(job, pipeUrl(path, receivers($("send-n"))), body, type, disposition);
    } catch (error) {
      sendBusy(false);
      sending = null;
      sendView.finish(false);
      sendView.state(job.cancelled ? "aborted" : "error", job.cancelled ? "cancelled" : error.message);
    }
  }

  function upload(job, url, body, type, disposition) {
    const xhr = new XMLHttpRequest();
    job.xhr = xhr;
    const total = body.size;
    xhr.open("PUT", url);
    xhr.setRequestHeader("Content-Type", type);
    if (disposition) xhr.setRequestHeader("Content-Disposition", disposition);
    xhr.upload.addEventListener("progress", (e) => sendView.show(e.loaded, total));
    xhr.addEventListener("progress", () => sendLog(xhr.responseText));
    xhr.addEventListener("load", () => {
      const text = xhr.responseText;
      sendLog(text);
      const complete = xhr.status === 200 && /^\[INFO\] Transfer complete\./m.test(text);
      sendView.finish(complete);
      if (complete) {
        sendView.show(total, total);
        sendView.state("done");
      } else {
        sendView.state("error", lastLine(text, "[ERROR]") || "failed (HTTP " + xhr.status + ")");
      }
    });
    xhr.addEventListener("error", () => {
      sendView.finish(false);
      sendView.state("error", "connection failed");
    });
    xhr.addEventListener("abort", () => {
      sendView.finish(false);
      sendView.state("aborted", "cancelled");
    });
    xhr.addEventListener("loadend", () => {
      sendBusy(false);
      sending = null;
    });
    sendView.state("sending", "sending");
    sendView.show(0, total);
    xhr.send(body);
  }

  $("send-start").addEventListener("click", startSend);
  $("send-cancel").addEventListener("click", () => {
    if (!sending) return;
    sending.cancelled = true;
    if (sending.xhr) sending.xhr.abort();
  });

  // ---- receive --------------------------------------------------------------------------------

  const recvView = progressView("recv");
  let receiving = null; // AbortController while a receive runs
  let savedUrl = null;

  function recvBusy(busy) {
    $("recv-start").disabled = busy;
    $("recv-cancel").disabled = !busy;
  }

  function recvMessage(text, bad) {
    const message = $("recv-message");
    message.textContent = text;
    message.classList.toggle("bad", bad);
  }

  /** The text of `bytes` when they are shown best as text, else null. */
  function asText(bytes, type) {
    if (bytes.length === 0 || bytes.length > TEXT_PREVIEW_LIMIT) return null;
    if (type && !/^text\//i.test(type) && !/json|xml|javascript/i.test(type)) return null;
    try {
      const text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
      return text.includes("\0") ? null : text;
    } catch {
      return null;
    }
  }

  async function startReceive() {
    const path = $("recv-path").value.trim().replace(/^\/+/, "");
    recvView.reset();
    recvMessage("", false);
    $("recv-result").hidden = true;
    if (savedUrl) URL.revokeObjectURL(savedUrl);
    savedUrl = null;
    if (!path) {
      recvView.state("error", "choose a path");
      return;
    }
    const controller = new AbortController();
    receiving = controller;
    recvBusy(true);
    recvView.state("waiting", "waiting for the sender");
    const passphrase = $("recv-pass").value;
    try {
      const response = await fetch(pipeUrl(path, receivers($("recv-n"))), {
        signal: controller.signal,
        cache: "no-store",
      });
      if (!response.ok) {
        const text = await response.text();
        throw new Error(lastLine(text, "[ERROR]") || "HTTP " + response.status);
      }
      const length = response.headers.get("content-length");
      const total = length === null ? null : Number(length);
      const type = response.headers.get("content-type") || "application/octet-stream";
      const fallback = path.split("/").filter(Boolean).pop() || "download";
      const name = safeFileName(dispositionName(response.headers.get("content-disposition")), fallback);
      const decryptor = passphrase ? new OpensslAes.Decryptor(passphrase) : null;
      const parts = [];
      let received = 0;
      recvView.state("receiving", "receiving");
      recvView.show(0, total);
      const reader = response.body.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        received += value.length;
        recvView.show(received, total);
        parts.push(decryptor ? await decryptor.push(value) : value);
      }
      if (decryptor) {
        recvView.state("receiving", "decrypting");
        parts.push(await decryptor.finish());
      }
      const blob = new Blob(parts, { type: decryptor ? "application/octet-stream" : type });
      recvView.finish(true);
      recvView.state("done");
      if (decryptor) recvMessage("Received " + Fmt.size(received) + ", decrypted to " + Fmt.size(blob.size) + ".", false);
      await showResult(blob, name, decryptor ? null : type);
    } catch (error) {
      recvView.finish(false);
      if (controller.signal.aborted) {
        recvView.state("aborted", "cancelled");
      } else {
        recvView.state("error", "failed");
        // a network error here means the transfer was cut short: never offer a partial file
        recvMessage(error instanceof TypeError ? "The transfer was cut short." : error.message, true);
      }
    } finally {
      recvBusy(false);
      receiving = null;
    }
  }

  async function showResult(blob, name, type) {
    savedUrl = URL.createObjectURL(blob);
    const save = $("recv-save");
    save.href = savedUrl;
    save.download = name;
    save.textContent = "Save " + name;
    $("recv-name").textContent = Fmt.size(blob.size);
    $("recv-result").hidden = false;
    const text = asText(new Uint8Array(await blob.slice(0, TEXT_PREVIEW_LIMIT + 1).arrayBuffer()), type);
    $("recv-text-box").hidden = text === null;
    $("recv-text").value = text === null ? "" : text;
    if (text === null) save.click(); // a file: save it at once, as a plain download would
  }

  $("recv-start").addEventListener("click", startReceive);
  $("recv-cancel").addEventListener("click", () => receiving && receiving.abort());

  // ---- start ------------------------------------------------------------------------------------

  const initial = randomPath();
  $("send-path").value = initial;
  $("recv-path").value = new URLSearchParams(location.search).get("path") || "";
  if ($("recv-path").value) selectTab("receive");
  setMode();
  describeFiles();
})();
