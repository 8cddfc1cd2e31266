pytest_plugins = ["chatstate.testing.plugin"]
