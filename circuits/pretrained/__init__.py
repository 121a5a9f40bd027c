"""Models someone else trained: TransformerLens's toy-model zoo, GPT-2-style checkpoints, ours.

``from_pretrained("attn-only-2l")`` loads one of the toy models the framework and induction-heads
work was done on (config, weights and tokenizer, from the Hugging Face cache or the hub), with
TransformerLens's weight processing by default. A local directory may hold a zoo-format model
(``config.json`` + ``*final.pth``), a Hugging Face ``GPT2LMHeadModel`` (``config.json`` with
``"model_type": "gpt2"``) or a checkpoint saved by :meth:`HookedTransformer.save`.
"""

from circuits.pretrained.gpt2 import GPT2_MODELS
from circuits.pretrained.hub import HubOptions, PretrainedError
from circuits.pretrained.loader import from_pretrained, from_pretrained_no_processing
from circuits.pretrained.tokenizer import load_tokenizer
from circuits.pretrained.zoo import known_names

__all__ = [
    "GPT2_MODELS",
    "HubOptions",
    "PretrainedError",
    "from_pretrained",
    "from_pretrained_no_processing",
    "known_names",
    "load_tokenizer",
]
