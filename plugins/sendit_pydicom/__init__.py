"""Built-in plugin: the pydicom parser (work in progress)."""
