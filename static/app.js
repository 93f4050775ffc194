// The web UI's start: the tab switch. The tabs themselves are send.js and receive.js (ui.js: shared).
// Invariant: loaded last, after every module it wires; it holds no state of its own.
"use strict";
(() => {
  const { $ } = Ui;
  $("tab-send").addEventListener("click", () => Ui.selectTab("send"));
  $("tab-receive").addEventListener("click", () => Ui.selectTab("receive"));
})();
