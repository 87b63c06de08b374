"""The web console: the platform for people, in the browser, acting with their own token."""
