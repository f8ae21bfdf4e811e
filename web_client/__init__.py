"""The browser client served at ``/`` (static files, no build step)."""
