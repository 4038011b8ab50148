"""Jotter's views: pages (main), sign-in (auth) and a small JSON API (api)."""
