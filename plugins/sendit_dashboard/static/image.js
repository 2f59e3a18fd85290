/* sendit_dashboard: the image page's header filter, applied as one types.
 * Without scripts the same filter works as a plain form (?filter=text): the
 * server renders every row and hides those the filter leaves out. */
(function () {
  "use strict";
  var form = document.querySelector("[data-header-filter]");
  var table = document.getElementById("header");
  if (!form || !table) { return; }
  var input = form.querySelector("input[name=filter]");
  var count = document.getElementById("header-count");
  var none = document.getElementById("header-none");
  var total = Number(count.getAttribute("data-total"));
  var rows = Array.prototype.filter.call(table.tBodies[0].rows, function (row) { return row.id; });
  var submit = form.querySelector("[data-filter-submit]");
  if (submit) { submit.hidden = true; }
  var clear = form.querySelector("[data-filter-clear]");
  if (clear) { clear.hidden = true; }

  function apply() {
    var text = input.value.trim(), needle = text.toLocaleLowerCase();
    var keep = {}, matches = 0;
    rows.forEach(function (row) {
      if (!needle || row.getAttribute("data-text").indexOf(needle) !== -1) {
        keep[row.id] = true;
        if (!row.classList.contains("item-row")) { matches++; }
        (row.getAttribute("data-parents") || "").split(" ").forEach(function (id) { if (id) { keep[id] = true; } });
      }
    });
    rows.forEach(function (row) { row.hidden = !keep[row.id]; });
    count.textContent = needle ? matches + " of " + total + " fields match “" + text + "”" : total + " fields";
    none.hidden = !needle || matches > 0;
    var url = new URL(window.location.href);
    if (needle) { url.searchParams.set("filter", text); } else { url.searchParams.delete("filter"); }
    window.history.replaceState(null, "", url);
  }

  input.addEventListener("input", apply);
  form.addEventListener("submit", function (event) { event.preventDefault(); apply(); });
})();
