/* sendit_search: the console's keyboard shortcut and its examples (the page works without). */
(function () {
  "use strict";
  var form = document.getElementById("console-form");
  var sql = document.getElementById("sql");
  if (!form || !sql) { return; }
  sql.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit ? form.requestSubmit() : form.submit();
    }
  });
  document.addEventListener("click", function (event) {
    var example = event.target.closest && event.target.closest("a[data-sql]");
    if (example) {
      event.preventDefault();
      sql.value = example.getAttribute("data-sql");
      sql.focus();
    }
  });
})();
