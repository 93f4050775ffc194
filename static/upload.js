// How a send goes up: a Blob by XMLHttpRequest, or over HTTP/2 a stream that encrypts the file as fetch() reads it.
// Invariant: the stream is pulled, never pushed: it reads one step of the file ahead of what fetch() has taken.
"use strict";
const Upload = (() => {
  const POLICY = document.getElementById("app").dataset.policy === "on";
  /** The protocol this page came over ("h2", "http/1.1", ...; "" when the browser does not say). */
  function protocol() {
    const navigation = performance.getEntriesByType("navigation")[0];
    return (navigation && navigation.nextHopProtocol) || "";
  }

  /** The standard feature test: fetch() takes a ReadableStream body (asks for `duplex`). */
  function hasRequestStreams() {
    let askedForDuplex = false;
    try {
      const typed = new Request(location.href, {
        body: new ReadableStream(),
        method: "POST",
        get duplex() {
          askedForDuplex = true;
          return "half";
        },
      }).headers.has("Content-Type");
      return askedForDuplex && !typed;
    } catch {
      return false;
    }
  }

  /** Whether an upload can stream here: browsers stream a request body over HTTP/2 (or 3) only. */
  function canStream() {
    return /^h[23]/.test(protocol()) && hasRequestStreams();
  }

  /** The page's protocol as people name it: "HTTP/2", "HTTP/1.1". */
  function protocolName() {
    const spoken = protocol();
    if (/^h[23]/.test(spoken)) return "HTTP/" + spoken[1];
    return spoken ? spoken.toUpperCase() : "an unknown protocol";
  }

  /** Why an encrypted upload is held in memory here, for the send log. */
  function whyNotStreamed() {
    return hasRequestStreams() ? protocolName() : "this browser cannot stream an upload";
  }

  /**
   * The ciphertext of `blob`, read and encrypted one step at a time as the stream is pulled.
   * `progress(handed, total)` counts the ciphertext bytes handed to the stream; `failed(message)`
   * tells why the stream broke (a file that could no longer be read). Returns { body, stop() }:
   * stop() errors the stream, so an upload cut there fails instead of ending early.
   */
  function encryptedStream(blob, passphrase, progress, failed) {
    const encryptor = new OpensslAes.Encryptor(passphrase);
    const total = OpensslAes.encryptedSize(blob.size);
    let offset = 0;
    let handed = 0;
    let stopped = false;
    let source = null;
    const body = new ReadableStream(
      {
        start(controller) {
          source = controller;
        },
        async pull(controller) {
          try {
            let out = new Uint8Array(0);
            let last = false;
            while (!out.length && !last) {
              if (offset < blob.size) {
                const end = Math.min(offset + OpensslAes.STEP, blob.size);
                const plain = new Uint8Array(await blob.slice(offset, end).arrayBuffer());
                offset = end;
                out = await encryptor.push(plain);
              } else {
                out = await encryptor.finish();
                last = true;
              }
            }
            if (stopped) return;
            handed += out.length;
            controller.enqueue(out);
            progress(handed, total);
            if (last) controller.close();
          } catch (error) {
            if (stopped) return;
            failed("could not read the file (" + error.message + ")");
            controller.error(error);
          }
        },
        cancel() {
          stopped = true;
        },
      },
      { highWaterMark: 1 }, // one piece queued: the next is read only when fetch() took this one
    );
    function stop() {
      if (stopped) return;
      stopped = true;
      // fetch()'s own reader of the body leaves this rejection unhandled: it is ours, and expected
      const reason = new DOMException("cancelled", "AbortError");
      addEventListener("unhandledrejection", (event) => {
        if (event.reason === reason) event.preventDefault();
      });
      try {
        source.error(reason);
      } catch {
        // the stream has ended already: nothing is left to cut
      }
    }
    return { body, stop };
  }

  /**
   * PUT `source.body` (a ReadableStream; `source` as encryptedStream returns it) with fetch(). `on` is
   * { log(text), done(status, text), failed(why), aborted() }; the response's status lines reach log()
   * as they arrive. Returns { abort() }.
   *
   * abort() errors the body stream first and aborts the fetch a task later: aborting first cancels
   * the stream, a cancelled stream counts as closed, and Chromium may then end the upload cleanly
   * (END_STREAM) with part of the file, which a receiver would take for all of it.
   */
  function streamed(url, source, headers, on) {
    const controller = new AbortController();
    let cancelled = false;
    const body = source.body;
    (async () => {
      let text = "";
      try {
        const response = await fetch(url, {
          method: "PUT",
          body,
          duplex: "half",
          headers,
          signal: controller.signal,
          cache: "no-store",
          credentials: "omit", // (a 401 is the page's to ask about, not the browser's own prompt)
        });
        const reader = (response.body || new Blob().stream()).pipeThrough(new TextDecoderStream()).getReader();
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          text += value;
          on.log(text);
        }
        on.done(response.status, text);
      } catch {
        if (cancelled) on.aborted();
        else on.failed("connection failed");
      }
    })();
    return {
      abort: () => {
        cancelled = true;
        source.stop();
        setTimeout(() => controller.abort(), 0);
      },
    };
  }

  /** PUT `body` (a Blob) with XMLHttpRequest, with upload progress. `on` as for streamed(), plus
   * progress(done, total). Returns { abort() }. Where the server has an access policy, fetch() sends
   * it instead, without upload progress: a 401 to XMLHttpRequest brings up the browser's own login
   * prompt (headless, a wait forever) rather than reaching the page, which asks itself (auth.js). */
  function blob(url, body, headers, on) {
    if (POLICY) {
      on.progress(0, body.size);
      return streamed(url, { body, stop() {} }, headers, {
        ...on,
        done(status, text) {
          if (status === 200) on.progress(body.size, body.size);
          on.done(status, text);
        },
      });
    }
    const xhr = new XMLHttpRequest();
    const total = body.size;
    xhr.open("PUT", url);
    for (const [name, value] of Object.entries(headers)) xhr.setRequestHeader(name, value);
    xhr.upload.addEventListener("progress", (e) => on.progress(e.loaded, total));
    xhr.addEventListener("progress", () => on.log(xhr.responseText));
    xhr.addEventListener("load", () => on.done(xhr.status, xhr.responseText));
    xhr.addEventListener("error", () => on.failed("connection failed"));
    xhr.addEventListener("abort", () => on.aborted());
    on.progress(0, total);
    xhr.send(body);
    return { abort: () => xhr.abort() };
  }

  return { protocol, protocolName, canStream, whyNotStreamed, encryptedStream, streamed, blob };
})();
