// Corral's dashboard: the theme toggle, the buttons that call the API, the log's follow mode, the Submit page.
(function () {
  "use strict";
  function toast(text) {
    var t = document.getElementById("toast");
    if (!t) return;
    t.textContent = text;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(function () { t.textContent = ""; }, 6000);
  }
  function api(method, url, body) {
    return fetch(url, {method: method, credentials: "same-origin",
      headers: {"Content-Type": "application/json", "Accept": "application/json"},
      body: body === undefined ? (method === "GET" || method === "DELETE" ? undefined : "{}") : JSON.stringify(body)});
  }
  function problemText(r) {
    return r.text().then(function (t) {
      try { var j = JSON.parse(t); return j.detail || j.message || j.title || t; } catch (e) { return t || r.statusText; }
    });
  }
  document.addEventListener("click", function (ev) {
    var b = ev.target.closest("button");
    if (!b) return;
    if (b.id === "theme") {
      var dark = document.documentElement.dataset.theme
        ? document.documentElement.dataset.theme === "dark"
        : window.matchMedia("(prefers-color-scheme: dark)").matches;
      var next = dark ? "light" : "dark";
      document.documentElement.dataset.theme = next;
      localStorage.setItem("corral-theme", next);
      return;
    }
    if (b.hasAttribute("data-logout")) {
      api("POST", "/ui/logout").then(function () { location.href = "/ui/login"; });
      return;
    }
    var url = b.getAttribute("data-action");
    if (!url) return;
    if (b.dataset.confirm && !window.confirm(b.dataset.confirm)) return;
    b.disabled = true;
    api(b.dataset.method || "POST", url).then(function (r) {
      if (!r.ok) return problemText(r).then(function (t) { toast(b.textContent.trim() + ": " + t); b.disabled = false; });
      toast(b.textContent.trim() + ": done");
      if (b.dataset.then) { location.href = b.dataset.then; return; }
      var part = b.closest("[hx-get]");
      if (part && window.htmx) htmx.trigger(part, "refresh");
    }, function (e) { toast(String(e)); b.disabled = false; });
  });
  document.addEventListener("DOMContentLoaded", function () {
    var log = document.getElementById("log");
    if (log) {
      var follow = document.getElementById("follow");
      var bottom = function () { if (follow && follow.checked) log.scrollTop = log.scrollHeight; };
      bottom();
      document.body.addEventListener("htmx:sseMessage", function (e) { if (e.detail && e.detail.type === "log") bottom(); });
      log.addEventListener("htmx:afterSettle", bottom);
    }
    setupSubmit();
    setupLogin();
  });

  function setupLogin() {
    var form = document.getElementById("login-form");
    if (!form) return;
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var body = {};
      new FormData(form).forEach(function (v, k) { if (v) body[k] = v; });
      api("POST", "/ui/login", body).then(function (r) {
        if (r.ok) { location.href = "/ui/"; return; }
        problemText(r).then(function (t) { document.getElementById("login-error").textContent = t; });
      });
    });
  }

  function setupSubmit() {
    var text = document.getElementById("yaml");
    if (!text) return;
    var gutter = document.getElementById("gutter"), list = document.getElementById("problems");
    var format = document.getElementById("format"), form = document.getElementById("submit-form");
    var bad = {}, timer = null, seq = 0, lastFormat = "native";
    function drawGutter() {
      var n = text.value.split("\n").length, out = [];
      for (var i = 1; i <= n; i++) {
        out.push(bad[i] ? '<span class="bad" title="' + escapeHtml(bad[i]) + '" data-line="' + i + '">' + i + "</span>" : i);
      }
      gutter.innerHTML = out.join("\n");
      gutter.scrollTop = text.scrollTop;
    }
    function escapeHtml(s) { return s.replace(/[&<>"']/g, function (c) { return "&#" + c.charCodeAt(0) + ";"; }); }
    function show(res) {
      bad = {};
      list.innerHTML = "";
      if (res.ok) {
        var li = document.createElement("li");
        li.className = "ok";
        li.textContent = "Valid " + res.format + " job: " + res.tasks + " task" + (res.tasks === 1 ? "" : "s") + ".";
        list.appendChild(li);
      }
      (res.problems || []).forEach(function (p) {
        if (p.line) bad[p.line] = (bad[p.line] ? bad[p.line] + "; " : "") + p.message;
        var li = document.createElement("li");
        li.className = "bad";
        li.dataset.line = p.line || "";
        li.textContent = (p.line ? "line " + p.line + ": " : "") + (p.field ? p.field + ": " : "") + p.message;
        list.appendChild(li);
      });
      lastFormat = res.format;
      drawGutter();
    }
    function check() {
      var mine = ++seq;
      api("POST", "/ui/validate", {text: text.value, format: format.value}).then(function (r) {
        return r.ok ? r.json() : problemText(r).then(function (t) { return {ok: false, problems: [{line: null, field: "", message: t}]}; });
      }).then(function (res) { if (mine === seq) show(res); });
    }
    function soon() { clearTimeout(timer); timer = setTimeout(check, 250); drawGutter(); }
    text.addEventListener("input", soon);
    text.addEventListener("scroll", function () { gutter.scrollTop = text.scrollTop; });
    format.addEventListener("change", soon);
    document.getElementById("upload").addEventListener("change", function (ev) {
      var f = ev.target.files[0];
      if (!f) return;
      f.text().then(function (t) { text.value = t; soon(); });
    });
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var url = lastFormat === "tork" ? "/jobs" : "/v1/jobs";
      fetch(url, {method: "POST", credentials: "same-origin", body: text.value,
                  headers: {"Content-Type": "application/yaml", "Accept": "application/json"}}).then(function (r) {
        if (!r.ok) return problemText(r).then(function (t) { toast("Submit: " + t); });
        return r.json().then(function (j) { location.href = "/ui/jobs/" + j.id; });
      });
    });
    drawGutter();
  }
})();
