// Keyboard shortcuts and reveal-on-demand. Every shortcut is shown on the page
// as a <kbd>; elements opt in with data-key ("r", or "shift+r" for Shift+R).
(function () {
  "use strict";
  var csrf = document.querySelector('meta[name="csrf-token"]');
  var media = document.getElementById("media");
  var revealButton = document.getElementById("reveal");
  var revealAllButton = document.getElementById("reveal-all");

  function audit() {
    // Reveals are audited.
    if (!media || !media.dataset.revealUrl) return;
    fetch(media.dataset.revealUrl, {method: "POST", headers: {"X-CSRF-Token": csrf ? csrf.content : ""}, credentials: "same-origin"});
  }

  // Body-part regions (data-regions: a JSON list of {label, score, x, y, w, h},
  // fractions of the picture) stay blurred after Reveal until "Show all".
  var PAD = 0.1; // grow each box by 10% of its size on every side
  function clamp01(v) { return Math.min(1, Math.max(0, v)); }
  function parseRegions(text) {
    var list;
    try { list = JSON.parse(text || "null"); } catch (e) { return []; }
    if (!Array.isArray(list)) return [];
    var out = [];
    list.forEach(function (r) {
      if (!r || typeof r !== "object") return;
      var x = Number(r.x), y = Number(r.y), w = Number(r.w), h = Number(r.h);
      if (![x, y, w, h].every(isFinite) || w <= 0 || h <= 0) return;
      var left = clamp01(x - PAD * w), top = clamp01(y - PAD * h);
      var right = clamp01(x + w + PAD * w), bottom = clamp01(y + h + PAD * h);
      if (right <= left || bottom <= top) return;
      out.push({label: String(r.label || "region"), score: Number(r.score), left: left, top: top, width: right - left, height: bottom - top});
    });
    return out;
  }

  var regions = [];
  var img = media ? media.querySelector("img") : null;
  if (media && img && media.dataset.regions) {
    regions = parseRegions(media.dataset.regions);
  }
  if (regions.length) {
    // Wrap the picture so the overlays are sized in percent of the image box.
    var frame = document.createElement("span");
    frame.className = "frame";
    img.parentNode.insertBefore(frame, img);
    frame.appendChild(img);
    regions.forEach(function (r) {
      var box = document.createElement("div");
      box.className = "region";
      box.setAttribute("aria-hidden", "true");
      // element.style is CSSOM, which the CSP (style-src 'self') allows.
      box.style.left = (r.left * 100).toFixed(3) + "%";
      box.style.top = (r.top * 100).toFixed(3) + "%";
      box.style.width = (r.width * 100).toFixed(3) + "%";
      box.style.height = (r.height * 100).toFixed(3) + "%";
      box.title = r.label + (isFinite(r.score) ? " " + r.score.toFixed(2) : "");
      frame.appendChild(box);
    });
    media.classList.add("has-regions");
  } else if (revealAllButton) {
    // Nothing usable to keep blurred: Reveal shows everything, as without regions.
    revealAllButton.hidden = true;
    revealAllButton.removeAttribute("data-key");
    var note = media && media.querySelector(".regions-note");
    if (note) note.hidden = true;
    revealAllButton = null;
  }

  function setShowAll(on) {
    if (!media) return;
    media.classList.toggle("show-all", on);
    if (revealAllButton) revealAllButton.setAttribute("aria-pressed", on ? "true" : "false");
  }

  function toggleReveal() {
    if (!media) return;
    var nowRevealed = media.classList.toggle("blurred") === false;
    // Reveal (R) shows the picture with the regions still blurred.
    setShowAll(false);
    if (nowRevealed) audit();
  }

  function toggleShowAll() {
    if (!media) return;
    if (media.classList.contains("blurred")) {
      media.classList.remove("blurred");
      setShowAll(true);
      audit();
    } else if (media.classList.contains("show-all")) {
      setShowAll(false); // back to regions blurred
    } else {
      setShowAll(true);
      audit();
    }
  }

  if (revealButton) revealButton.addEventListener("click", toggleReveal);
  if (revealAllButton) revealAllButton.addEventListener("click", toggleShowAll);

  function find(key) {
    var quoted = window.CSS && CSS.escape ? CSS.escape(key) : key.replace(/["\\]/g, "\\$&");
    return document.querySelector('[data-key="' + quoted + '"]');
  }

  document.addEventListener("keydown", function (ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    var tag = (ev.target && ev.target.tagName) || "";
    if (tag === "INPUT" && ev.target.type !== "radio" || tag === "TEXTAREA") return;
    var key = ev.key.toLowerCase();
    // Shift+key opts in with data-key="shift+key"; without one, Shift+key acts
    // like the key (as before).
    var el = (ev.shiftKey && find("shift+" + key)) || find(key);
    if (!el) return;
    ev.preventDefault();
    if (el.type === "radio") { el.checked = true; return; }
    el.click();
  });
})();
