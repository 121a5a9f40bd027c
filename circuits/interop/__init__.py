"""Moving models between circuits and other libraries, with identical numerics.

- :mod:`circuits.interop.bridge`: TransformerLens 4 ``TransformerBridge`` (``boot_native``).
- :mod:`circuits.interop.gpt2`: Hugging Face ``GPT2LMHeadModel``.

- :mod:`circuits.interop.tl3`: TransformerLens 3.x ``HookedTransformer`` state dicts. Our
  parameter names are theirs, so ``model.load_state_dict(tl3_state_dict, strict=True)`` loads
  one directly; ``from_tl3`` also infers the config from the weights.
"""
