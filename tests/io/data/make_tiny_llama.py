#!/usr/bin/env python3
"""Writes tests/io/data/tiny_llama: a one-layer Llama-3-style attention checkpoint (config.json,
model.safetensors in bf16) of deterministic weights, small enough to keep in the repository, for
the load_checkpoint example's run under ctest. Pure Python: no torch, no numpy."""
import json
import math
import os
import struct

HIDDEN, HEADS, KV_HEADS, HEAD_DIM = 64, 4, 2, 16
here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny_llama")


def bf16(x):
    """x rounded to bfloat16 (nearest, ties to even), as its 2 little-endian bytes."""
    bits = struct.unpack("<I", struct.pack("<f", x))[0]
    bits += 0x7FFF + ((bits >> 16) & 1)
    return struct.pack("<H", (bits >> 16) & 0xFFFF)


def weight(rows, cols, seed):
    scale = 1.0 / math.sqrt(cols)
    return b"".join(bf16(scale * math.sin(seed + 0.37 * i + 0.011 * i * i))
                    for i in range(rows * cols))


tensors = [("q_proj", HEADS * HEAD_DIM, HIDDEN), ("k_proj", KV_HEADS * HEAD_DIM, HIDDEN),
           ("v_proj", KV_HEADS * HEAD_DIM, HIDDEN), ("o_proj", HIDDEN, HEADS * HEAD_DIM)]
header, data = {"__metadata__": {"format": "pt"}}, b""
for seed, (name, rows, cols) in enumerate(tensors):
    blob = weight(rows, cols, seed + 1)
    header["model.layers.0.self_attn.%s.weight" % name] = {
        "dtype": "BF16", "shape": [rows, cols], "data_offsets": [len(data), len(data) + len(blob)]}
    data += blob
text = json.dumps(header, separators=(",", ":")).encode()
text += b" " * (-len(text) % 8)
os.makedirs(here, exist_ok=True)
with open(os.path.join(here, "model.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(text)) + text + data)
config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": HIDDEN,
          "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS, "head_dim": HEAD_DIM,
          "num_hidden_layers": 1, "rope_theta": 500000.0, "max_position_embeddings": 131072,
          "attention_bias": False, "torch_dtype": "bfloat16",
          "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                           "original_max_position_embeddings": 8192, "rope_type": "llama3"}}
with open(os.path.join(here, "config.json"), "w") as f:
    json.dump(config, f, indent=2)
    f.write("\n")
