"""Built-in plugin: the image page's orthogonal viewer and header table (issue 7)."""
