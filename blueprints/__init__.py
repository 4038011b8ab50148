"""Rill's blueprints, one per concern: ``page`` (the chat page), ``api`` (the streaming
API) and ``health`` (liveness and readiness)."""
