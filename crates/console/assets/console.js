// imagelib console: enhancements only; every page reads without this script.
// No inline script anywhere: this file is the whole of it (Content-Security-Policy
// `script-src 'self'`). Untrusted text is only ever set with textContent.
"use strict";
(function () {
  // Copy a digest (or any `data-copy` value) to the clipboard.
  document.addEventListener("click", function (e) {
    var b = e.target.closest && e.target.closest("button[data-copy]");
    if (!b || !navigator.clipboard) return;
    navigator.clipboard.writeText(b.getAttribute("data-copy")).then(function () {
      var was = b.textContent;
      b.textContent = "Copied";
      setTimeout(function () { b.textContent = was; }, 1200);
    });
  });

  // Ask before a destructive form is sent (`data-confirm` holds what will stop).
  document.addEventListener("submit", function (e) {
    var f = e.target;
    var msg = f.getAttribute && f.getAttribute("data-confirm");
    if (msg && !window.confirm(msg)) e.preventDefault();
  });

  // Change a filter: submit its form (the form has a submit button without script).
  document.addEventListener("change", function (e) {
    var f = e.target.form;
    if (f && f.hasAttribute("data-autosubmit") && e.target.tagName === "SELECT") f.requestSubmit();
  });

  // Live lists from server-sent events: `data-sse` is the stream's URL, items go into
  // the element's `ol`/`ul` (appended, or prepended with `data-sse-mode="prepend"`),
  // the state into `[data-sse-state]`. Each message is JSON:
  // {"line": "...", "state": "running" | "completed" | "failed", "href": "/..."}.
  function live(el) {
    var url = el.getAttribute("data-sse");
    var list = el.querySelector("ol, ul");
    var state = el.querySelector("[data-sse-state]");
    var prepend = el.getAttribute("data-sse-mode") === "prepend";
    var src = new EventSource(url);
    src.onmessage = function (m) {
      var d;
      try { d = JSON.parse(m.data); } catch (_) { return; }
      if (d.line && list) {
        var li = document.createElement("li");
        if (d.href && d.href.charAt(0) === "/" && d.href.charAt(1) !== "/") {
          var a = document.createElement("a");
          a.href = d.href;
          a.textContent = d.line;
          li.appendChild(a);
        } else {
          li.textContent = d.line;
        }
        if (prepend) list.insertBefore(li, list.firstChild); else list.appendChild(li);
        while (list.children.length > 500) list.removeChild(prepend ? list.lastChild : list.firstChild);
      }
      if (d.state && state) state.textContent = d.state;
      if (d.state === "completed" || d.state === "failed") src.close();
    };
    src.onerror = function () {
      if (state && src.readyState === EventSource.CLOSED) state.textContent = "disconnected";
    };
  }
  document.querySelectorAll("[data-sse]").forEach(live);
})();
