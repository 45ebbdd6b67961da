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

  // Add Registry: the type select shows the chosen type's fields in place (the form has
  // every type's fields; those of other types are hidden and disabled, so not sent).
  // Each `[data-field]` holds, in `data-profile`, JSON of what each type says about it
  // (label, help, required, placeholder, default, input) or, in `data-types`, the types
  // it applies to. Without script the chooser's button reloads the page with the type.
  function registryTypes(chooser) {
    var form = document.querySelector("form[data-registry-form]");
    var select = chooser.querySelector("select[name=registry_type]");
    if (!form || !select) return;
    var hidden = form.querySelector("input[type=hidden][name=registry_type]");
    var button = chooser.querySelector("button[type=submit]");
    if (button) button.hidden = true;
    function spec(el, type) {
      if (el.hasAttribute("data-profile")) {
        try { return JSON.parse(el.getAttribute("data-profile"))[type] || null; } catch (_) { return null; }
      }
      var types = (el.getAttribute("data-types") || "").split(" ");
      return types.indexOf(type) >= 0 ? {} : null;
    }
    function apply(type, prev) {
      if (hidden) hidden.value = type;
      form.querySelectorAll("[data-field]").forEach(function (el) {
        var p = spec(el, type);
        el.hidden = !p;
        el.setAttribute("data-type-on", p ? "1" : "0");
        el.querySelectorAll("input, select, textarea").forEach(function (i) { i.disabled = !p; });
        if (!p || !el.hasAttribute("data-profile")) return;
        var was = spec(el, prev) || {};
        var label = el.querySelector("[data-label]");
        if (label) label.textContent = p.label;
        var req = el.querySelector(".req");
        if (req) req.hidden = !p.required;
        var help = el.querySelector("[data-help]");
        if (help) { help.textContent = p.help || ""; help.hidden = !p.help; }
        var input = el.querySelector("input");
        if (!input) return;
        input.required = !!p.required;
        if (p.placeholder) input.placeholder = p.placeholder; else input.removeAttribute("placeholder");
        if (p.input && input.type !== p.input) { input.value = ""; input.type = p.input; }
        // A default replaces only what the user has not typed: empty, or the last default.
        if (input.type !== "password" && (input.value === "" || input.value === (was["default"] || ""))) {
          input.value = p["default"] || "";
        }
      });
      var option = select.options[select.selectedIndex];
      var title = document.querySelector("[data-type-title]");
      if (title && option) title.textContent = option.textContent;
      var description = document.querySelector("[data-type-description]");
      if (description && option) description.textContent = option.getAttribute("data-description") || "";
      if (window.history && window.history.replaceState) {
        window.history.replaceState(null, "", "?type=" + encodeURIComponent(type));
      }
      form.dispatchEvent(new Event("imagelib:type"));
    }
    var current = select.value;
    select.addEventListener("change", function () {
      apply(select.value, current);
      current = select.value;
    });
    chooser.addEventListener("submit", function (e) {
      e.preventDefault();
      apply(select.value, current);
      current = select.value;
    });
  }
  document.querySelectorAll("form[data-registry-types]").forEach(registryTypes);

  // Credentials: a type that takes several kinds has a `credential_kind` select; the
  // fields only other kinds read (`data-kinds`) are hidden and disabled. Without script
  // every field of the type stays and the server reads those of the chosen kind.
  function credentialKinds(form) {
    form.querySelectorAll("[data-kinds]").forEach(function (el) {
      if (!el.hasAttribute("data-type-on")) el.setAttribute("data-type-on", el.hidden ? "0" : "1");
    });
    function apply() {
      var chosen = null;
      form.querySelectorAll("select[name=credential_kind]").forEach(function (s) {
        if (!s.disabled) chosen = s.value;
      });
      form.querySelectorAll("[data-kinds]").forEach(function (el) {
        if (el.getAttribute("data-type-on") === "0") return;
        var on = chosen === null || el.getAttribute("data-kinds").split(" ").indexOf(chosen) >= 0;
        el.hidden = !on;
        el.querySelectorAll("input, select, textarea").forEach(function (i) { i.disabled = !on; });
      });
    }
    form.addEventListener("change", function (e) {
      if (e.target.name === "credential_kind") apply();
    });
    form.addEventListener("imagelib:type", apply);
    apply();
  }
  document.querySelectorAll("form").forEach(function (f) {
    if (f.querySelector("[data-kinds]")) credentialKinds(f);
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
