// Keyboard shortcuts, reveal-on-demand and exposure reporting. Every shortcut
// is shown on the page as a <kbd>; elements opt in with data-key ("r", or
// "shift+r" for Shift+R), and data-hold makes a key act while it is held.
// "?" lists them all.
(function () {
  "use strict";
  var csrfMeta = document.querySelector('meta[name="csrf-token"]');
  var csrf = csrfMeta ? csrfMeta.content : "";
  var media = document.getElementById("media");
  var revealButton = document.getElementById("reveal");
  var revealAllButton = document.getElementById("reveal-all");
  var holdButton = document.getElementById("hold-reveal");
  var holdMode = !!(media && media.dataset.revealMode === "hold");

  function post(url, body) {
    return fetch(url, {
      method: "POST",
      headers: {"X-CSRF-Token": csrf},
      body: body,
      credentials: "same-origin",
      keepalive: true // still sent when the page is being left (decision, unload)
    });
  }

  function audit() {
    // Reveals are audited.
    if (!media || !media.dataset.revealUrl) return;
    post(media.dataset.revealUrl);
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
  var video = media ? media.querySelector("video") : null;
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

  // -- exposure: seconds the media is revealed while the page is visible --------------
  var REPORT_EVERY_MS = 15000;
  var pendingMs = 0;
  var revealedSince = null; // when the current stretch of visible, revealed media began

  function isRevealed() { return !!media && !media.classList.contains("blurred"); }
  function visible() { return document.visibilityState !== "hidden"; }

  function settleClock() {
    if (revealedSince !== null) {
      pendingMs += Date.now() - revealedSince;
      revealedSince = null;
    }
    if (isRevealed() && visible()) revealedSince = Date.now();
  }

  function report() {
    settleClock();
    if (!media || !media.dataset.exposureUrl || pendingMs < 100) return;
    var body = new URLSearchParams({item_id: media.dataset.itemId, seconds: (pendingMs / 1000).toFixed(2)});
    pendingMs = 0;
    post(media.dataset.exposureUrl, body).then(function (resp) {
      return resp.ok ? resp.json() : null;
    }).then(function (data) {
      if (data && data.break_due) showBreakNote();
    }).catch(function () { /* a lost report under-counts; never worth an error */ });
  }

  function showBreakNote() {
    if (!media || media.querySelector(".break-note")) return;
    var note = document.createElement("small");
    note.className = "break-note";
    note.setAttribute("role", "status");
    note.textContent = "A break is due: finish this item, then take a break.";
    media.querySelector("figcaption").appendChild(note);
  }

  if (media) {
    setInterval(function () { if (isRevealed() || pendingMs) report(); }, REPORT_EVERY_MS);
    document.addEventListener("visibilitychange", function () { if (visible()) settleClock(); else report(); });
    window.addEventListener("pagehide", report);
    var decideForm = document.getElementById("decide");
    if (decideForm) decideForm.addEventListener("submit", report);
  }

  // -- reveal and blur ---------------------------------------------------------------
  function setRevealed(on) {
    if (!media || isRevealed() === on) return;
    settleClock(); // time so far belongs to the state that ends now
    media.classList.toggle("blurred", !on);
    settleClock();
    if (on) {
      audit();
    } else if (video) {
      video.pause(); // hidden again: it stops, and stays muted
      video.muted = true;
    }
  }

  function setShowAll(on) {
    if (!media) return;
    media.classList.toggle("show-all", on);
    if (revealAllButton) revealAllButton.setAttribute("aria-pressed", on ? "true" : "false");
  }

  function toggleReveal() {
    if (!media) return;
    // Reveal (R) shows the picture with the regions still blurred.
    setShowAll(false);
    setRevealed(!isRevealed());
  }

  function toggleShowAll() {
    if (!media) return;
    if (holdMode) {
      setShowAll(!media.classList.contains("show-all")); // applies while held
    } else if (!isRevealed()) {
      setShowAll(true);
      setRevealed(true);
    } else {
      setShowAll(!media.classList.contains("show-all"));
      if (media.classList.contains("show-all")) audit();
    }
  }

  // Hold to reveal: revealed while a key, the hold button or the media is held.
  var holds = 0;
  function holdStart() { holds += 1; setRevealed(true); }
  function holdEnd() { if (holds > 0) { holds -= 1; if (holds === 0) setRevealed(false); } }
  function holdReset() { if (holds > 0) { holds = 0; setRevealed(false); } }

  function holdWithPointer(el) {
    var down = false;
    el.addEventListener("pointerdown", function (ev) {
      if (ev.button !== 0 || down) return;
      ev.preventDefault();
      down = true;
      holdStart();
    });
    function up() { if (down) { down = false; holdEnd(); } }
    ["pointerup", "pointerleave", "pointercancel"].forEach(function (name) { el.addEventListener(name, up); });
    // A hold button is driven by the pointer (and H), never by a plain click.
    el.addEventListener("click", function (ev) { ev.preventDefault(); });
  }

  if (revealButton) revealButton.addEventListener("click", toggleReveal);
  if (revealAllButton) revealAllButton.addEventListener("click", toggleShowAll);
  if (holdButton) holdWithPointer(holdButton);
  if (img) {
    var target = img.parentNode.classList.contains("frame") ? img.parentNode : img;
    if (holdMode) holdWithPointer(target);
    else target.addEventListener("click", toggleReveal);
  }
  if (video) {
    // Never autoplay, never sound by default: muted until the moderator unmutes it.
    video.autoplay = false;
    video.muted = true;
    video.removeAttribute("autoplay");
  }
  window.addEventListener("blur", holdReset); // a key released in another window never comes back

  // A page left open past the link's lifetime: fetch a fresh link and retry once.
  var lastRefresh = 0;
  function refreshMedia(el) {
    if (!media || !media.dataset.mediaLinkUrl || Date.now() - lastRefresh < 10000) return;
    lastRefresh = Date.now();
    fetch(media.dataset.mediaLinkUrl, {credentials: "same-origin", headers: {Accept: "application/json"}})
      .then(function (resp) { return resp.ok ? resp.json() : null; })
      .then(function (data) {
        if (!data || !data.url) return;
        var at = el.currentTime || 0;
        el.src = data.url;
        if (el === video && at) video.currentTime = at;
      })
      .catch(function () {});
  }
  [img, video].forEach(function (el) {
    if (el) el.addEventListener("error", function () { refreshMedia(el); });
  });

  // -- keyboard ----------------------------------------------------------------------
  function find(key) {
    var quoted = window.CSS && CSS.escape ? CSS.escape(key) : key.replace(/["\\]/g, "\\$&");
    var el = document.querySelector('[data-key="' + quoted + '"]');
    return el && !el.hidden && !el.disabled ? el : null;
  }

  function typing(target) {
    var tag = (target && target.tagName) || "";
    // Radio buttons and checkboxes (reason, "apply to the group") keep the shortcuts.
    var toggle = target && (target.type === "radio" || target.type === "checkbox");
    return (tag === "INPUT" && !toggle) || tag === "TEXTAREA" || tag === "SELECT" ||
      !!(target && target.isContentEditable);
  }

  var heldKeys = {};
  document.addEventListener("keydown", function (ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (ev.key === "Escape" && help && !help.hidden) { help.hidden = true; return; }
    if (typing(ev.target)) return;
    var key = ev.key.toLowerCase();
    // Shift+key opts in with data-key="shift+key"; without one, Shift+key acts
    // like the key (as before).
    var el = (ev.shiftKey && find("shift+" + key)) || find(key);
    if (!el) return;
    ev.preventDefault();
    if (el.hasAttribute("data-hold")) {
      if (!ev.repeat && !heldKeys[key]) { heldKeys[key] = true; holdStart(); }
      return;
    }
    if (ev.repeat) return; // one press, one action: a held key never decides twice
    if (el.type === "radio") { el.checked = true; return; }
    el.click();
  });
  document.addEventListener("keyup", function (ev) {
    var key = ev.key.toLowerCase();
    if (heldKeys[key]) { delete heldKeys[key]; holdEnd(); }
  });
  window.addEventListener("blur", function () { heldKeys = {}; });

  // "?": the shortcuts of this page, read from its data-key elements.
  var help = null;
  function describe(el) {
    var source = el.type === "radio" && el.closest("label") ? el.closest("label") : el;
    var text = "";
    source.childNodes.forEach(function (n) {
      if (n.nodeType === 3) text += n.textContent;
      else if (n.nodeType === 1 && n.tagName !== "KBD" && n !== el) text += n.textContent;
    });
    return text.replace(/\s+/g, " ").trim() || el.getAttribute("aria-label") || el.id || "";
  }
  function keyLabel(el) {
    var kbd = el.querySelector("kbd") || (el.closest("label") && el.closest("label").querySelector("kbd"));
    if (kbd) return kbd.textContent;
    return el.dataset.key.replace("shift+", "Shift+").toUpperCase();
  }
  function toggleHelp() {
    if (!help) {
      help = document.createElement("div");
      help.className = "shortcut-help";
      help.setAttribute("role", "dialog");
      help.setAttribute("aria-label", "Keyboard shortcuts");
      help.addEventListener("click", function (ev) { if (ev.target === help) help.hidden = true; });
      document.body.appendChild(help);
      help.hidden = true;
    }
    if (!help.hidden) { help.hidden = true; return; }
    var card = document.createElement("div");
    card.className = "card";
    var title = document.createElement("h2");
    title.textContent = "Keyboard shortcuts";
    var table = document.createElement("table");
    document.querySelectorAll("[data-key]").forEach(function (el) {
      if (el.hidden || el.disabled) return;
      var row = table.insertRow();
      var k = document.createElement("kbd");
      k.textContent = keyLabel(el);
      row.insertCell().appendChild(k);
      row.insertCell().textContent = describe(el) + (el.hasAttribute("data-hold") ? " (while held)" : "");
    });
    var esc = table.insertRow();
    var k = document.createElement("kbd");
    k.textContent = "Esc";
    esc.insertCell().appendChild(k);
    esc.insertCell().textContent = "Close this list";
    card.appendChild(title);
    card.appendChild(table);
    help.replaceChildren(card);
    help.hidden = false;
  }
  var helpButton = document.getElementById("shortcuts");
  if (helpButton) helpButton.addEventListener("click", toggleHelp);
})();
