"""Built-in plugin: the Cornice REST API under /api with its Swagger page (issue 8)."""
