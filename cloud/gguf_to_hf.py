"""Convert a GGUF model into a Hugging Face folder (safetensors + tokenizer) that vLLM can serve.

vLLM's CPU backend has no kernels for llama.cpp's K-quants, so the cloud GGUF is dequantized
once (transformers reads GGUF) and saved in bfloat16. Run it with the vLLM environment's
Python (it needs ``transformers`` and ``gguf``, which the main environment does not carry)::

    .venv-vllm/bin/python -m cloud.gguf_to_hf --gguf MODEL.gguf --out DIR

``make vllm-cpu`` does this for the default cloud model (``VLLM_MODEL`` in the Makefile). It lives in
``cloud/`` because it is the production cloud backend's set-up step, not a benchmark or a tool of the
project's own environment.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def convert(gguf: Path, out: Path, dtype: str = "bfloat16") -> Path:
    """Write ``out`` (config.json, model.safetensors, tokenizer files); a no-op when it is complete."""
    marker = out / "ecqa-converted.json"
    if marker.is_file() and json.loads(marker.read_text()).get("source_size") == gguf.stat().st_size:
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=getattr(torch, dtype))
    # transformers dequantizes the GGUF tensors on load but keeps a "GGUF quantizer" that refuses
    # to save: the weights are plain tensors of ``dtype`` by now, so drop the marker.
    model.hf_quantizer = None  # type: ignore[assignment]
    model.config.__dict__.pop("quantization_config", None)
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    marker.write_text(json.dumps({"source": str(gguf), "source_size": gguf.stat().st_size, "dtype": dtype}) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cloud.gguf_to_hf", description=__doc__.splitlines()[0])
    ap.add_argument("--gguf", type=Path, required=True, help="GGUF file")
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    args = ap.parse_args(argv)
    if not args.gguf.is_file():
        print(f"error: {args.gguf} does not exist — run `make env` first (it assembles the cloud model)", file=sys.stderr)
        return 2
    print(convert(args.gguf, args.out, args.dtype))
    return 0


if __name__ == "__main__":
    sys.exit(main())
