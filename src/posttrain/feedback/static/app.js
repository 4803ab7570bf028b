// posttrain feedback: keyboard shortcuts, drafts that survive a reload, time on task.
// No inline scripts anywhere (the Content-Security-Policy forbids them); this file is the page's only code
// besides the vendored htmx.
"use strict";
(function () {
  function newClientId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    var a = new Uint8Array(16); crypto.getRandomValues(a);
    return Array.prototype.map.call(a, function (b) { return b.toString(16).padStart(2, "0"); }).join("");
  }

  function setup() {
    var form = document.getElementById("task-form");
    if (!form) return;
    var key = "posttrain-draft:" + form.dataset.lease;
    var draft = {};
    try { draft = JSON.parse(localStorage.getItem(key) || "{}") || {}; } catch (e) { draft = {}; }
    if (!draft.client_id) draft.client_id = newClientId();
    if (!draft.started) draft.started = Date.now();
    draft.fields = draft.fields || {};

    // Restore the draft: every named field the rater had touched.
    Array.prototype.forEach.call(form.elements, function (el) {
      if (!el.name || el.type === "hidden" || !(el.name in draft.fields)) return;
      var v = draft.fields[el.name];
      if (el.type === "radio") el.checked = (el.value === v);
      else if (el.type === "checkbox") el.checked = Array.isArray(v) && v.indexOf(el.value) >= 0;
      else el.value = v;
    });
    document.getElementById("client_id").value = draft.client_id;

    function save() {
      var fields = {};
      Array.prototype.forEach.call(form.elements, function (el) {
        if (!el.name || el.type === "hidden" || el.type === "submit" || el.type === "button") return;
        if (el.type === "radio") { if (el.checked) fields[el.name] = el.value; }
        else if (el.type === "checkbox") {
          fields[el.name] = fields[el.name] || [];
          if (el.checked) fields[el.name].push(el.value);
        } else fields[el.name] = el.value;
      });
      draft.fields = fields;
      localStorage.setItem(key, JSON.stringify(draft));
    }
    save();
    form.addEventListener("input", save);
    form.addEventListener("change", save);

    var sending = false;
    form.addEventListener("submit", function (ev) {
      if (sending) { ev.preventDefault(); return; }  // a second Enter or click: the first is on its way
      sending = true;
      document.getElementById("seconds").value = ((Date.now() - draft.started) / 1000).toFixed(1);
      localStorage.removeItem(key);
    });
    var skip = document.getElementById("skip");
    if (skip) skip.addEventListener("click", function () { localStorage.removeItem(key); });

    function choose(value) {
      var el = form.querySelector('input[name="choice"][value="' + value + '"]');
      if (el) { el.checked = true; el.focus(); save(); }
    }
    var guide = document.getElementById("guidelines");
    document.addEventListener("keydown", function (ev) {
      if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
      var t = ev.target, typing = t && (t.tagName === "TEXTAREA" || t.tagName === "SELECT" ||
        (t.tagName === "INPUT" && t.type !== "radio" && t.type !== "checkbox"));
      if (typing && ev.key !== "Escape") return;
      var keys = {"1": "A", "2": "B", "3": "tie", "4": "both_bad"};
      if (form.dataset.task === "pairwise" && keys[ev.key]) { choose(keys[ev.key]); ev.preventDefault(); }
      else if (ev.key === "Enter") { ev.preventDefault(); if (form.requestSubmit) form.requestSubmit(); else form.submit(); }
      else if (ev.key === "s" && skip) { ev.preventDefault(); skip.click(); }
      else if (ev.key === "?" && guide) { ev.preventDefault(); guide.hidden = !guide.hidden; }
      else if (ev.key === "Escape" && guide) { guide.hidden = true; }
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", setup);
  else setup();
})();
