"""The hookable transformer: ``HookedTransformer`` and the modules it is built from.

``transformer.py`` holds the class; ``components.py`` the layers; ``fast_path.py`` the hook-free
block forward; ``weights.py``, ``text.py``, ``hook_aliases.py`` leaf mixins; ``processing.py``
weight processing; ``generation.py`` sampling.
"""

from circuits.model.transformer import HookedTransformer, TransformerBlock

__all__ = ["HookedTransformer", "TransformerBlock"]
