"""The hookable transformer: ``HookedTransformer`` and the modules it is built from.

``transformer.py`` holds the class; ``components.py`` the layers and ``TransformerBlock``;
``fast_path.py`` the hook-free block forward; ``weights.py``, ``text.py``, ``hook_aliases.py``
leaf mixins that never import the model; ``processing.py`` weight processing as pure state-dict
transforms; ``state_dict.py`` TransformerLens 3's state-dict format and the rotary tables;
``capabilities.py`` what a config supports; ``generation.py`` sampling. No module here imports
``transformer.py`` back (see docs/architecture.md).
"""

from circuits.model.transformer import HookedTransformer, TransformerBlock

__all__ = ["HookedTransformer", "TransformerBlock"]
