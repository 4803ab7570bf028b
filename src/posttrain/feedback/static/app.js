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

  // A submitted draft is dropped when the next page is another one (the server took the answer); when the
  // server sends the same form back (an answer it refused, with its message), the draft is restored.
  function dropSentDraft(form) {
    var sent = sessionStorage.getItem("posttrain-sent");
    if (!sent) return;
    sessionStorage.removeItem("posttrain-sent");
    if (!form || "posttrain-draft:" + form.dataset.draft !== sent) localStorage.removeItem(sent);
  }

  function setup() {
    var form = document.getElementById("task-form");
    dropSentDraft(form);
    if (!form) return;
    var key = "posttrain-draft:" + form.dataset.draft;
    var draft = {};
    try { draft = JSON.parse(localStorage.getItem(key) || "{}") || {}; } catch (e) { draft = {}; }
    if (!draft.client_id) draft.client_id = newClientId();
    if (!draft.started) draft.started = Date.now();
    // No draft yet: start from the answer being edited (data-prefill, form field names), if any.
    if (!draft.fields && form.dataset.prefill) {
      try { draft.fields = JSON.parse(form.dataset.prefill); } catch (e) { draft.fields = {}; }
    }
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
      sessionStorage.setItem("posttrain-sent", key);
    });
    var skip = document.getElementById("skip");
    if (skip) skip.addEventListener("click", function () { localStorage.removeItem(key); });

    // The responses as plain text (what the model wrote, character for character) or as Markdown rendered by
    // the server (sanitised, links as text); the rater's choice is kept for every task.
    var mdButton = document.getElementById("md-toggle");
    function showMarkdown(on) {
      Array.prototype.forEach.call(document.querySelectorAll(".response"), function (r) {
        var text = r.querySelector(".response-text"), md = r.querySelector(".response-md");
        if (text && md) { text.hidden = on; md.hidden = !on; }
      });
      if (mdButton) {
        mdButton.setAttribute("aria-pressed", on ? "true" : "false");
        var label = mdButton.querySelector(".md-label");
        if (label) label.textContent = on ? "show plain text" : "show formatted";
      }
      var hint = document.getElementById("md-hint");  // said once, where an answer's plain text holds Markdown
      if (hint) hint.hidden = on || !Array.prototype.some.call(document.querySelectorAll(".response-text"),
        function (t) { return /^\s*(#{1,6} |[-*] |\d+\. |\|.*\||```)|\*\*\S/m.test(t.textContent); });
    }
    function toggleMarkdown() {
      var on = localStorage.getItem("posttrain-markdown") !== "1";
      if (on) localStorage.setItem("posttrain-markdown", "1"); else localStorage.removeItem("posttrain-markdown");
      showMarkdown(on);
    }
    showMarkdown(localStorage.getItem("posttrain-markdown") === "1");

    // How long the task stays the rater's (its lease): minutes left, a warning in the last two, and after it the
    // truth: an answer is still stored unless another rater has been given the task meanwhile.
    var left = document.getElementById("time-left");
    if (left && left.dataset.expires) {
      var until = Date.parse(left.dataset.expires);
      var tick = function () {
        var minutes = Math.ceil((until - Date.now()) / 60000);
        left.classList.toggle("warn", minutes <= 2);
        left.textContent = minutes > 2 ? minutes + " min to answer"
          : minutes > 0 ? minutes + " min left: answer soon, or the task may go to another rater"
          : "time is up: an answer now is still kept unless another rater has been given this task";
      };
      tick();
      setInterval(tick, 15000);
    }
    if (mdButton) mdButton.addEventListener("click", toggleMarkdown);

    var guide = document.getElementById("guidelines");
    var task = form.dataset.task;
    var handlers = {pairwise: pairwiseKeys, ranking: rankingKeys, rubric: rubricKeys, correction: correctionKeys};
    var own = (handlers[task] || function () { return function () { return false; }; })(form, save);
    function submit() { if (form.requestSubmit) form.requestSubmit(); else form.submit(); }
    document.addEventListener("keydown", function (ev) {
      if ((ev.ctrlKey || ev.metaKey) && ev.key === "Enter") { ev.preventDefault(); submit(); return; }
      if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
      if (own(ev)) { ev.preventDefault(); return; }
      var t = ev.target, typing = t && (t.tagName === "TEXTAREA" || t.tagName === "SELECT" ||
        (t.tagName === "INPUT" && t.type !== "radio" && t.type !== "checkbox"));
      if (typing && ev.key !== "Escape") return;
      if (ev.key === "Enter") { ev.preventDefault(); submit(); }
      else if (ev.key === "s" && skip) { ev.preventDefault(); skip.click(); }
      else if (ev.key === "?" && guide) { ev.preventDefault(); guide.hidden = !guide.hidden; }
      else if (ev.key === "m") { ev.preventDefault(); toggleMarkdown(); }
      else if (ev.key === "Escape" && guide) { guide.hidden = true; }
    });
  }

  function typingIn(ev) {
    var t = ev.target;
    return t && (t.tagName === "TEXTAREA" || t.tagName === "SELECT" ||
      (t.tagName === "INPUT" && t.type !== "radio" && t.type !== "checkbox"));
  }

  // Each task type's own keys: a function (form, save) -> handler(ev) that returns true when it used the key.

  function pairwiseKeys(form, save) {
    var keys = {"1": "A", "2": "B", "3": "tie", "4": "both_bad"};
    return function (ev) {
      if (typingIn(ev) || !keys[ev.key]) return false;
      var el = form.querySelector('input[name="choice"][value="' + keys[ev.key] + '"]');
      if (el) { el.checked = true; el.focus(); save(); }
      return true;
    };
  }

  // Ranking: digit N gives response N the next free rank (1 = best); Backspace takes the last rank back.
  function rankingKeys(form, save) {
    var selects = Array.prototype.slice.call(form.querySelectorAll("select.rank"));
    var shown = document.getElementById("rank-order");
    function ranked() {
      return selects.filter(function (s) { return s.value; })
        .sort(function (a, b) { return Number(a.value) - Number(b.value); });
    }
    function show() {
      var order = ranked().map(function (s) { return s.dataset.label; });
      if (shown) shown.textContent = order.length ? order.join(" > ") : "none yet";
    }
    form.addEventListener("change", show);
    show();
    return function (ev) {
      if (typingIn(ev)) return false;
      var n = Number(ev.key);
      if (ev.key.length === 1 && n >= 1 && n <= selects.length) {
        var sel = selects[n - 1];
        if (!sel.value) { sel.value = String(ranked().length + 1); save(); show(); }
        return true;
      }
      if (ev.key === "Backspace") {
        var last = ranked().pop();
        if (last) { last.value = ""; save(); show(); }
        return true;
      }
      return false;
    };
  }

  // Rubric: the focused criterion takes a digit as its score; arrows (and Tab) move between criteria.
  function rubricKeys(form, save) {
    var inputs = Array.prototype.slice.call(form.querySelectorAll("input.score"));
    var empty = inputs.filter(function (i) { return !i.value; })[0];
    if (empty || inputs.length) (empty || inputs[0]).focus();
    return function (ev) {
      var at = inputs.indexOf(ev.target);
      if (at < 0) {  // nothing focused yet: a digit goes to the first criterion without a score
        if (typingIn(ev) || !/^[0-9]$/.test(ev.key)) return false;
        at = inputs.findIndex(function (i) { return !i.value; });
        if (at < 0) return false;
        inputs[at].focus();
      }
      var el = inputs[at], min = Number(el.min), max = Number(el.max);
      if (/^[0-9]$/.test(ev.key) && max <= 9) {
        var v = Number(ev.key);
        if (v >= min && v <= max) {
          el.value = String(v); save();
          if (at + 1 < inputs.length) inputs[at + 1].focus();
        }
        return true;
      }
      var step = {ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1}[ev.key];
      if (step) {
        inputs[Math.min(inputs.length - 1, Math.max(0, at + step))].focus();
        return true;
      }
      return false;
    };
  }

  // Correction: digit N (outside the text box) picks response N to correct and, while the text is untouched,
  // copies it into the box; Ctrl+Enter submits from anywhere (Enter is a new line in the box).
  function correctionKeys(form, save) {
    var radios = Array.prototype.slice.call(form.querySelectorAll('input[name="response"]'));
    var box = document.getElementById("correction");
    function textOf(radio) { return document.getElementById("text-" + radio.value).textContent; }
    var current = radios.filter(function (r) { return r.checked; })[0];
    function pick(radio) {
      radio.checked = true;
      if (box && (!box.value || (current && box.value === textOf(current)))) box.value = textOf(radio);
      current = radio;
      save();
    }
    radios.forEach(function (r) { r.addEventListener("change", function () { pick(r); }); });
    if (box && !box.value && current) { box.value = textOf(current); save(); }
    return function (ev) {
      if (typingIn(ev)) return false;
      var n = Number(ev.key);
      if (ev.key.length === 1 && n >= 1 && n <= radios.length) { pick(radios[n - 1]); return true; }
      return false;
    };
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", setup);
  else setup();
})();
