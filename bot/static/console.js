/* Portineria console: live updates without inline scripts.
 *
 * The page says how to listen in data- attributes on #console: Pusher (pusher-js,
 * served by the app) on the operator's private channels, or the app's own
 * server-sent events. On any event the inbox list is fetched again as an HTML
 * fragment rendered (and escaped) by the server; an open conversation fetches its
 * changing parts (state, messages, the 24-hour window, the side cards) and replaces
 * them in place, so the reply being written is never touched.
 *
 * An emergency also alerts this window, unless the operator turned that off here
 * (stored in localStorage, per browser): a "(n)" badge in the title, a sound and,
 * where the browser allows it, a desktop notification. A new message from a resident
 * does the same unless "Avvisi per i nuovi messaggi" is off (also per browser). On
 * the inbox the title's count is the conversations with messages not yet read. The
 * service worker (/console/sw.js) is registered for the push notifications that reach the device
 * with no console open; "Ricevi notifiche" subscribes this browser to them.
 */
(function () {
  "use strict";

  var root = document.getElementById("console");
  if (!root || !root.dataset.realtime) {
    return;
  }
  var settings = root.dataset;
  var inbox = document.getElementById("inbox");
  var conversation = document.getElementById("conversation");
  var banner = document.getElementById("live-banner");
  var refreshTimer = null;
  var conversationTimer = null;

  function fetchFragment(url) {
    return fetch(url, {
      credentials: "same-origin",
      headers: { "X-Requested-With": "fetch" }
    }).then(function (response) {
      if (response.status === 401) {
        window.location.reload();
        return null;
      }
      return response.ok ? response.text() : null;
    });
  }

  function refreshConversation() {
    if (!conversation || !conversation.dataset.liveUrl) {
      return;
    }
    window.clearTimeout(conversationTimer);
    conversationTimer = window.setTimeout(function () {
      fetchFragment(conversation.dataset.liveUrl).then(function (html) {
        if (html === null) {
          return;
        }
        // The server's own escaped rendering, parsed inertly (no script runs).
        var parsed = new DOMParser().parseFromString(html, "text/html");
        ["live-head", "live-thread", "live-side"].forEach(function (part) {
          var fresh = parsed.querySelector("[data-part='" + part + "']");
          var current = document.getElementById(part);
          if (fresh && current) {
            current.innerHTML = fresh.innerHTML;
          }
        });
        root.dataset.conversationRefreshed = String(Date.now());
        document.dispatchEvent(new CustomEvent("portineria:live"));
      }).catch(function () { /* the next event or a reload will catch up */ });
    }, 150);
  }

  function refreshInbox() {
    if (!inbox) {
      return;
    }
    // Several events often arrive together (message, attention, emergency): one fetch.
    window.clearTimeout(refreshTimer);
    refreshTimer = window.setTimeout(function () {
      fetchFragment(inbox.dataset.listUrl).then(function (html) {
        if (html !== null) {
          inbox.innerHTML = html;
          showTitle();
          root.dataset.refreshed = String(Date.now());
        }
      }).catch(function () { /* the next event or a reload will catch up */ });
    }, 200);
  }

  function announce(text) {
    if (!banner) {
      return;
    }
    banner.textContent = text;
    banner.hidden = false;
  }

  // -- alerts in this window: title badge, sound, desktop notification -------------

  var ALERTS_KEY = "portineria.alerts";
  var MESSAGE_ALERTS_KEY = "portineria.messageAlerts";
  // The title without any "(n) " count in front (the inbox renders its unread count).
  var baseTitle = document.title.replace(/^\(\d+\+?\) /, "");
  var unseen = 0;
  var alertsToggle = document.getElementById("alerts-toggle");
  var messageAlertsToggle = document.getElementById("message-alerts-toggle");
  var pendingMessageAlert = {};

  function showTitle() {
    // On the inbox, the conversations to read; elsewhere, the emergencies not yet seen.
    var state = document.getElementById("inbox-state");
    var count = state ? Number(state.dataset.unreadTotal || "0") : unseen;
    // Counted up to a cap and one more: past it, "999+".
    var cap = state ? Number(state.dataset.countCap || "0") : 0;
    var shown = cap && count > cap ? cap + "+" : String(count);
    document.title = count > 0 ? "(" + shown + ") " + baseTitle : baseTitle;
  }

  function stored(key) {
    try {
      return window.localStorage.getItem(key);
    } catch (error) {
      return null;
    }
  }

  function store(key, value) {
    try {
      window.localStorage.setItem(key, value);
    } catch (error) { /* private mode: the setting lasts for this page only */ }
  }

  function messageAlertsEnabled() {
    return alertsEnabled() && stored(MESSAGE_ALERTS_KEY) !== "off";
  }

  function showMessageAlertsSetting() {
    if (!messageAlertsToggle) {
      return;
    }
    var on = stored(MESSAGE_ALERTS_KEY) !== "off";
    messageAlertsToggle.textContent = "Avvisi per i nuovi messaggi: " + (on ? "sì" : "no");
    messageAlertsToggle.setAttribute("aria-pressed", on ? "true" : "false");
    messageAlertsToggle.hidden = false;
  }

  if (messageAlertsToggle) {
    messageAlertsToggle.addEventListener("click", function () {
      var on = stored(MESSAGE_ALERTS_KEY) === "off";
      store(MESSAGE_ALERTS_KEY, on ? "on" : "off");
      if (on && "Notification" in window && window.Notification.permission === "default") {
        window.Notification.requestPermission();
      }
      showMessageAlertsSetting();
    });
    showMessageAlertsSetting();
  }

  function alertsEnabled() {
    try {
      return window.localStorage.getItem(ALERTS_KEY) !== "off";
    } catch (error) {
      return true;
    }
  }

  function showAlertsSetting() {
    if (!alertsToggle) {
      return;
    }
    var on = alertsEnabled();
    alertsToggle.textContent = "Avvisi in questa finestra: " + (on ? "sì" : "no");
    alertsToggle.setAttribute("aria-pressed", on ? "true" : "false");
    alertsToggle.hidden = false;
  }

  if (alertsToggle) {
    alertsToggle.addEventListener("click", function () {
      var on = !alertsEnabled();
      try {
        window.localStorage.setItem(ALERTS_KEY, on ? "on" : "off");
      } catch (error) { /* private mode: the setting lasts for this page only */ }
      if (on && "Notification" in window && window.Notification.permission === "default") {
        window.Notification.requestPermission();
      }
      showAlertsSetting();
    });
    showAlertsSetting();
  }

  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") {
      unseen = 0;
      showTitle();
    }
  });

  function playSound() {
    if (settings.alertSound) {
      try {
        var sound = new Audio(settings.alertSound);
        var playing = sound.play();
        if (playing && playing.catch) {
          playing.catch(function () { /* no sound before the page was clicked once */ });
        }
      } catch (error) { /* no audio here */ }
    }
  }

  function alertMessage(data) {
    // An emergency's own alert wins: the message event that comes with it waits a
    // moment, and the emergency cancels it.
    var id = data && data.conversation_id ? String(data.conversation_id) : "";
    if (!messageAlertsEnabled() || (data && data.direction !== "in")) {
      return;
    }
    if (conversation && conversation.dataset.conversationId === id &&
        document.visibilityState === "visible") {
      return;  // the operator is looking at it
    }
    window.clearTimeout(pendingMessageAlert[id]);
    pendingMessageAlert[id] = window.setTimeout(function () {
      delete pendingMessageAlert[id];
      root.dataset.lastMessageAlert = id;
      playSound();
      notify(id, "Nuovo messaggio", {
        body: "Un contatto ha scritto allo studio.",
        tag: id ? "message-" + id : "message"
      });
    }, 500);
  }

  // A desktop notification (never the message's words) that opens the conversation.
  function notify(id, title, options) {
    if (!("Notification" in window) || window.Notification.permission !== "granted") {
      return;
    }
    options.icon = settings.alertIcon;
    options.lang = "it";
    try {
      var note = new window.Notification(title, options);
      note.onclick = function () {
        window.focus();
        if (id) {
          window.location.href = "/console/conversations/" + encodeURIComponent(id);
        }
        note.close();
      };
    } catch (error) { /* some browsers allow notifications from the worker only */ }
  }

  function alertEmergency(data) {
    var id = data && data.conversation_id ? String(data.conversation_id) : "";
    window.clearTimeout(pendingMessageAlert[id]);
    delete pendingMessageAlert[id];
    unseen += 1;
    showTitle();
    root.dataset.lastEmergency = id;
    if (!alertsEnabled()) {
      return;
    }
    playSound();
    notify(id, "Emergenza", {
      body: "Una conversazione urgente richiede attenzione.",
      // The same tag as the service worker's push: one notification, not two.
      tag: id ? "emergency-" + id : "emergency",
      requireInteraction: true
    });
  }

  function handle(name, data) {
    if (!name || name.indexOf("pusher:") === 0 || name.indexOf("pusher_internal:") === 0) {
      return;
    }
    if (name === "conversation.emergency") {
      announce("Emergenza: una conversazione urgente richiede attenzione.");
      alertEmergency(data);
    } else if (name === "conversation.assigned") {
      announce("Ti è stata assegnata una conversazione.");
    } else if (name === "webhook.disabled") {
      // Only admins hear it (their own channel): an endpoint of the CRM stopped taking events.
      announce("Webhook CRM disattivato: " + (data && data.host ? data.host : "un endpoint") +
        " non accetta consegne da un giorno. Apri Webhook CRM per riattivarlo.");
      var menu = document.getElementById("menu-webhooks");
      if (menu && !menu.querySelector(".badge")) {
        var badge = document.createElement("span");
        badge.className = "badge urgent";
        badge.textContent = "disattivato";
        menu.appendChild(document.createTextNode(" "));
        menu.appendChild(badge);
      }
    } else if (name === "message.created") {
      alertMessage(data);
    }
    if (conversation && data && String(data.conversation_id) === conversation.dataset.conversationId) {
      refreshConversation();
    }
    if (name !== "message.status") {  // a tick changes nothing in the list
      refreshInbox();
    }
  }

  function connected() {
    root.dataset.live = "connected";
  }

  function listenWithPusher() {
    var options = {
      cluster: settings.pusherCluster || "mt1",
      forceTLS: settings.pusherTls !== "false",
      channelAuthorization: {
        endpoint: settings.authUrl,
        transport: "ajax",
        headers: { "X-CSRFToken": settings.csrf }
      }
    };
    if (settings.pusherHost) {
      options.wsHost = settings.pusherHost;
      if (settings.pusherPort) {
        options.wsPort = Number(settings.pusherPort);
        options.wssPort = Number(settings.pusherPort);
      }
      options.enabledTransports = ["ws", "wss"];
    }
    var client = new window.Pusher(settings.pusherKey, options);
    settings.channels.split(" ").forEach(function (name) {
      var channel = client.subscribe(name);
      channel.bind("pusher:subscription_succeeded", connected);
      channel.bind_global(handle);
    });
  }

  function listenWithStream() {
    // Each answer carries the events since the last one and ends; EventSource comes
    // back after the server's "retry" with the Last-Event-ID it was given.
    var source = new EventSource(settings.eventsUrl);
    var seen = [];
    source.onopen = connected;
    source.onmessage = function (message) {
      var event;
      try {
        event = JSON.parse(message.data);
      } catch (error) {
        return;
      }
      // An event sent to both of our channels arrives twice, with one id.
      if (event.id && seen.indexOf(event.id) !== -1) {
        return;
      }
      seen.push(event.id);
      if (seen.length > 200) {
        seen.shift();
      }
      handle(event.event, event.data);
    };
  }

  // -- the installable console and its push subscription -----------------------------

  var pushToggle = document.getElementById("push-toggle");
  var canPush = "serviceWorker" in navigator && "PushManager" in window && settings.pushKey;
  var registration = null;

  function keyBytes(base64url) {
    var padded = (base64url + "===".slice((base64url.length + 3) % 4))
      .replace(/-/g, "+").replace(/_/g, "/");
    var raw = window.atob(padded);
    var bytes = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i += 1) {
      bytes[i] = raw.charCodeAt(i);
    }
    return bytes;
  }

  function postJson(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: {
        "Content-Type": "application/json",
        "X-CSRFToken": settings.csrf,
        "X-Requested-With": "fetch"
      },
      body: JSON.stringify(body)
    }).then(function (response) {
      if (!response.ok) {
        throw new Error("HTTP " + response.status);
      }
      return response;
    });
  }

  function showPushState(subscribed, text) {
    if (!pushToggle) {
      return;
    }
    pushToggle.textContent = text || (subscribed ? "Notifiche attive: disattiva" : "Ricevi notifiche");
    pushToggle.dataset.subscribed = subscribed ? "true" : "false";
    pushToggle.hidden = false;
  }

  function subscribePush() {
    return window.Notification.requestPermission().then(function (permission) {
      if (permission !== "granted") {
        showPushState(false, "Notifiche non consentite dal browser");
        return null;
      }
      return registration.pushManager.getSubscription().then(function (existing) {
        return existing || registration.pushManager.subscribe({
          userVisibleOnly: true,
          applicationServerKey: keyBytes(settings.pushKey)
        });
      }).then(function (subscription) {
        return postJson(settings.pushSubscribeUrl, subscription.toJSON());
      }).then(function () {
        showPushState(true);
      });
    });
  }

  function unsubscribePush() {
    return registration.pushManager.getSubscription().then(function (subscription) {
      if (!subscription) {
        return null;
      }
      var endpoint = subscription.endpoint;
      return subscription.unsubscribe().then(function () {
        return postJson(settings.pushUnsubscribeUrl, { endpoint: endpoint });
      });
    }).then(function () {
      showPushState(false);
    });
  }

  if ("serviceWorker" in navigator && settings.swUrl) {
    navigator.serviceWorker.register(settings.swUrl, { scope: "/console/" }).then(function (found) {
      registration = found;
      root.dataset.serviceWorker = "registered";
      if (!canPush || !pushToggle) {
        return null;
      }
      return found.pushManager.getSubscription().then(function (subscription) {
        showPushState(Boolean(subscription));
      });
    }).catch(function () { /* without a worker the console still alerts while open */ });
  }

  if (pushToggle && canPush) {
    pushToggle.addEventListener("click", function () {
      if (!registration) {
        return;
      }
      var action = pushToggle.dataset.subscribed === "true" ? unsubscribePush : subscribePush;
      action().catch(function () {
        showPushState(false, "Notifiche non disponibili: riprova");
      });
    });
  }

  if (settings.realtime === "pusher" && window.Pusher) {
    listenWithPusher();
  } else if (settings.realtime === "stream" && window.EventSource) {
    listenWithStream();
  }
})();
