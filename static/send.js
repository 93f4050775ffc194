// The Send tab: text or files (several as one tar) to a path, with progress, Cancel and E2E encryption.
// Invariant: an encrypted send streams where it can (HTTP/2), else is held in memory, and its log says which.
"use strict";
(() => {
  const { $ } = Ui;
  const view = Ui.progressView("send");
  const ADVICE =
    "Keep it to a few hundred MiB, or open this page over HTTPS (HTTP/2) in a Chromium-based " +
    "browser, or use openssl | curl -T -.";
  let sending = null; // { cancelled, transfer: { abort() } } while a send runs
  let note = ""; // the page's own line above the server's status lines in the log

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
    let command = "curl " + Ui.shellQuote(Ui.pipeUrl($("send-path").value, Ui.receivers($("send-n"))));
    if ($("send-pass").value) command += " | openssl aes-256-cbc -d -pbkdf2 -iter 100000 -md sha256";
    const files = chosenFiles();
    if (mode() === "file" && files.length > 1) command += " | tar xvf -";
    else if (mode() === "file" && files.length === 1) {
      command += " > " + Ui.shellQuote(Ui.safeFileName(files[0].name, "file"));
    }
    return command;
  }

  function updateShare() {
    $("send-url").value = Ui.pipeUrl($("send-path").value, Ui.receivers($("send-n")));
    $("send-curl").textContent = receiveCommand();
  }

  function setMode() {
    const text = mode() === "text";
    $("text-field").hidden = !text;
    $("file-field").hidden = text;
    updateShare();
  }

  function sendLog(text) {
    const log = $("send-log");
    log.textContent = note ? note + (text ? "\n" + text : "") : text;
    log.scrollTop = log.scrollHeight;
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
      return { body: file, type: file.type || "application/octet-stream", disposition: Ui.attachment(file.name) };
    }
    return { body: Tar.archive(files), type: "application/x-tar", disposition: Ui.attachment("files.tar") };
  }

  /**
   * How far the server's status lines say the send got: "starting" (no line yet; over HTTP/2 the
   * lines come only at the end), "waiting" with the receivers still awaited, or "streaming".
   */
  function phaseOf(text) {
    if (/^\[INFO\] Streaming to /m.test(text)) return { name: "streaming" };
    const waiting = /^\[INFO\] Waiting for (\d+) receiver\(s\)/m.exec(text);
    if (!waiting) return { name: "starting" };
    const counts = [...text.matchAll(/^\[INFO\] (\d+) of \d+ receiver\(s\) connected\./gm)];
    const connected = counts.length ? Number(counts[counts.length - 1][1]) : 0;
    const awaited = Number(waiting[1]) - connected;
    return awaited > 0 ? { name: "waiting", awaited } : { name: "starting" };
  }

  /**
   * Over HTTP/2 Chromium hands over the status lines only once the upload has ended: there the path's
   * ?progress stream (a watcher: it takes no receiver slot) tells `phase` when the transfer starts.
   * Returns stop().
   */
  function watchPhase(url, phase) {
    if (!/^h[23]/.test(Upload.protocol())) return () => {};
    const watch = new URL(url);
    watch.searchParams.set("progress", "1");
    const source = new EventSource(watch.toString());
    source.onmessage = (message) => {
      const p = JSON.parse(message.data);
      const awaited = p.receivers.expected - p.receivers.connected;
      if (p.state === "waiting" && awaited > 0) phase({ name: "waiting", awaited });
      if (p.state === "streaming") phase({ name: "streaming" });
      if (p.state !== "idle" && p.state !== "waiting") source.close();
    };
    source.onerror = () => source.close(); // (a watcher refused: the status lines will say it at the end)
    return () => source.close();
  }

  /** The callbacks of one transfer: they update the page until the send ends. */
  function outcome(job) {
    let phase = "starting";
    let sent = null; // [done, total] handed to the upload, shown once the transfer streams
    const end = (ok, name, label) => {
      job.unwatch();
      view.finish(ok);
      view.state(name, label);
      sendBusy(false);
      sending = null;
    };
    const on = {
      progress(done, total) {
        sent = [done, total];
        $("send-bytes").dataset.handed = String(done);
        if (phase !== "waiting") view.show(done, total);
      },
      phase(now) {
        if (phase === "streaming" || now.name === "starting") return; // (it never goes back)
        if (now.name === "waiting") {
          const label = "waiting for " + now.awaited + " receiver(s)";
          view.state("waiting", label);
          view.waiting("nothing yet: " + label);
        } else {
          view.state("sending", job.label);
          if (sent) view.show(...sent);
        }
        phase = now.name;
      },
      log(text) {
        sendLog(text);
        on.phase(phaseOf(text));
      },
      done(status, text) {
        on.log(text);
        const complete = status === 200 && /^\[INFO\] Transfer complete\./m.test(text);
        if (complete) view.show(job.total, job.total);
        else if (status !== 200) view.fail("nothing: the server refused the send", false);
        else if (phase !== "streaming") view.fail("nothing: the transfer did not start", false);
        else view.fail("not complete (" + Fmt.size(sent ? sent[0] : 0) + " uploaded)", true);
        const why = Ui.lastLine(text, "[ERROR]") || "failed (HTTP " + status + ")";
        end(complete, complete ? "done" : "error", complete ? "done" : why);
        if (status === 401) Auth.ask(why, startSend); // (this path wants a user: sent again once given)
      },
      failed(why) {
        if (sent) view.fail("not complete (" + Fmt.size(sent[0]) + " uploaded)", true);
        end(false, "error", job.broken || why);
      },
      aborted: () => end(false, "aborted", "cancelled"),
    };
    return on;
  }

  async function startSend() {
    const path = Ui.pathIn($("send-path"));
    view.reset();
    note = "";
    sendLog("");
    if (!path) {
      view.state("error", "choose a path");
      return;
    }
    const refused = Ui.receiversProblem($("send-n"));
    if (refused) {
      view.state("error", refused);
      return;
    }
    const job = { transfer: null, cancelled: false, broken: null, total: 0, label: "sending", unwatch: () => {} };
    sending = job;
    sendBusy(true);
    const url = Ui.pipeUrl(path, Ui.receivers($("send-n")));
    const on = outcome(job);
    job.unwatch = watchPhase(url, on.phase);
    try {
      const { body, type, disposition } = sendBody();
      const passphrase = $("send-pass").value;
      if (!passphrase) {
        job.total = body.size;
        const headers = { "Content-Type": type };
        if (disposition) headers["Content-Disposition"] = disposition;
        view.state("sending", job.label);
        job.transfer = Upload.blob(url, body, Auth.headers(headers), on);
        return;
      }
      // the server sees ciphertext only: no file name, no type
      const headers = { "Content-Type": "application/octet-stream" };
      job.total = OpensslAes.encryptedSize(body.size);
      if (Upload.canStream()) {
        note =
          "Streamed over " + Upload.protocolName() + ", encrypted on the fly: the file is read and " +
          "encrypted piece by piece as it is sent.";
        sendLog("");
        job.label = "encrypting and sending";
        view.state("sending", job.label);
        view.show(0, job.total);
        const source = Upload.encryptedStream(body, passphrase, on.progress, (why) => (job.broken = why));
        job.transfer = Upload.streamed(url, source, Auth.headers(headers), on);
        return;
      }
      note =
        "Encrypted in memory first (" + Upload.whyNotStreamed() + "): all " + Fmt.size(job.total) +
        " of ciphertext is held in this page until it is sent. " + ADVICE;
      sendLog("");
      view.state("sending", "encrypting");
      const cipher = await OpensslAes.encryptBlob(body, passphrase, on.progress, () => job.cancelled);
      view.reset();
      view.state("sending", job.label);
      job.transfer = Upload.blob(url, cipher, Auth.headers(headers), on);
    } catch (error) {
      if (job.cancelled) on.aborted();
      else on.failed(error.message);
    }
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
  $("copy-url").addEventListener("click", (e) => Ui.copy($("send-url").value, e.currentTarget));
  $("copy-curl").addEventListener("click", (e) => Ui.copy($("send-curl").textContent, e.currentTarget));
  $("send-start").addEventListener("click", startSend);
  $("send-cancel").addEventListener("click", () => {
    if (!sending) return;
    sending.cancelled = true;
    if (sending.transfer) sending.transfer.abort();
  });
  $("send-how").textContent = Upload.canStream()
    ? "Here (" + Upload.protocolName() + ") the file is encrypted on the fly as it is sent, any size."
    : "Here (" + Upload.whyNotStreamed() + ") the file is encrypted in this page's memory before it " +
      "is sent. " + ADVICE;

  $("send-path").value = Ui.randomPath();
  setMode();
  describeFiles();
})();
