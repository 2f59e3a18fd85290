/* sendit: the product's own JavaScript, shared by every page. */
(function () {
  "use strict";
  // Confirm dangerous actions: <form data-confirm="Delete this batch?">
  document.addEventListener("submit", function (event) {
    var message = event.target.getAttribute && event.target.getAttribute("data-confirm");
    if (message && !window.confirm(message)) { event.preventDefault(); }
  });
})();
