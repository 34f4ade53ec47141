"""A lean server-side WebSocket for engine.io in the barrel worker (RFC 6455, RFC 7692)."""
