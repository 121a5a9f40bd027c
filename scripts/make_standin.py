"""Writes data/standin_hub: offline stand-ins for the TransformerLens toy-model zoo.

A Hugging Face cache directory holding toy-sized models in the zoo's exact layout (see
circuits/pretrained/standin.py): attn-only-2l trained on repeated random tokens (so notebook 6
has an induction circuit to find), and its tokenizer. Deterministic on the CPU.

    .venv/bin/python scripts/make_standin.py
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch

from circuits.pretrained import standin

OUT = Path(__file__).resolve().parent.parent / "data" / "standin_hub"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    tmp = args.out.with_name(args.out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    standin.build(tmp, ("attn-only-2l",), seed=0, trained=True)
    shutil.rmtree(args.out, ignore_errors=True)
    tmp.rename(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
