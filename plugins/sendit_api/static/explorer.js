/* sendit: starts Swagger UI (from the swagger-ui-bundle package) on the OpenAPI document.
 * Calls go out with the browser's session cookie; those that change something also
 * carry the session's CSRF token. Nothing is fetched from anywhere but this server. */
(function () {
  "use strict";
  var root = document.getElementById("swagger-ui");
  if (!root || typeof window.SwaggerUIBundle !== "function") { return; }
  var csrf = root.getAttribute("data-csrf");
  var SAFE = { GET: true, HEAD: true, OPTIONS: true };
  window.senditSwaggerUI = window.SwaggerUIBundle({
    url: root.getAttribute("data-spec"),
    domNode: root,
    deepLinking: true,
    presets: [window.SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    validatorUrl: null,            // never ask an online validator
    displayRequestDuration: true,
    defaultModelsExpandDepth: 0,
    docExpansion: "list",
    requestInterceptor: function (request) {
      request.credentials = "same-origin";
      var method = (request.method || "GET").toUpperCase();
      if (!SAFE[method] && csrf) { request.headers["X-CSRF-Token"] = csrf; }
      return request;
    }
  });
})();
