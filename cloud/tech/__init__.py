"""The technician's page (``/tech``): a small mobile-first web app of its own layout, installable
as a PWA (``/tech/manifest.webmanifest``, service worker ``/tech/sw.js``), for the people who get
woken up: their open alerts, one alert with acknowledge / start / note / photo / resolve, and a
live stream of their alerts' changes. See ``pages.py``."""
