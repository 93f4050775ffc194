// The Receive tab: where the File System Access API exists, the file is written (decrypted) as it arrives.
// Invariant: a cut, cancelled or wrongly decrypted receive leaves no complete-looking file, nor a Save link.
"use strict";
(() => {
  const { $ } = Ui;
  // Elsewhere a plain receive goes to the browser's own downloads (`?download`), and only an
  // encrypted one is held in the page's memory.
  const TEXT_PREVIEW_LIMIT = 1 << 20; // a body typed as text is shown up to this size
  const ANY_TYPE_TEXT_LIMIT = 64 << 10; // any other type (curl -T - sends octet-stream), up to this
  const recvView = Ui.progressView("recv");
  let receiving = null; // AbortController while a receive runs
  let savedUrl = null;
  const WRITE_BATCH = 1 << 20; // bytes gathered before each write to disk
  const MEMORY_WARNING =
    "This browser cannot write to disk as the bytes arrive: the decrypted file is held in this " +
    "page's memory until the end. Keep it to a few hundred MiB, or use curl | openssl.";
  const SIGNED_IN_WARNING =
    "Signed in, this browser's downloads cannot carry your user: the file is held in this page's " +
    "memory until the end. Keep it to a few hundred MiB, or use curl -u.";

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

  /**
   * The text of `bytes` (a whole body) when they are shown best as text, else null: valid UTF-8
   * without NUL, up to 1 MiB when typed as text, up to 64 KiB whatever the type.
   */
  function asText(bytes, type) {
    if (bytes.length === 0 || bytes.length > TEXT_PREVIEW_LIMIT) return null;
    const typedAsText = !type || /^text\//i.test(type) || /json|xml|javascript/i.test(type);
    if (!typedAsText && bytes.length > ANY_TYPE_TEXT_LIMIT) return null;
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
    const path = Ui.pathIn($("recv-path"));
    recvView.reset();
    recvMessage("", false);
    $("recv-result").hidden = true;
    if (savedUrl) URL.revokeObjectURL(savedUrl);
    savedUrl = null;
    if (!path) {
      recvView.state("error", "choose a path");
      return;
    }
    const refused = Ui.receiversProblem($("recv-n"));
    if (refused) {
      recvView.state("error", refused);
      return;
    }
    const url = Ui.pipeUrl(path, Ui.receivers($("recv-n")));
    const passphrase = $("recv-pass").value;
    const fallback = Ui.safeFileName(path.split("/").filter(Boolean).pop(), "download");
    if (canSaveToDisk()) {
      // called in the click itself: the picker needs the user's gesture
      const picked = window.showSaveFilePicker({ suggestedName: fallback });
      receive(url, passphrase, fallback, picked);
    } else if (!passphrase && !Auth.signedIn()) {
      handToDownloads(url); // (a browser asks for a user itself, should a download need one)
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
        recvMessage(passphrase ? MEMORY_WARNING : SIGNED_IN_WARNING, false);
      }
      recvView.state("waiting", "waiting for the sender");
      const response = await fetch(url, {
        signal: controller.signal,
        cache: "no-store",
        headers: Auth.headers({}),
        credentials: "omit", // (a 401 is the page's to ask about, not the browser's own prompt)
      });
      if (!response.ok) {
        const text = await response.text();
        const refused = new Error(Ui.lastLine(text, "[ERROR]") || "HTTP " + response.status);
        refused.needsUser = response.status === 401;
        throw refused;
      }
      const length = response.headers.get("content-length");
      const total = length === null ? null : Number(length);
      const type = response.headers.get("content-type") || "application/octet-stream";
      const named = Ui.dispositionName(response.headers.get("content-disposition"));
      const name = Ui.safeFileName(named, fallback);
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
        if (error.needsUser) Auth.ask(why, startReceive); // (received again once a user is given)
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

  $("recv-path").value = new URLSearchParams(location.search).get("path") || "";
  if ($("recv-path").value) Ui.selectTab("receive");
})();
