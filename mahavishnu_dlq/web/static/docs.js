// Starts Swagger UI (shipped in static/vendor/swagger-ui) on the console's OpenAPI
// document. A signed-in browser's requests carry its session cookie; POSTs also
// carry the session's CSRF token (X-CSRF-Token), as the console's forms do.
(() => {
  "use strict";
  const start = () => {
    const box = document.getElementById("swagger-ui");
    if (!box || typeof window.SwaggerUIBundle !== "function") return;
    const csrf = box.dataset.csrf || "";
    window.SwaggerUIBundle({
      url: box.dataset.openapiUrl,
      domNode: box,
      deepLinking: true,
      validatorUrl: null,
      tryItOutEnabled: false,
      displayRequestDuration: true,
      presets: [window.SwaggerUIBundle.presets.apis],
      layout: "BaseLayout",
      requestInterceptor: (request) => {
        const method = String(request.method || "GET").toUpperCase();
        if (csrf && !["GET", "HEAD", "OPTIONS"].includes(method)) {
          request.headers["X-CSRF-Token"] = csrf;
        }
        return request;
      },
    });
  };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
