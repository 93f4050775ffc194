// Credentials for a relay with an access policy: asked for when a request comes back 401, then sent again.
// Invariant: the password stays in this page's memory (no storage, no URL) and leaves only in Authorization.
"use strict";
const Auth = (() => {
  const { $ } = Ui;
  let token = null; // "Basic ..." once the user signed in
  let retry = null; // what to run again once they have

  /** `headers` with the user's credentials added, once they signed in. */
  function headers(headers) {
    return token ? { ...headers, Authorization: token } : headers;
  }

  /** HTTP Basic in UTF-8, as the server's challenge asks (charset="UTF-8"). */
  function basic(user, password) {
    const bytes = new TextEncoder().encode(user + ":" + password);
    return "Basic " + btoa(Array.from(bytes, (b) => String.fromCharCode(b)).join(""));
  }

  /** A 401 came back with status line `line`: show the sign-in box; `again` runs once it is filled in. */
  function ask(line, again) {
    retry = again;
    $("auth-why").textContent = line;
    $("auth").hidden = false;
    $(token ? "auth-password" : "auth-user").focus();
  }

  function showUser(user) {
    $("auth-name").textContent = user;
    $("auth-who").hidden = !user;
  }

  $("auth").addEventListener("submit", (event) => {
    event.preventDefault();
    const user = $("auth-user").value;
    token = basic(user, $("auth-password").value);
    $("auth-password").value = "";
    $("auth").hidden = true;
    showUser(user);
    const again = retry;
    retry = null;
    if (again) again(); // (in the submit itself: a receive's save picker needs the user's gesture)
  });
  $("auth-cancel").addEventListener("click", () => {
    retry = null;
    $("auth").hidden = true;
  });
  $("auth-out").addEventListener("click", () => {
    token = null;
    showUser("");
  });

  return { headers, ask, signedIn: () => token !== null };
})();
