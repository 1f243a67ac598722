/* Portineria console service worker (scope /console/).
 *
 * It shows the push notifications the office's server sends through Web Push (an
 * emergency: its hazard and building or street, never the resident's words or
 * number) and, on a click, opens or focuses that conversation in the console.
 * It caches nothing: conversations are personal data and the console is online.
 */
"use strict";

var ICON = "/static/icons/portineria-192.png";

self.addEventListener("install", function () {
  self.skipWaiting();
});

self.addEventListener("activate", function (event) {
  event.waitUntil(self.clients.claim());
});

function consoleUrl(path) {
  // Only a console page of this origin: a payload cannot send the operator elsewhere.
  var url = new URL(typeof path === "string" ? path : "/console/", self.location.origin);
  if (url.origin !== self.location.origin || url.pathname.indexOf("/console/") !== 0) {
    url = new URL("/console/", self.location.origin);
  }
  return url.href;
}

self.addEventListener("push", function (event) {
  var data = {};
  try {
    data = event.data ? event.data.json() : {};
  } catch (error) {
    data = {};
  }
  var title = data.title || "Portineria: emergenza";
  var options = {
    body: data.body || "Una conversazione urgente richiede attenzione.",
    icon: ICON,
    badge: ICON,
    lang: "it",
    // One notification per conversation: the console's own alert replaces it, not repeats it.
    tag: data.conversation_id ? "emergency-" + data.conversation_id : "emergency",
    renotify: true,
    requireInteraction: true,
    data: { url: consoleUrl(data.url) }
  };
  event.waitUntil(self.registration.showNotification(title, options));
});

self.addEventListener("notificationclick", function (event) {
  event.notification.close();
  var target = consoleUrl(event.notification.data && event.notification.data.url);
  event.waitUntil(
    self.clients.matchAll({ type: "window", includeUncontrolled: true }).then(function (windows) {
      for (var i = 0; i < windows.length; i += 1) {
        if (windows[i].url === target && "focus" in windows[i]) {
          return windows[i].focus();
        }
      }
      for (var j = 0; j < windows.length; j += 1) {
        if ("navigate" in windows[j] && windows[j].url.indexOf(self.location.origin + "/console/") === 0) {
          return windows[j].navigate(target).then(function (client) {
            return client ? client.focus() : null;
          });
        }
      }
      return self.clients.openWindow(target);
    })
  );
});
