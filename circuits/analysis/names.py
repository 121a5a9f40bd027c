"""Head names, re-exported from :mod:`circuits.names` (their one home, free of heavy imports)."""

from circuits.names import head_name, layer_name, parse_head_name

__all__ = ["head_name", "layer_name", "parse_head_name"]
