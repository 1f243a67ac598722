// The simulator: send as a resident, poll the conversation. Text is set with
// textContent only, so nothing a message contains is ever parsed as HTML.
(function () {
  const chat = document.getElementById("chat");
  const phone = document.getElementById("phone");
  const state = document.getElementById("state");

  function render(data) {
    chat.replaceChildren();
    for (const m of data.messages) {
      const bubble = document.createElement("div");
      bubble.className = "bubble " + m.direction;
      bubble.textContent = m.body;
      const meta = document.createElement("small");
      meta.textContent = [m.direction === "in" ? "tu" : "bot", m.status, m.intent].filter(Boolean).join(" · ");
      bubble.appendChild(meta);
      chat.appendChild(bubble);
    }
    state.textContent = "Consenso: " + data.consent + (data.mode ? " · modalità: " + data.mode : "");
  }

  async function refresh() {
    const answer = await fetch("/dev/simulator/messages?phone=" + encodeURIComponent(phone.value));
    if (answer.ok) render(await answer.json());
  }

  document.getElementById("send").addEventListener("submit", async function (event) {
    event.preventDefault();
    const body = document.getElementById("body");
    await fetch("/dev/simulator/send", {
      method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({phone: phone.value, body: body.value}),
    });
    body.value = "";
    refresh();
  });
  setInterval(refresh, 1000);
  refresh();
})();
