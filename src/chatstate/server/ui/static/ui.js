// chatstate inspector: the one script. It keeps an open timeline live by polling
// /ui/s/{id}/live (the server renders the grid; this only swaps it in) and scrolls to
// the event a link points at. No dependencies, nothing loaded from elsewhere.
(function () {
  "use strict";
  var INTERVAL = 700;

  function scrollToHash() {
    if (!location.hash) return;
    var target = document.getElementById(decodeURIComponent(location.hash.slice(1)));
    if (target) target.scrollIntoView({ block: "center" });
  }

  function follow(box) {
    var url = box.getAttribute("data-live");
    var key = box.getAttribute("data-key") || "";
    var status = document.getElementById("live-status");
    var stopped = false;
    function tick() {
      if (stopped) return;
      fetch(url + "?key=" + encodeURIComponent(key), { credentials: "same-origin", cache: "no-store" })
        .then(function (r) {
          if (r.status === 401 || r.status === 404 || r.status === 410) {
            stopped = true;
            if (status) status.textContent = "Live updates stopped (HTTP " + r.status + ").";
            return null;
          }
          return r.ok ? r.json() : null;
        })
        .then(function (body) {
          if (body && body.changed) {
            var atBottom = window.innerHeight + window.scrollY >= document.body.scrollHeight - 40;
            key = body.key;
            box.setAttribute("data-key", key);
            box.innerHTML = body.html;
            if (atBottom) window.scrollTo(0, document.body.scrollHeight);
          }
        })
        .catch(function () { /* a blip: try again next tick */ })
        .then(function () { if (!stopped) setTimeout(tick, INTERVAL); });
    }
    setTimeout(tick, INTERVAL);
  }

  document.addEventListener("DOMContentLoaded", function () {
    scrollToHash();
    var box = document.getElementById("timeline");
    if (box && box.getAttribute("data-live")) follow(box);
  });
})();
