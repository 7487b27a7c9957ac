// The technician app (/tech): the service worker, the offline notice, and forms that behave on a
// poor connection. Plain ES2017, no build step. The live list is alerts.js.
"use strict";

(function () {
  var PAGES = "gh-tech-pages";

  function registerWorker() {
    if (!("serviceWorker" in navigator)) return;
    navigator.serviceWorker.register("/tech/sw.js", { scope: "/tech/" }).then(function (registration) {
      document.documentElement.dataset.worker = "registered";
      return registration;
    }).catch(function () {
      document.documentElement.dataset.worker = "failed";
    });
  }

  function offlineNotice() {
    var notice = document.querySelector("[data-offline]");
    function update() { if (notice) notice.hidden = navigator.onLine; }
    window.addEventListener("online", update);
    window.addEventListener("offline", update);
    update();
    return notice;
  }

  function guardForms(notice) {
    document.addEventListener("submit", function (event) {
      var form = event.target;
      if (!navigator.onLine && !form.hasAttribute("data-sign-out")) {
        // Not sent: say so rather than leave the technician looking at a spinner.
        event.preventDefault();
        if (notice) { notice.hidden = false; notice.classList.add("shake"); }
        return;
      }
      if (form.dataset.sending === "yes") { event.preventDefault(); return; }  // a double tap
      form.dataset.sending = "yes";
      form.querySelectorAll("button[type=submit]").forEach(function (b) { b.classList.add("is-busy"); });
      if (form.hasAttribute("data-sign-out")) {
        // The pages kept for a poor connection are this user's: forget them.
        if (window.caches) caches.delete(PAGES);
        if (navigator.serviceWorker && navigator.serviceWorker.controller) {
          navigator.serviceWorker.controller.postMessage("forget-pages");
        }
      }
    });
    // A photo is sent as soon as it is taken (one tap fewer on a phone).
    document.querySelectorAll("input[type=file][data-auto-submit]").forEach(function (input) {
      input.addEventListener("change", function () {
        if (input.files && input.files.length) {
          var form = input.form;
          if (form.requestSubmit) form.requestSubmit(); else form.submit();
        }
      });
    });
  }

  function init() {
    registerWorker();
    guardForms(offlineNotice());
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
