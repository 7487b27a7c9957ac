// The technician app's service worker (scope /tech/). Rendered by cloud/tech/pages.py: the
// shell's URLs carry their content hashes, so a changed file makes a changed worker.
//
// - the shell (styles, scripts, icons): cache-first, kept per version;
// - pages (/tech/...): network-first; a good answer is kept (the last MAX_PAGES), so an alert
//   opened once opens again on a poor connection; without network and without a copy, the
//   offline page;
// - photos of alerts: cache-first (a photo never changes);
// - a form posted without a connection: the offline page says it was not sent;
// - the live stream and anything else: straight to the network.
"use strict";

const SHELL_URLS = {{ shell|tojson }};
const OFFLINE_HTML = {{ offline_html|tojson }};
const SHELL = "gh-tech-shell-" + hash(SHELL_URLS.join("|"));
const PAGES = "gh-tech-pages";
const MAX_PAGES = 30;

function hash(text) {
  let h = 0;
  for (let i = 0; i < text.length; i++) h = (h * 31 + text.charCodeAt(i)) | 0;
  return (h >>> 0).toString(16);
}

function offline() {
  return new Response(OFFLINE_HTML, {
    status: 503,
    headers: { "Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store" },
  });
}

self.addEventListener("install", (event) => {
  event.waitUntil(
    caches.open(SHELL).then((cache) => cache.addAll(SHELL_URLS)).then(() => self.skipWaiting())
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches.keys()
      .then((keys) => Promise.all(
        keys.filter((k) => k.startsWith("gh-tech-shell-") && k !== SHELL).map((k) => caches.delete(k))
      ))
      .then(() => self.clients.claim())
  );
});

self.addEventListener("message", (event) => {
  // Signing out: the pages kept for a poor connection are the user's; forget them.
  if (event.data === "forget-pages") event.waitUntil(caches.delete(PAGES));
});

async function cacheFirst(request, cacheName) {
  const hit = await caches.match(request);
  if (hit) return hit;
  const response = await fetch(request);
  if (response.ok && response.type === "basic") {
    const cache = await caches.open(cacheName);
    await cache.put(request, response.clone());
  }
  return response;
}

async function keepPage(request, response) {
  const cache = await caches.open(PAGES);
  await cache.put(request, response);
  const keys = await cache.keys();
  for (let i = 0; i < keys.length - MAX_PAGES; i++) await cache.delete(keys[i]);
}

async function networkFirst(event) {
  const request = event.request;
  try {
    const response = await fetch(request);
    if (response.ok && !response.redirected && response.type === "basic") {
      event.waitUntil(keepPage(request, response.clone()));
    }
    return response;
  } catch (error) {
    const hit = await caches.match(request, { cacheName: PAGES });
    return hit || offline();
  }
}

self.addEventListener("fetch", (event) => {
  const request = event.request;
  const url = new URL(request.url);
  if (url.origin !== self.location.origin) return;
  if (request.method !== "GET") {
    if (request.mode === "navigate") event.respondWith(fetch(request).catch(() => offline()));
    return;
  }
  if (url.pathname.startsWith("/static/")) {
    event.respondWith(cacheFirst(request, SHELL));
  } else if (url.pathname.startsWith("/api/v1/alerts/") && url.pathname.includes("/photos/")) {
    event.respondWith(cacheFirst(request, PAGES));
  } else if (url.pathname === "/tech/stream" || url.pathname === "/tech/sw.js") {
    return;
  } else if (url.pathname === "/tech" || url.pathname.startsWith("/tech/")) {
    event.respondWith(networkFirst(event));
  }
});
