// Gatehouse alerts: the live list (console /alerts and the technician's /tech). No build step.
//
// [data-alert-stream]: an EventSource on data-url. An "alert" message is the HTML of one alert's
// row or card (rendered and escaped by the server) whose outer element carries data-alert-id and
// data-rank (0: unresolved life safety). It replaces the element of that alert in data-target, or
// goes on top (below the life-safety ones, unless it is one). A "gone" message (the alert's id)
// removes it: it no longer matches the page. [data-alert-empty] shows while the list is empty.
// [data-alert-watch]: on any message, show the element data-notice (the page is out of date).
// The browser reconnects by itself with Last-Event-ID, so nothing is missed in between.
"use strict";

(function () {
  function parse(html) {
    var template = document.createElement("template");
    template.innerHTML = html.trim();
    return template.content.firstElementChild;
  }

  function setStatus(live) {
    var status = document.querySelector("[data-live-status]");
    if (!status) return;
    status.textContent = live ? status.dataset.textLive : status.dataset.textWaiting;
    status.classList.toggle("is-live", live);
  }

  function syncEmpty(target) {
    var empty = document.querySelector("[data-alert-empty]");
    if (empty) empty.hidden = target.children.length > 0;
  }

  function place(target, element) {
    var id = element.getAttribute("data-alert-id");
    var old = target.querySelector('[data-alert-id="' + id + '"]');
    if (old) old.remove();
    var anchor = null;
    if (element.getAttribute("data-rank") !== "0") {
      // Below the unresolved life-safety alerts, which stay on top.
      for (var i = 0; i < target.children.length; i++) {
        if (target.children[i].getAttribute("data-rank") !== "0") { anchor = target.children[i]; break; }
      }
    } else {
      anchor = target.firstElementChild;
    }
    target.insertBefore(element, anchor);
    element.classList.add("is-new");
  }

  function startStream(holder) {
    var target = document.querySelector(holder.dataset.target);
    var source = new EventSource(holder.dataset.url);
    source.addEventListener("ready", function () { setStatus(true); holder.dataset.state = "open"; });
    source.addEventListener("alert", function (message) {
      var element = parse(message.data);
      if (element && target) { place(target, element); syncEmpty(target); }
    });
    source.addEventListener("gone", function (message) {
      if (!target) return;
      var old = target.querySelector('[data-alert-id="' + message.data.trim() + '"]');
      if (old) old.remove();
      syncEmpty(target);
    });
    source.onerror = function () { setStatus(false); };
    window.addEventListener("pagehide", function () { source.close(); });
  }

  function startWatch(holder) {
    var notice = document.querySelector(holder.dataset.notice);
    var source = new EventSource(holder.dataset.url);
    source.addEventListener("ready", function () { holder.dataset.state = "open"; });
    function changed() { if (notice) notice.hidden = false; }
    source.addEventListener("alert", changed);
    source.addEventListener("gone", changed);
    window.addEventListener("pagehide", function () { source.close(); });
  }

  function init() {
    document.querySelectorAll("[data-alert-stream]").forEach(startStream);
    document.querySelectorAll("[data-alert-watch]").forEach(startWatch);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
