"""The bus: wire format, broadcaster side process, per-worker client."""
