// Gatehouse console: the little script the pages need beyond htmx. No build step; plain ES2017.
//
// [data-live-stream]: opens an EventSource on data-url and puts each "row" message (a <tr>
// rendered by the server, escaped there) at the top of data-target, keeping data-keep rows.
// The browser reconnects by itself, sending Last-Event-ID so nothing is missed in between.
"use strict";

(function () {
  function startLiveStream(holder) {
    var target = document.querySelector(holder.dataset.target);
    var keep = parseInt(holder.dataset.keep || "100", 10);
    var status = document.querySelector("[data-live-status]");
    var readingsBox = document.querySelector("[data-live-readings]");
    var source = null;
    var lastId = null;

    function setStatus(live) {
      if (!status) return;
      status.textContent = live ? status.dataset.textLive : status.dataset.textWaiting;
      status.classList.toggle("is-live", live);
    }

    function url() {
      var u = new URL(holder.dataset.url, window.location.href);
      if (lastId !== null) u.searchParams.set("after", lastId);
      if (readingsBox && !readingsBox.checked) u.searchParams.set("readings", "false");
      return u.toString();
    }

    function open() {
      if (source) source.close();
      source = new EventSource(url());
      source.addEventListener("ready", function () { setStatus(true); });
      source.addEventListener("row", function (message) {
        lastId = message.lastEventId || lastId;
        target.insertAdjacentHTML("afterbegin", message.data);
        while (target.rows.length > keep) target.deleteRow(target.rows.length - 1);
      });
      source.onerror = function () { setStatus(false); };
      holder.dataset.state = "open";
    }

    if (readingsBox) readingsBox.addEventListener("change", open);
    window.addEventListener("pagehide", function () { if (source) source.close(); });
    open();
  }

  function init() {
    document.querySelectorAll("[data-live-stream]").forEach(startLiveStream);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
