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
  // Where the File System Access API exists (Chromium), the user picks the file first and each
  // chunk is written (decrypted on the fly) as it arrives; a cut or cancelled transfer aborts the
  // write, so no complete-looking file is left. Elsewhere a plain receive goes to the browser's own
  // downloads (`?download`), and only an encrypted one is held in the page's memory.

  const recvView = progressView("recv");
  let receiving = null; // AbortController while a receive runs
  let savedUrl = null;
  const WRITE_BATCH = 1 << 20; // bytes gathered before each write to disk
  const MEMORY_WARNING =
    "This browser cannot write to disk as the bytes arrive: the decrypted file is held in this " +
    "page's memory until the end. Keep it to a few hundred MiB, or use curl | openssl.";

  function canSaveToDisk() {
    return typeof window.showSaveFilePicker === "function" && typeof FileSystemWritableFileStream === "function";
  }

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

  /** The first `limit` bytes pushed, for the text preview: never more is kept. */
  function headKeeper(limit) {
    const parts = [];
    let size = 0;
    return {
      add(bytes) {
        if (size >= limit || !bytes.length) return;
        const part = bytes.slice(0, limit - size);
        parts.push(part);
        size += part.length;
      },
      bytes: () => Bytes.concat(parts),
    };
  }

  /**
   * A response body in pieces. With a BYOB reader: whole WRITE_BATCH views of one reused buffer, each
   * valid only until the next is asked for, so a long receive makes no garbage to collect.
   */
  async function* pieces(body) {
    let reader = null;
    try {
      reader = body.getReader({ mode: "byob" });
    } catch {
      const plain = body.getReader(); // not a byte stream here
      for (;;) {
        const { done, value } = await plain.read();
        if (done) return;
        yield value;
      }
    }
    let buffer = new ArrayBuffer(WRITE_BATCH);
    let filled = 0;
    for (;;) {
      const { done, value } = await reader.read(new Uint8Array(buffer, filled, buffer.byteLength - filled));
      if (value) {
        buffer = value.buffer; // the read hands the (transferred) buffer back
        filled += value.length;
      }
      if (done || filled === buffer.byteLength) {
        if (filled) yield new Uint8Array(buffer, 0, filled);
        filled = 0;
        if (done) return;
      }
    }
  }

  /** Writes into the file the user picked, in batches; discard() leaves no partial file. */
  function diskSink(handle) {
    let writable = null;
    let pending = [];
    let pendingSize = 0;
    let size = 0;
    async function flush() {
      if (!pendingSize) return;
      const batch = pending.length === 1 ? pending[0] : Bytes.concat(pending);
      pending = [];
      pendingSize = 0;
      await writable.write(batch);
    }
    return {
      async open() {
        writable = await handle.createWritable({ keepExistingData: false });
      },
      async write(bytes) {
        if (!bytes.length) return;
        size += bytes.length;
        if (!pendingSize && bytes.length >= WRITE_BATCH) {
          await writable.write(bytes); // straight from the caller's buffer
          return;
        }
        pending.push(bytes.slice()); // the caller may reuse `bytes`
        pendingSize += bytes.length;
        if (pendingSize >= WRITE_BATCH) await flush();
      },
      async close() {
        await flush();
        await writable.close(); // only now does the file get its content
        return { size, name: handle.name };
      },
      /** Abort the write (the browser drops what was written) and remove the file if empty. */
      async discard() {
        pending = [];
        if (writable) await writable.abort().catch(() => {});
        try {
          // the save picker empties the chosen file: an empty one is removed, anything else kept
          if (typeof handle.remove === "function" && (await handle.getFile()).size === 0) {
            await handle.remove();
            return "The partial file was discarded: " + handle.name + " was removed.";
          }
        } catch {
          // the file is already gone, or may not be touched
        }
        return "The partial file was discarded: nothing was written to " + handle.name + ".";
      },
    };
  }

  /** Holds the file in memory (no File System Access API and a passphrase); resolves to a Blob. */
  function memorySink() {
    let parts = [];
    return {
      async open() {},
      async write(bytes) {
        if (bytes.length) parts.push(bytes.slice()); // the caller may reuse `bytes`
      },
      async close(type) {
        const blob = new Blob(parts, { type });
        parts = [];
        return { blob, size: blob.size };
      },
      async discard() {
        parts = [];
        return "";
      },
    };
  }

  function startReceive() {
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
    const url = pipeUrl(path, receivers($("recv-n")));
    const passphrase = $("recv-pass").value;
    const fallback = safeFileName(path.split("/").filter(Boolean).pop(), "download");
    if (canSaveToDisk()) {
      // called in the click itself: the picker needs the user's gesture
      const picked = window.showSaveFilePicker({ suggestedName: fallback });
      receive(url, passphrase, fallback, picked);
    } else if (!passphrase) {
      handToDownloads(url);
    } else {
      receive(url, passphrase, fallback, null);
    }
  }

  /** No File System Access API: the browser's own download manager streams the file to disk. */
  function handToDownloads(url) {
    const link = document.createElement("a");
    link.href = url + (url.includes("?") ? "&" : "?") + "download";
    link.download = ""; // the name comes from the response's Content-Disposition
    link.hidden = true;
    document.body.appendChild(link);
    link.click();
    link.remove();
    recvView.state("done", "in your downloads");
    recvMessage(
      "Handed to the browser's downloads (this browser cannot write a file from the page as it " +
        "arrives): follow or cancel it there. A text arrives as a file too.",
      false,
    );
  }

  async function pickFile(picked) {
    recvView.state("waiting", "choose where to save");
    try {
      return await picked;
    } catch (error) {
      if (error.name === "AbortError") return null; // the user closed the picker
      throw error;
    }
  }

  async function receive(url, passphrase, fallback, picked) {
    const controller = new AbortController();
    receiving = controller;
    recvBusy(true);
    let sink = null;
    try {
      if (picked) {
        const handle = await pickFile(picked);
        if (!handle) {
          recvView.state("ready", "no file chosen");
          return;
        }
        sink = diskSink(handle);
        await sink.open();
      } else {
        sink = memorySink();
        recvMessage(MEMORY_WARNING, false);
      }
      recvView.state("waiting", "waiting for the sender");
      const response = await fetch(url, { signal: controller.signal, cache: "no-store" });
      if (!response.ok) {
        const text = await response.text();
        throw new Error(lastLine(text, "[ERROR]") || "HTTP " + response.status);
      }
      const length = response.headers.get("content-length");
      const total = length === null ? null : Number(length);
      const type = response.headers.get("content-type") || "application/octet-stream";
      const named = dispositionName(response.headers.get("content-disposition"));
      const name = safeFileName(named, fallback);
      const decryptor = passphrase ? new OpensslAes.Decryptor(passphrase) : null;
      const head = headKeeper(TEXT_PREVIEW_LIMIT + 1);
      let received = 0;
      recvView.state("receiving", "receiving");
      recvView.show(0, total);
      for await (const value of pieces(response.body)) {
        received += value.length;
        recvView.show(received, total);
        const plain = decryptor ? await decryptor.push(value.slice()) : value;
        head.add(plain);
        await sink.write(plain);
      }
      if (decryptor) {
        recvView.state("receiving", "decrypting");
        const last = await decryptor.finish();
        head.add(last);
        await sink.write(last);
      }
      const saved = await sink.close(decryptor ? "application/octet-stream" : type);
      sink = null; // complete: nothing to discard any more
      recvView.finish(true);
      recvView.state("done");
      if (decryptor) recvMessage("Received " + Fmt.size(received) + ", decrypted to " + Fmt.size(saved.size) + ".", false);
      showResult(saved, named ? name : null, fallback, head.bytes(), decryptor ? null : type);
    } catch (error) {
      recvView.finish(false);
      const discarded = sink ? await sink.discard() : "";
      if (controller.signal.aborted) {
        recvView.state("aborted", "cancelled");
        recvMessage(discarded, true);
      } else {
        recvView.state("error", "failed");
        // a network error here means the transfer was cut short: never offer a partial file
        const why = error instanceof TypeError ? "The transfer was cut short." : error.message;
        recvMessage(discarded ? why + " " + discarded : why, true);
      }
    } finally {
      recvBusy(false);
      receiving = null;
    }
  }

  /**
   * `saved` is { size, name } for a file on disk, { size, blob } for one held in memory; `named` is
   * the sender's file name (or null), else the file is named after the path.
   */
  function showResult(saved, named, fallback, head, type) {
    const name = named || fallback;
    const save = $("recv-save");
    const text = asText(head, type);
    $("recv-text-box").hidden = text === null;
    $("recv-text").value = text === null ? "" : text;
    $("recv-result").hidden = false;
    save.hidden = !saved.blob;
    if (!saved.blob) {
      const note = named && named !== saved.name ? " (the sender named it " + named + ")" : "";
      $("recv-name").textContent = "Saved " + saved.name + ", " + Fmt.size(saved.size) + note + ".";
      return;
    }
    savedUrl = URL.createObjectURL(saved.blob);
    save.href = savedUrl;
    save.download = name;
    save.textContent = "Save " + name;
    $("recv-name").textContent = Fmt.size(saved.size);
    if (text === null) save.click(); // a file: save it at once, as a plain download would
  }

  $("recv-start").addEventListener("click", startReceive);
  $("recv-cancel").addEventListener("click", () => receiving && receiving.abort());
  $("recv-how").textContent = canSaveToDisk()
    ? "Receive asks where to save first, then writes the file as it arrives (decrypted on the fly with a passphrase)."
    : "Receive hands the file to your browser's downloads; with a passphrase it is decrypted in this page's " +
      "memory instead (keep that to a few hundred MiB).";

  // ---- start ------------------------------------------------------------------------------------

  const initial = randomPath();
  $("send-path").value = initial;
  $("recv-path").value = new URLSearchParams(location.search).get("path") || "";
  if ($("recv-path").value) selectTab("receive");
  setMode();
  describeFiles();
})();
