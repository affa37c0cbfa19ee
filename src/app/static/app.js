// Hearth app pages: the only script (CSP script-src 'self'; no inline code).
// 1. The authorize hand-off: submit form#authorize-post on load (its button works without JS).
// 2. Inactivity: after data-inactivity-secs without input, clear the screen and leave for
//    /app/ended, so a shared workstation does not keep showing a patient's record. The
//    server enforces the real session timeout; this only protects the screen.
// 3. Activity pings: while the clinician reads, POST data-activity-url at most once a
//    minute so the server's inactivity clock sees it; a 401 means the session is gone.
(function () {
  'use strict';

  var form = document.getElementById('authorize-post');
  if (form) {
    // The prototype's submit: a hidden field named "submit" cannot shadow it.
    HTMLFormElement.prototype.submit.call(form);
  }

  var body = document.body;
  var secs = parseInt(body.getAttribute('data-inactivity-secs') || '', 10);
  if (!(secs > 0)) {
    return; // no session on this page
  }
  var limitMs = secs * 1000;
  var activityUrl = body.getAttribute('data-activity-url');
  var meta = document.querySelector('meta[name="hearth-csrf"]');
  var csrf = meta ? meta.getAttribute('content') || '' : '';
  var PING_INTERVAL_MS = 60000;
  // Loading this page was activity the server already saw.
  var lastActivity = Date.now();
  var lastPing = lastActivity;
  var leaving = false;

  function leave(reason) {
    if (leaving) {
      return;
    }
    leaving = true;
    // Clear the record from the screen now, even if the next page is slow to come.
    var notice = document.createElement('p');
    notice.textContent = 'Hearth closed this page.';
    body.replaceChildren(notice);
    location.replace('/app/ended?reason=' + reason);
  }

  function ping() {
    if (!activityUrl || !window.fetch) {
      return;
    }
    lastPing = Date.now();
    fetch(activityUrl, {
      method: 'POST',
      credentials: 'same-origin',
      cache: 'no-store',
      headers: { 'X-Hearth-CSRF': csrf }
    }).then(function (response) {
      if (response.status === 401) {
        leave('expired');
      }
    }).catch(function () {
      // Offline or the server is down: the inactivity timer still guards the screen.
    });
  }

  function onActivity() {
    var now = Date.now();
    // Input after the limit (say the machine slept) does not revive the page.
    if (now - lastActivity >= limitMs) {
      leave('inactive');
      return;
    }
    lastActivity = now;
    if (now - lastPing >= PING_INTERVAL_MS) {
      ping();
    }
  }

  ['keydown', 'mousedown', 'touchstart', 'scroll', 'focus'].forEach(function (type) {
    // Capture: scroll and focus do not bubble, and inner elements scroll too.
    window.addEventListener(type, onActivity, { capture: true, passive: true });
  });

  // Compare timestamps instead of trusting one long timeout: timers in background
  // tabs and sleeping machines are delayed, the clock is not.
  setInterval(function () {
    if (Date.now() - lastActivity >= limitMs) {
      leave('inactive');
    }
  }, 1000);

  // Back/forward cache: a page restored after sign-out must not show the record again.
  window.addEventListener('pageshow', function (event) {
    if (event.persisted) {
      location.reload();
    }
  });
})();
