/* Portineria console: the operator's tools that need no live connection.
 *
 * - the reply being written is kept in sessionStorage per conversation, so a reload
 *   (or a refused send) does not lose it; it is cleared when the reply is sent;
 * - a canned response chosen from the list goes into the reply, to be edited;
 * - the 24-hour window counts down; once it closes the free-text reply gives way to
 *   the approved templates (the server decides again on every send);
 * - keys: "u" opens the next conversation waiting (urgent first), "/" goes to the
 *   search, Ctrl+Enter (Cmd+Enter) sends the reply.
 * Static file: the content security policy forbids inline scripts.
 */
(function () {
  "use strict";

  var conversation = document.getElementById("conversation");
  var reply = document.getElementById("reply-body");
  var replyForm = document.getElementById("reply-form");
  var templateForm = document.getElementById("template-form");

  // -- the draft ----------------------------------------------------------------------

  function draftKey() {
    return reply ? reply.dataset.draftKey : null;
  }

  function saveDraft() {
    try {
      if (reply.value) {
        window.sessionStorage.setItem(draftKey(), reply.value);
      } else {
        window.sessionStorage.removeItem(draftKey());
      }
    } catch (error) { /* private mode: the draft lives as long as the page */ }
  }

  if (reply && draftKey()) {
    try {
      var kept = window.sessionStorage.getItem(draftKey());
      if (kept && !reply.value) {
        reply.value = kept;
      }
    } catch (error) { /* nothing kept */ }
    reply.addEventListener("input", saveDraft);
  }

  // The page that follows a send says whether it went; a refused one keeps the draft.
  var sentOk = document.querySelector(".flash.ok");
  if (reply && sentOk && sentOk.textContent.indexOf("Messaggio in invio") === 0) {
    reply.value = "";
    saveDraft();
  }

  // -- canned responses ---------------------------------------------------------------

  var canned = document.getElementById("canned");
  if (canned && reply) {
    canned.addEventListener("change", function () {
      var text = canned.value;
      if (!text) {
        return;
      }
      var start = reply.selectionStart || reply.value.length;
      var end = reply.selectionEnd || reply.value.length;
      reply.value = reply.value.slice(0, start) + text + reply.value.slice(end);
      canned.value = "";
      reply.focus();
      reply.selectionStart = reply.selectionEnd = start + text.length;
      saveDraft();
    });
  }

  // -- the 24-hour window -------------------------------------------------------------

  function left(milliseconds) {
    var minutes = Math.max(0, Math.floor(milliseconds / 60000));
    if (minutes < 1) {
      return "meno di un minuto";
    }
    if (minutes < 60) {
      return minutes + " min";
    }
    var hours = Math.floor(minutes / 60);
    var rest = minutes % 60;
    return rest ? hours + " h " + rest + " min" : hours + " h";
  }

  function showWindow() {
    var state = document.getElementById("window");
    if (!state) {
      return;
    }
    var open = state.dataset.open === "true";
    var closesAt = state.dataset.closesAt ? Date.parse(state.dataset.closesAt) : NaN;
    if (open && !isNaN(closesAt)) {
      var remaining = closesAt - Date.now();
      var shown = document.getElementById("window-left");
      if (remaining <= 0) {
        open = false;
        state.dataset.open = "false";
        state.className = "window closed";
        state.textContent = "Finestra di 24 ore chiusa: si può inviare solo un modello approvato.";
      } else if (shown) {
        shown.textContent = left(remaining);
      }
    }
    if (replyForm) {
      replyForm.hidden = !open;
    }
    if (templateForm) {
      templateForm.hidden = open;
    }
  }

  if (conversation) {
    showWindow();
    window.setInterval(showWindow, 30000);
    document.addEventListener("portineria:live", showWindow);
  }

  // -- keyboard -----------------------------------------------------------------------

  function typing(target) {
    var tag = target && target.tagName ? target.tagName.toLowerCase() : "";
    return tag === "input" || tag === "textarea" || tag === "select" || target.isContentEditable;
  }

  document.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && event.target === reply) {
      event.preventDefault();
      if (replyForm && !replyForm.hidden) {
        replyForm.requestSubmit();
      }
      return;
    }
    if (typing(event.target) || event.ctrlKey || event.metaKey || event.altKey) {
      return;
    }
    if (event.key === "u") {
      event.preventDefault();
      window.location.href = conversation ? conversation.dataset.nextUrl : "/console/next";
    } else if (event.key === "/") {
      var search = document.getElementById("search");
      if (search) {
        event.preventDefault();
        search.focus();
      }
    }
  });
})();
