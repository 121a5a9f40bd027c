"""Moving models between circuits and other libraries, with identical numerics.

- :mod:`circuits.interop.bridge`: TransformerLens 4 ``TransformerBridge`` (``boot_native``).
- :mod:`circuits.interop.gpt2`: Hugging Face ``GPT2LMHeadModel``.

TransformerLens 3.x ``HookedTransformer`` state dicts need no converter: our parameter names are
theirs, so ``model.load_state_dict(tl3_state_dict, strict=True)`` loads them directly.
"""
