"""Built-in plugin: search by any header field and value, and the query console (issue 9)."""
