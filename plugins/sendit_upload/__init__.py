"""Built-in plugin: browser and API uploads into new or existing batches (issue 5)."""
