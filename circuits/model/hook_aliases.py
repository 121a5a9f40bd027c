"""TransformerLens 4's names for hook points that TransformerLens 3.x names differently.

TL4's own utilities (``patching.get_act_patch_direct_path``, the edge-level
``tools.analysis.attribution_patching``) address the per-head query/key/value inputs as
``blocks.{l}.attn.hook_{q,k,v}_input``; TL3, and this package, call the same points
``blocks.{l}.hook_{q,k,v}_input``. The alias is the same :class:`HookPoint` under a second
name in ``hook_dict``/``mod_dict``: a hook added under either name is the same hook, and a
cache keeps the TL3 name (``hook.name``).
"""

from __future__ import annotations

import re
from typing import Any

ALIAS_PATTERN = re.compile(r"(blocks\.\d+)\.hook_([qkv])_input")


def tl4_aliases(hook_names: list[str]) -> dict[str, str]:
    """``{tl4_alias: tl3_name}`` for the hook names that have a TL4 alias."""
    return {
        f"{m[1]}.attn.hook_{m[2]}_input": name
        for name in hook_names
        if (m := ALIAS_PATTERN.fullmatch(name))
    }


class HookAliasMixin:
    """Registers TL4's hook names after ``HookedRootModule.setup`` builds the dictionaries."""

    hook_dict: dict[str, Any]
    mod_dict: dict[str, Any]

    def setup(self) -> None:
        super().setup()  # type: ignore[misc]
        for alias, name in tl4_aliases(list(self.hook_dict)).items():
            self.hook_dict[alias] = self.hook_dict[name]
            self.mod_dict[alias] = self.mod_dict[name]
