"""What the trainer tests share: a tiny random Llama and random token pairs for it."""
from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from bench.train.trainer import TrainData


V, PAD = 64, 0


def tiny_model(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=True, pad_token_id=PAD)
    return LlamaForCausalLM(cfg)


def make_data(n: int = 8, prompt_len: int = 5, resp_len: int = 4, seed: int = 0, equal: bool = True) -> TrainData:
    g = torch.Generator().manual_seed(seed)
    pairs = []
    for i in range(n):
        p = prompt_len if equal else prompt_len + i % 3
        r = resp_len if equal else 1 + (i * 2) % (resp_len + 2)
        pairs.append((torch.randint(1, V, (p,), generator=g).tolist(), torch.randint(1, V, (r,), generator=g).tolist()))
    return TrainData(n=n, sides={"chosen": pairs})
