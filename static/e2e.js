// End-to-end encryption in the browser, byte-compatible with
// `openssl aes-256-cbc -pbkdf2 -iter 100000 -md sha256`: "Salted__" + 8-byte salt + AES-256-CBC
// (PKCS#7), key and IV from PBKDF2-HMAC-SHA256 of the passphrase. Both directions work in 1 MiB
// steps, so a file is never held twice: CBC is chained across WebCrypto calls by hand.
"use strict";
const OpensslAes = (() => {
  const MAGIC = new TextEncoder().encode("Salted__");
  const ITERATIONS = 100000;
  const STEP = 1 << 20; // a multiple of the 16-byte block
  const PAD_BLOCK = new Uint8Array(16).fill(16);

  async function derive(passphrase, salt) {
    const material = await crypto.subtle.importKey(
      "raw", new TextEncoder().encode(passphrase), "PBKDF2", false, ["deriveBits"]);
    const bits = new Uint8Array(await crypto.subtle.deriveBits(
      { name: "PBKDF2", salt, iterations: ITERATIONS, hash: "SHA-256" }, material, 384));
    const key = await crypto.subtle.importKey(
      "raw", bits.slice(0, 32), "AES-CBC", false, ["encrypt", "decrypt"]);
    return { key, iv: bits.slice(32, 48) };
  }

  /** Streaming encryption: push() plaintext in any pieces, finish() pads; each returns ciphertext. */
  class Encryptor {
    constructor(passphrase) {
      this.passphrase = passphrase;
      this.salt = crypto.getRandomValues(new Uint8Array(8));
      this.key = null;
      this.iv = null;
      this.rest = new Uint8Array(0); // plaintext short of a whole block, kept for the next push
    }

    /** The "Salted__" header on the first output, once the key is derived. */
    async start() {
      if (this.key !== null) return [];
      const derived = await derive(this.passphrase, this.salt);
      this.key = derived.key;
      this.iv = derived.iv;
      return [MAGIC, this.salt];
    }

    async push(bytes) {
      const head = await this.start();
      const plain = this.rest.length ? Bytes.concat([this.rest, bytes]) : bytes;
      const whole = plain.length - (plain.length % 16);
      this.rest = plain.slice(whole);
      if (!whole) return Bytes.concat(head);
      const out = new Uint8Array(await crypto.subtle.encrypt(
        { name: "AES-CBC", iv: this.iv }, this.key, plain.subarray(0, whole)));
      // WebCrypto always pads; a middle piece is whole blocks, so its padding block is dropped and
      // the next piece chains from the last ciphertext block.
      const body = out.subarray(0, whole);
      this.iv = body.slice(whole - 16);
      return head.length ? Bytes.concat([...head, body]) : body;
    }

    async finish() {
      const head = await this.start();
      const out = new Uint8Array(await crypto.subtle.encrypt(
        { name: "AES-CBC", iv: this.iv }, this.key, this.rest));
      this.rest = new Uint8Array(0);
      return head.length ? Bytes.concat([...head, out]) : out;
    }
  }

  /** The ciphertext's size for `size` plaintext bytes: header, whole blocks, then the padding. */
  function encryptedSize(size) {
    return 16 + size - (size % 16) + 16;
  }

  /**
   * Encrypt a Blob into a ciphertext Blob, in memory. `progress(done, total)` after each step;
   * `cancelled()` is polled between steps and aborts with an Error.
   */
  async function encryptBlob(blob, passphrase, progress = () => {}, cancelled = () => false) {
    const encryptor = new Encryptor(passphrase);
    const parts = [];
    for (let offset = 0; offset < blob.size; offset += STEP) {
      if (cancelled()) throw new Error("cancelled");
      const end = Math.min(offset + STEP, blob.size);
      parts.push(await encryptor.push(new Uint8Array(await blob.slice(offset, end).arrayBuffer())));
      progress(end, blob.size);
    }
    parts.push(await encryptor.finish());
    return new Blob(parts, { type: "application/octet-stream" });
  }

  /** Streaming decryption: push() ciphertext as it arrives, finish() checks the padding. */
  class Decryptor {
    constructor(passphrase) {
      this.passphrase = passphrase;
      this.pieces = []; // ciphertext not decrypted yet, joined once per step
      this.size = 0;
      this.key = null;
      this.iv = null;
    }

    joined() {
      const all = Bytes.concat(this.pieces);
      this.pieces = [all];
      return all;
    }

    keep(rest) {
      this.pieces = rest.length ? [rest] : [];
      this.size = rest.length;
    }

    async push(bytes) {
      this.pieces.push(bytes);
      this.size += bytes.length;
      if (this.key === null) {
        if (this.size < 16) return new Uint8Array(0);
        const all = this.joined();
        if (!MAGIC.every((b, i) => all[i] === b)) {
          throw new Error("not encrypted with this recipe (no Salted__ header)");
        }
        const derived = await derive(this.passphrase, all.slice(8, 16));
        this.key = derived.key;
        this.iv = derived.iv;
        this.keep(all.slice(16));
      }
      // The last whole block may carry the padding: keep it (and any partial block) back.
      const ready = Math.floor((this.size - 1) / 16) * 16;
      if (ready < STEP) return new Uint8Array(0);
      const all = this.joined();
      this.keep(all.slice(ready));
      return this.decryptMiddle(all.subarray(0, ready));
    }

    async decryptMiddle(cipher) {
      // Append a block that decrypts to a full padding block, so WebCrypto strips exactly it.
      const last = cipher.subarray(cipher.length - 16);
      const fake = new Uint8Array(await crypto.subtle.encrypt(
        { name: "AES-CBC", iv: last }, this.key, PAD_BLOCK)).subarray(0, 16);
      const plain = new Uint8Array(await crypto.subtle.decrypt(
        { name: "AES-CBC", iv: this.iv }, this.key, Bytes.concat([cipher, fake])));
      this.iv = last.slice();
      return plain;
    }

    async finish() {
      if (this.key === null) throw new Error("the data is too short to be encrypted");
      if (this.size === 0 || this.size % 16 !== 0) throw new Error("the ciphertext is cut short");
      try {
        return new Uint8Array(await crypto.subtle.decrypt(
          { name: "AES-CBC", iv: this.iv }, this.key, this.joined()));
      } catch {
        throw new Error("wrong passphrase, or the data is corrupted");
      }
    }
  }

  return { STEP, Encryptor, encryptedSize, encryptBlob, Decryptor };
})();
