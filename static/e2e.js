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

  /**
   * Encrypt a Blob; resolves to the ciphertext Blob. `progress(done, total)` after each step;
   * `cancelled()` is polled between steps and aborts with an Error.
   */
  async function encryptBlob(blob, passphrase, progress = () => {}, cancelled = () => false) {
    const salt = crypto.getRandomValues(new Uint8Array(8));
    const derived = await derive(passphrase, salt);
    let iv = derived.iv;
    const parts = [MAGIC, salt];
    let offset = 0;
    do {
      if (cancelled()) throw new Error("cancelled");
      const end = Math.min(offset + STEP, blob.size);
      const plain = new Uint8Array(await blob.slice(offset, end).arrayBuffer());
      const last = end === blob.size;
      const out = new Uint8Array(
        await crypto.subtle.encrypt({ name: "AES-CBC", iv }, derived.key, plain));
      // WebCrypto always pads; a middle step is a whole number of blocks, so its padding block
      // is dropped and the next step chains from the last ciphertext block.
      const body = last ? out : out.subarray(0, plain.length);
      parts.push(body);
      iv = body.slice(body.length - 16);
      offset = end;
      progress(offset, blob.size);
    } while (offset < blob.size);
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

  return { encryptBlob, Decryptor };
})();
