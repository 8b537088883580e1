"""The web dashboard (``skiff ui``): the registry, jobs and data in a browser page."""
