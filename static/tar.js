// Several chosen files as one POSIX tar (ustar, with pax records for long or non-ASCII names and
// sizes of 8 GiB or more). The archive is a Blob of headers and the File objects themselves, so
// nothing is read or copied before the upload streams it.
"use strict";
const Tar = (() => {
  const encoder = new TextEncoder();
  const MAX_OCTAL_SIZE = 0o77777777777; // what 11 octal digits hold

  function field(h, value, offset, length) {
    h.set(encoder.encode(value).subarray(0, length), offset);
  }

  function octal(n, width) {
    return n.toString(8).padStart(width - 1, "0") + "\0";
  }

  function header(name, size, mtime, type) {
    const h = new Uint8Array(512);
    field(h, name, 0, 100);
    field(h, "0000644\0", 100, 8);
    field(h, "0000000\0", 108, 8);
    field(h, "0000000\0", 116, 8);
    field(h, octal(size, 12), 124, 12);
    field(h, octal(mtime, 12), 136, 12);
    field(h, "        ", 148, 8); // the checksum counts its own field as spaces
    field(h, type, 156, 1);
    field(h, "ustar\0", 257, 6);
    field(h, "00", 263, 2);
    let sum = 0;
    for (const b of h) sum += b;
    field(h, sum.toString(8).padStart(6, "0") + "\0 ", 148, 8);
    return h;
  }

  function paxRecord(key, value) {
    const body = " " + key + "=" + value + "\n";
    const bodyLength = encoder.encode(body).length;
    let length = bodyLength + String(bodyLength).length;
    if (String(length).length > String(bodyLength).length) length += 1;
    return encoder.encode(length + body);
  }

  function padding(size) {
    return new Uint8Array((512 - (size % 512)) % 512);
  }

  /** A plain ASCII stand-in for the ustar name field (the pax record carries the real name). */
  function asciiName(name) {
    const plain = name.replace(/[^\x20-\x7e]/g, "_").replace(/^[./]+/, "");
    return (plain || "file").slice(0, 100);
  }

  /** A Blob holding `files` (File objects) as a tar archive. */
  function archive(files) {
    const parts = [];
    for (const file of files) {
      const name = file.name.replace(/[/\\]/g, "_") || "file";
      const mtime = Math.floor((file.lastModified || Date.now()) / 1000);
      const big = file.size > MAX_OCTAL_SIZE;
      const plain = asciiName(name);
      if (plain !== name || encoder.encode(name).length > 100 || big) {
        const records = [paxRecord("path", name)];
        if (big) records.push(paxRecord("size", String(file.size)));
        const pax = Bytes.concat(records);
        parts.push(header("PaxHeader/" + plain.slice(0, 90), pax.length, mtime, "x"), pax, padding(pax.length));
      }
      parts.push(header(plain, big ? 0 : file.size, mtime, "0"), file, padding(file.size));
    }
    parts.push(new Uint8Array(1024));
    return new Blob(parts, { type: "application/x-tar" });
  }

  return { archive };
})();
