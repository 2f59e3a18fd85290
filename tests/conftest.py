pytest_plugins = ["sendit_core.testing"]
