// The fleet board: a single page over the service's JSON routes (/v1/fleet, /v1/alerts,
// /v1/models, /v1/drift), logged in with a scoring key kept in this tab's sessionStorage
// and sent as X-API-Key. Views by the URL's hash: #/ (the ranked work list, filtered),
// #/sites (a grid of pumps per site, coloured by risk), #/pump/<id> (a pump's page), in
// lists.js and pump.js; the common parts are in common.js. This file: log-in and routing.
"use strict";

(() => {
  const B = window.PumpBoard;
  const { KEY, NAME, $, h, api, say, clearError, fail } = B;

  // --- log-in -------------------------------------------------------------------

  function showLogin(message) {
    $("login").hidden = false;
    $("view").replaceChildren();
    $("nav").hidden = true;
    $("who").hidden = true;
    const err = $("login-error");
    err.hidden = !message;
    err.textContent = message || "";
    $("login-key").focus();
  }

  function logout(message) {
    sessionStorage.removeItem(KEY);
    showLogin(message);
  }

  async function login(ev) {
    ev.preventDefault();
    const key = $("login-key").value.trim();
    const name = $("login-name").value.trim();
    const err = $("login-error");
    const problem = !key
      ? "Enter an API key."
      : !name
        ? "Enter your name: it is recorded in the history of the alerts you act on."
        : null;
    if (problem) {
      err.textContent = problem;
      err.hidden = false;
      (key ? $("login-name") : $("login-key")).focus();
      return;
    }
    sessionStorage.setItem(KEY, key);
    try {
      await api("v1/fleet?limit=1");
    } catch (e) {
      sessionStorage.removeItem(KEY);
      err.textContent =
        e.status === 401 ? `${e.message}. Check the key: a scoring key is needed.` : e.message;
      err.hidden = false;
      $("login-key").focus();
      $("login-key").select(); // typed again, the key replaces the refused one
      return;
    }
    sessionStorage.setItem(NAME, name);
    $("login-key").value = "";
    say(`Logged in as ${name}.`);
    render();
  }

  // --- the router ---------------------------------------------------------------

  let rendering = 0;

  async function render() {
    const mine = ++rendering;
    clearError();
    if (!sessionStorage.getItem(KEY)) {
      showLogin();
      return;
    }
    $("login").hidden = true;
    $("nav").hidden = false;
    $("who").hidden = false;
    $("who-name").textContent = sessionStorage.getItem(NAME) || "";
    const raw = location.hash.replace(/^#/, "") || "/";
    const [path, query] = raw.split("?");
    const params = new URLSearchParams(query || "");
    for (const a of $("nav").querySelectorAll("a")) {
      const current =
        (path === "/sites" && a.id === "nav-sites") || (path === "/" && a.id === "nav-work");
      if (current) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    document.body.setAttribute("aria-busy", "true");
    try {
      let view;
      if (path === "/" || path === "") view = await B.workList(params);
      else if (path === "/sites") view = await B.sitesView(params);
      else if (path.startsWith("/pump/"))
        view = await B.pumpPage(decodeURIComponent(path.slice(6)));
      else view = h("p", {}, "No such view: ", h("a", { href: "#/" }, "back to the work list"));
      if (mine !== rendering) return;
      $("view").replaceChildren(view);
      const heading = $("view").querySelector("h2");
      if (heading && document.activeElement === document.body) heading.focus();
    } catch (e) {
      if (mine !== rendering) return;
      $("view").replaceChildren();
      fail(e);
    } finally {
      if (mine === rendering) {
        document.body.setAttribute("aria-busy", "false");
        document.body.dataset.ready = "1";
      }
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", login);
    $("logout").addEventListener("click", () => {
      sessionStorage.removeItem(NAME);
      logout("Logged out.");
    });
    window.addEventListener("hashchange", render);
    render();
  });

  B.logout = logout;
  B.render = render;
})();
