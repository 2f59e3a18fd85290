/* sendit dashboard: pages that stay current without reloading.
 *
 * The page's live region (<div data-live data-refresh="10">) is the server's
 * own HTML: every N seconds this script fetches the same URL with ?partial=1
 * and swaps the region's content in place, keeping the scroll position, the
 * focus, the sort and the filters (they are in the URL). It waits while the
 * tab is hidden or text is selected in the region, and stops when the region
 * says so (<div data-live-stop>) or the session has ended.
 *
 * Links marked data-nav (sort headers, pages, status filters) and forms
 * marked data-live-form load the same way and update the address bar, so the
 * back button works. Without JavaScript every link and form still works.
 */
(function () {
  "use strict";
  var region = document.querySelector("[data-live]");
  if (!region || !window.fetch || !window.URL) { return; }
  var seconds = parseFloat(region.getAttribute("data-refresh")) || 0;
  var statusBox = document.querySelector("[data-live-status]");
  var statusText = statusBox && statusBox.querySelector("[data-live-text]");
  var toggle = statusBox && statusBox.querySelector("[data-live-toggle]");
  var form = document.querySelector("form[data-live-form]");
  var announcer = document.createElement("div");
  var timer = null, loading = false, stopped = false, paused = false, generation = 0;

  announcer.className = "visually-hidden";
  announcer.setAttribute("role", "status");
  document.body.appendChild(announcer);

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  function localTimes(root) {
    var nodes = root.querySelectorAll("time[data-local]");
    for (var i = 0; i < nodes.length; i++) {
      var d = new Date(nodes[i].getAttribute("datetime"));
      if (isNaN(d)) { continue; }
      var text = d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) +
        " " + pad(d.getHours()) + ":" + pad(d.getMinutes());
      if (nodes[i].getAttribute("data-local") === "seconds") { text += ":" + pad(d.getSeconds()); }
      nodes[i].textContent = text;
      nodes[i].title = d.toString();
    }
  }

  function say(text) {
    if (statusText) { statusText.textContent = text; }
  }

  function partialUrl(href) {
    var url = new URL(href, location.href);
    url.searchParams.set("partial", "1");
    return url.toString();
  }

  function focusKey() {
    var el = document.activeElement;
    if (!el || el === document.body || !region.contains(el)) { return null; }
    return el.getAttribute("data-focus-key") || el.id || el.getAttribute("href");
  }

  function restoreFocus(key) {
    if (!key) { return; }
    var el = region.querySelector('[data-focus-key="' + CSS.escape(key) + '"]') ||
      document.getElementById(key) || region.querySelector('[href="' + CSS.escape(key) + '"]');
    if (el) { el.focus({ preventScroll: true }); }
  }

  function swap(html) {
    var x = window.scrollX, y = window.scrollY, key = focusKey();
    region.innerHTML = html;
    localTimes(region);
    restoreFocus(key);
    window.scrollTo(x, y);
    if (region.querySelector("[data-live-stop]")) { stop("Up to date"); }
  }

  function stop(message) {
    stopped = true;
    clearTimeout(timer);
    say(message);
    if (statusBox) { statusBox.classList.add("stopped"); }
    if (toggle) { toggle.hidden = true; }
  }

  function load(href) {
    var mine = ++generation;
    loading = true;
    region.setAttribute("aria-busy", "true");
    return fetch(partialUrl(href), { credentials: "same-origin", cache: "no-store",
                                     headers: { "Accept": "text/html" } })
      .then(function (response) {
        if (response.redirected) { throw { fatal: "Your session has ended: reload the page to log in again." }; }
        if (response.status === 404) { throw { fatal: "This page no longer exists.", status: 404 }; }
        if (!response.ok) { throw { status: response.status }; }
        return response.text();
      })
      .then(function (html) {
        if (mine !== generation) { return false; }  // a newer load won
        swap(html);
        return true;
      })
      .finally(function () {
        if (mine === generation) { loading = false; region.removeAttribute("aria-busy"); }
      });
  }

  // -- refreshing in place

  function selectionInRegion() {
    var sel = window.getSelection && window.getSelection();
    return sel && !sel.isCollapsed && sel.rangeCount && region.contains(sel.getRangeAt(0).commonAncestorContainer);
  }

  function schedule() {
    clearTimeout(timer);
    if (seconds > 0 && !stopped && !paused && !document.hidden) {
      timer = setTimeout(refresh, seconds * 1000);
    }
  }

  function refresh() {
    if (loading || selectionInRegion()) { schedule(); return; }
    load(location.href).then(function (swapped) {
      if (swapped && !stopped) {
        var now = new Date();
        say("Updated " + pad(now.getHours()) + ":" + pad(now.getMinutes()) + ":" + pad(now.getSeconds()));
      }
    }, function (problem) {
      if (problem && problem.fatal) { stop(problem.fatal); } else { say("Could not refresh; trying again"); }
    }).then(schedule);
  }

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) { clearTimeout(timer); } else if (seconds > 0 && !stopped && !paused) { refresh(); }
  });

  if (toggle) {
    toggle.addEventListener("click", function () {
      paused = !paused;
      toggle.setAttribute("aria-pressed", paused ? "true" : "false");
      toggle.textContent = paused ? "Resume" : "Pause";
      statusBox.classList.toggle("paused", paused);
      if (paused) { clearTimeout(timer); say("Paused"); } else { refresh(); }
    });
  }

  // -- sorting, paging and filtering without a reload

  function syncForm() {
    if (!form) { return; }
    var params = new URL(location.href).searchParams;
    for (var i = 0; i < form.elements.length; i++) {
      var field = form.elements[i];
      if (!field.name || field === document.activeElement || field.type === "submit") { continue; }
      field.value = params.get(field.name) || "";
    }
    // hidden sort fields appear only once a sort was chosen
    ["sort", "order"].forEach(function (name) {
      if (params.get(name) && !form.elements[name]) {
        var input = document.createElement("input");
        input.type = "hidden"; input.name = name; input.value = params.get(name);
        form.appendChild(input);
      }
    });
  }

  function navigate(href, options) {
    options = options || {};
    return load(href).then(function (swapped) {
      if (!swapped) { return; }
      if (options.replace) { history.replaceState({ live: true }, "", href); }
      else if (!options.fromHistory) { history.pushState({ live: true }, "", href); }
      syncForm();
      var summary = region.querySelector("[data-live-summary]");
      announcer.textContent = summary ? summary.textContent.replace(/\s+/g, " ").trim() : "";
      if (options.toTop && region.getBoundingClientRect().top < 0) { region.scrollIntoView(); }
    }, function () {
      location.assign(href);  // let the server show what went wrong
    });
  }

  region.addEventListener("click", function (event) {
    var link = event.target.closest && event.target.closest("a[data-nav]");
    if (!link || event.defaultPrevented || event.button !== 0 ||
        event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) { return; }
    event.preventDefault();
    navigate(link.href, { toTop: link.getAttribute("data-nav") === "page" });
  });

  function formUrl() {
    var url = new URL(form.getAttribute("action") || location.pathname, location.href);
    var data = new FormData(form);
    data.forEach(function (value, name) { if (value !== "") { url.searchParams.append(name, value); } });
    return url.toString();
  }

  if (form) {
    var typing = null;
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      navigate(formUrl());
    });
    form.addEventListener("input", function (event) {
      if (event.target.type !== "search") { return; }
      clearTimeout(typing);
      // one history entry per search, not one per keystroke
      typing = setTimeout(function () { navigate(formUrl(), { replace: true }); }, 350);
    });
    form.addEventListener("change", function (event) {
      if (event.target.hasAttribute("data-auto-submit")) { navigate(formUrl()); }
    });
  }

  window.addEventListener("popstate", function (event) {
    if (event.state && event.state.live) { navigate(location.href, { fromHistory: true }); }
  });

  localTimes(document);
  if (seconds > 0 && statusBox) {
    statusBox.hidden = false;
    if (region.querySelector("[data-live-stop]")) { stop("Up to date"); }
  }
  history.replaceState({ live: true }, "", location.href);
  schedule();
})();
