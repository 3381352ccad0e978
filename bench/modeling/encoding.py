"""Turn canonical rows into token ids: chat template on the prompt, explicit truncation, counts reported.

Prompts are cut from the left (the generation prompt at the end survives), responses from the right. A
response ends with the tokenizer's EOS (the end-of-turn token for chat templates such as ChatML).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from bench.errors import BenchError


@dataclass
class TruncationStats:
    prompts: int = 0
    prompts_truncated: int = 0
    responses: int = 0
    responses_truncated: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class Encoder:
    tokenizer: object
    max_prompt_len: int
    max_response_len: int
    on_long_prompt: str = "truncate"  # or "error"
    # None: the chat template's own default (SmolLM2's inserts a 20-token system turn when a prompt has none);
    # a string: that system turn on every prompt without one ("" gives an empty one)
    system_prompt: str | None = None
    stats: TruncationStats = field(default_factory=TruncationStats)

    def __post_init__(self):
        if self.max_prompt_len < 8 or self.max_response_len < 2:
            raise BenchError("max_prompt_len must be >= 8 and max_response_len >= 2 (see --set max_prompt_len=...)")
        if self.system_prompt is not None and not isinstance(self.system_prompt, str):
            raise BenchError(f"system_prompt={self.system_prompt!r} must be text (\"\" for an empty system turn) or "
                             "null for the chat template's default (--set system_prompt=...)")
        if self.tokenizer.chat_template is None:
            raise BenchError("the tokenizer has no chat template; use a preset with `chat_template:` set or a "
                             "model that ships one")
        self._prompt_cache: dict[str, list[int]] = {}

    def prompt_ids(self, messages: list[dict], row_id: str = "?") -> list[int]:
        key = repr(messages)
        if key in self._prompt_cache:
            return self._prompt_cache[key]
        if self.system_prompt is not None and (not messages or messages[0].get("role") != "system"):
            messages = [{"role": "system", "content": self.system_prompt}, *messages]
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        ids = list(ids)
        self.stats.prompts += 1
        if len(ids) > self.max_prompt_len:
            if self.on_long_prompt == "error":
                raise BenchError(f"row {row_id}: prompt has {len(ids)} tokens > max_prompt_len={self.max_prompt_len};"
                                 " raise it with --set max_prompt_len=N or allow left truncation")
            self.stats.prompts_truncated += 1
            ids = ids[-self.max_prompt_len:]
        self._prompt_cache[key] = ids
        return ids

    def response_ids(self, text: str, row_id: str = "?") -> list[int]:
        if not isinstance(text, str) or not text.strip():
            raise BenchError(f"row {row_id}: empty response; remove the row or give it a non-empty response")
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) + [self.tokenizer.eos_token_id]
        self.stats.responses += 1
        if len(ids) > self.max_response_len:
            self.stats.responses_truncated += 1
            ids = ids[: self.max_response_len]
        return ids

    def text_response_ids(self, text: str) -> list[int]:
        """A response that comes as text from a model (a sample, another tokenizer's generation): its ids, or the
        EOS alone when the model said nothing."""
        return self.response_ids(text) if text.strip() else [self.tokenizer.eos_token_id]

    def cap_response(self, ids: list[int]) -> list[int]:
        """Generated ids (already token ids): cap to the response budget, keep at least one token."""
        ids = list(ids)[: self.max_response_len]
        return ids or [self.tokenizer.eos_token_id]

    def fingerprint(self) -> dict:
        if not hasattr(self, "_vocab_hash"):
            vocab = sorted(self.tokenizer.get_vocab().items())
            self._vocab_hash = hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()[:16]
        out = {"max_prompt_len": self.max_prompt_len, "max_response_len": self.max_response_len,
               "eos": self.tokenizer.eos_token_id, "template": self.tokenizer.chat_template,
               "vocab": self._vocab_hash}
        if self.system_prompt is not None:  # absent by default: identities of earlier runs stay valid
            out["system_prompt"] = self.system_prompt
        return out
