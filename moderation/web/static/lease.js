// Claim leases and SLA countdowns.
//
// Countdowns: every element with data-countdown (an ISO time) and data-kind
// ("sla" or "lease") shows the time left, counted against the server's clock
// (data-server-now on this script's tag), not the browser's.
//
// Leases: on the item page (#lease with data-lease-url and data-lease-seconds)
// the claim is renewed every third of the lease while the page is open and
// visible. A hidden or closed page stops renewing, so an abandoned claim runs
// out and the item returns to the queue. When renewal fails the page says so
// (#lease-banner) and, once the claim is gone, disables the decision buttons.
(function () {
  "use strict";
  var script = document.currentScript;
  var csrf = document.querySelector('meta[name="csrf-token"]');
  var lease = document.getElementById("lease");
  var leaseLeft = document.getElementById("lease-left");
  var banner = document.getElementById("lease-banner");

  // Browsers disagree on more than three fraction digits: keep milliseconds.
  function parseTime(iso) {
    var t = Date.parse(String(iso || "").replace(/(\.\d{3})\d+/, "$1"));
    return isFinite(t) ? t : null;
  }
  var serverNow = script ? parseTime(script.dataset.serverNow) : null;
  var skew = serverNow === null ? 0 : serverNow - Date.now();
  function now() { return Date.now() + skew; }

  // Same wording as queue_policy.describe_duration / describe_sla.
  function duration(seconds) {
    seconds = Math.abs(Math.trunc(seconds));
    var d = Math.floor(seconds / 86400), h = Math.floor(seconds % 86400 / 3600);
    var m = Math.floor(seconds % 3600 / 60), s = seconds % 60;
    var parts = d ? [[d, "d"], [h, "h"]] : h ? [[h, "h"], [m, "min"]] : m ? [[m, "min"]] : [[s, "s"]];
    var text = parts.filter(function (p) { return p[0]; }).map(function (p) { return p[0] + " " + p[1]; }).join(" ");
    return text || "0 s";
  }
  function secondsLeft(el) {
    var due = parseTime(el.dataset.countdown);
    return due === null ? null : Math.floor((due - now()) / 1000);
  }
  function describe(el) {
    var left = secondsLeft(el);
    if (left === null) return el.textContent;
    if (el.dataset.kind === "lease") return left > 0 ? duration(left) + " left" : "ended";
    return left < 0 ? "breached " + duration(left) + " ago" : duration(left) + " left";
  }
  function paint() {
    var els = document.querySelectorAll("[data-countdown]");
    for (var i = 0; i < els.length; i++) els[i].textContent = describe(els[i]);
  }

  function show(message) {
    if (!banner) return;
    banner.textContent = message;
    banner.hidden = !message;
  }

  var ended = false, inFlight = false, retryAt = 0;
  var leaseSeconds = lease ? Number(lease.dataset.leaseSeconds) || 300 : 0;

  function claimGone(message) {
    ended = true;
    show(message);
    if (leaseLeft) { leaseLeft.dataset.countdown = ""; leaseLeft.textContent = "ended"; }
    var buttons = document.querySelectorAll("#decide button, form[action$='/release'] button");
    for (var i = 0; i < buttons.length; i++) buttons[i].disabled = true;
  }

  function renew() {
    inFlight = true;
    fetch(lease.dataset.leaseUrl, {
      method: "POST",
      credentials: "same-origin",
      redirect: "manual",  // a logged-out session answers with a redirect to the login page
      headers: {"X-CSRF-Token": csrf ? csrf.content : "", "Accept": "application/json"}
    }).then(function (resp) {
      if (resp.type === "opaqueredirect") {
        claimGone("Your session has ended, so your claim could not be renewed. Log in again and press N for an item.");
        return null;
      }
      // 409: the claim ended; 404: so did the right to see the item (a moderator's claim ran out).
      if (resp.status === 409 || resp.status === 404) {
        claimGone("Your claim on this item has ended (the lease ran out, or the item was decided elsewhere). " +
                  "It is back in the queue; decisions on this page will be refused. Press N for the next item.");
        return null;
      }
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      return resp.json();
    }).then(function (body) {
      if (!body || ended) return;
      if (leaseLeft && body.lease_expires_at) leaseLeft.dataset.countdown = body.lease_expires_at;
      show("");
      paint();
    }).catch(function (err) {
      retryAt = Date.now() + 10000;
      show("Could not renew your claim (" + (err && err.message || "network error") + "); retrying. " +
           "If this continues, your claim ends when the lease runs out.");
    }).then(function () { inFlight = false; });
  }

  function tick() {
    paint();
    if (!lease || ended || inFlight || document.visibilityState !== "visible") return;
    var left = leaseLeft ? secondsLeft(leaseLeft) : 0;
    // Every third of the lease: renew once two thirds (or less) are left.
    if (left === null || left <= leaseSeconds * 2 / 3) {
      if (Date.now() >= retryAt) renew();
    }
  }

  document.addEventListener("visibilitychange", tick);
  paint();
  tick();
  setInterval(tick, 1000);
})();
