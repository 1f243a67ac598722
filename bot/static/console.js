/* Portineria console: live updates without inline scripts.
 *
 * The page says how to listen in data- attributes on #console: Pusher (pusher-js,
 * served by the app) on the operator's private channels, or the app's own
 * server-sent events. On any event the inbox list is fetched again as an HTML
 * fragment rendered (and escaped) by the server.
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

  function refreshInbox() {
    if (!inbox) {
      return;
    }
    // Several events often arrive together (message, attention, emergency): one fetch.
    window.clearTimeout(refreshTimer);
    refreshTimer = window.setTimeout(function () {
      fetch(inbox.dataset.listUrl, {
        credentials: "same-origin",
        headers: { "X-Requested-With": "fetch" }
      }).then(function (response) {
        if (response.status === 401) {
          window.location.reload();
          return null;
        }
        return response.ok ? response.text() : null;
      }).then(function (html) {
        if (html !== null) {
          inbox.innerHTML = html;
          root.dataset.refreshed = String(Date.now());
        }
      }).catch(function () { /* the next event or a reload will catch up */ });
    }, 200);
  }

  function announce(text, withReload) {
    if (!banner) {
      return;
    }
    banner.textContent = text + " ";
    if (withReload) {
      var link = document.createElement("a");
      link.href = window.location.pathname;
      link.textContent = "Aggiorna";
      banner.appendChild(link);
    }
    banner.hidden = false;
  }

  function handle(name, data) {
    if (!name || name.indexOf("pusher:") === 0 || name.indexOf("pusher_internal:") === 0) {
      return;
    }
    if (name === "conversation.emergency") {
      announce("Emergenza: una conversazione urgente richiede attenzione.", false);
    } else if (name === "conversation.assigned") {
      announce("Ti è stata assegnata una conversazione.", false);
    }
    if (conversation && data && String(data.conversation_id) === conversation.dataset.conversationId) {
      announce("La conversazione è cambiata.", true);
    }
    refreshInbox();
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

  if (settings.realtime === "pusher" && window.Pusher) {
    listenWithPusher();
  } else if (settings.realtime === "stream" && window.EventSource) {
    listenWithStream();
  }
})();
