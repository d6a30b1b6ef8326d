// Keyboard shortcuts and reveal-on-demand. Every shortcut is shown on the page
// as a <kbd>; elements opt in with data-key.
(function () {
  "use strict";
  var csrf = document.querySelector('meta[name="csrf-token"]');
  var media = document.getElementById("media");
  var revealButton = document.getElementById("reveal");

  function toggleReveal() {
    if (!media) return;
    var wasBlurred = media.classList.toggle("blurred") === false;
    if (wasBlurred && media.dataset.revealUrl) {
      // Reveals are audited.
      fetch(media.dataset.revealUrl, {method: "POST", headers: {"X-CSRF-Token": csrf ? csrf.content : ""}, credentials: "same-origin"});
    }
  }
  if (revealButton) revealButton.addEventListener("click", toggleReveal);

  document.addEventListener("keydown", function (ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    var tag = (ev.target && ev.target.tagName) || "";
    if (tag === "INPUT" && ev.target.type !== "radio" || tag === "TEXTAREA") return;
    var key = ev.key.toLowerCase();
    var el = document.querySelector('[data-key="' + key + '"]');
    if (!el) return;
    ev.preventDefault();
    if (el.type === "radio") { el.checked = true; return; }
    el.click();
  });
})();
