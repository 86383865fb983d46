// voltd web inbox: live rows over Server-Sent Events. The server renders every row (escaped);
// this only inserts them. Without JavaScript the inbox still works, reloaded by hand.
"use strict";
(function () {
  const rows = document.querySelector("tbody[data-live]");
  if (!rows || !window.EventSource) return;
  const badge = document.getElementById("live");
  const source = new EventSource(rows.dataset.live);
  const say = (on, text) => {
    if (!badge) return;
    badge.className = "live " + (on ? "on" : "off");
    badge.textContent = text;
  };
  source.onopen = () => say(true, "live");
  source.onerror = () => say(false, "reconnecting");
  source.addEventListener("row", (message) => {
    const template = document.createElement("template");
    template.innerHTML = message.data;
    const row = template.content.firstElementChild;
    if (!row || document.getElementById(row.id)) return;
    const empty = rows.querySelector("tr.empty-row");
    if (empty) empty.remove();
    row.classList.add("fresh");
    rows.prepend(row);
  });
})();
