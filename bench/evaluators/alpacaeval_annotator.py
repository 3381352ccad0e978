"""alpaca_eval itself (imported quietly, with float preferences and an atomically written annotation cache) and the
effective annotator config the AlpacaEval evaluator runs (see :mod:`bench.evaluators.alpacaeval`)."""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import yaml

from bench.errors import BenchError
from bench.store.files import atomic_write_text

DEFAULT_ANNOTATOR = "weighted_alpaca_eval_gpt4_turbo"


def _alpaca_eval():
    root = logging.getLogger()
    level = root.level
    import alpaca_eval.constants as constants
    import alpaca_eval.main as main
    from alpaca_eval.annotators import PairwiseAnnotator

    root.setLevel(level)  # alpaca_eval sets the root logger to INFO on import
    return main, constants, PairwiseAnnotator


def _float_preferences(annotations):
    import pandas as pd

    df = pd.DataFrame(annotations) if not isinstance(annotations, pd.DataFrame) else annotations.copy()
    if "preference" in df:
        df["preference"] = pd.to_numeric(df["preference"], errors="coerce").astype(float)
    return df


def robust_winrate(annotations, **kwargs):
    """alpaca_eval's ``get_winrate`` on float preferences (missing -> NaN): with pandas>=3 an all-missing object
    column makes the original fail."""
    from alpaca_eval.metrics import get_winrate

    return get_winrate(_float_preferences(annotations), **kwargs)


def _annotator_class():
    _, _, PairwiseAnnotator = _alpaca_eval()

    class AtomicPairwiseAnnotator(PairwiseAnnotator):
        """alpaca_eval's PairwiseAnnotator whose annotation cache is written atomically (tmp file + rename) and read
        back with a float preference column (pandas>=3 refuses to put 1.5 into the int column read_json makes)."""

        def load_(self, path=None):
            super().load_(path)
            if self.df_annotations is not None and self.annotation_key in self.df_annotations:
                self.df_annotations = _float_preferences(self.df_annotations) if self.annotation_key == "preference" \
                    else self.df_annotations

        def save(self, path=None):
            path = path or self.caching_path
            if path is None:
                return
            self._refresh_annotations_()
            if not self.is_store_missing_annotations:
                self.df_annotations = self.df_annotations[~self.df_annotations[self.annotation_key].isna()]
            atomic_write_text(Path(path), self.df_annotations.to_json(orient="records", indent=2))

    return AtomicPairwiseAnnotator


# ----------------------------------------------------------------------------------------------------------------
# the annotator config
def _annotator_source(name: str) -> tuple[Path, Path, str]:
    """(configs.yaml, directory prompt templates are relative to, annotator name)."""
    _, constants, _ = _alpaca_eval()
    path = Path(name).expanduser()
    if path.exists():
        cfg_file = path / "configs.yaml" if path.is_dir() else path
        if not cfg_file.is_file():
            raise BenchError(f"alpaca_annotator={name}: no configs.yaml there")
        return cfg_file, cfg_file.parent.parent, cfg_file.parent.name
    cfg_file = Path(constants.EVALUATORS_CONFIG_DIR) / name / "configs.yaml"
    if not cfg_file.is_file():
        raise BenchError(f"unknown alpaca_annotator '{name}'; use a config name from alpaca_eval's evaluators_configs "
                         f"(e.g. {DEFAULT_ANNOTATOR}, weighted_alpaca_eval_gpt-4o-mini-2024-07-18) or a path to one")
    return cfg_file, Path(constants.EVALUATORS_CONFIG_DIR), name


def prepare_annotator(settings: dict, cache_dir: Path) -> dict:
    """Write the effective annotator config (and client config) under the cache; return what evaluate needs."""
    from bench.evaluators.judge import JudgeConfig
    from bench.textout import slug

    name = str(settings.get("alpaca_annotator") or DEFAULT_ANNOTATOR)
    cfg_file, rel_dir, ann_name = _annotator_source(name)
    configs = yaml.safe_load(cfg_file.read_text())
    if not isinstance(configs, dict) or not configs:
        raise BenchError(f"{cfg_file} is not an alpaca_eval annotator config (a mapping of annotator name -> config)")
    fn = settings.get("alpaca_fn_completions") or settings.get("fn_completions")
    override = settings.get("alpaca_judge_model") or settings.get("judge_model")
    first = next(iter(configs.values()))
    default_model = str((first.get("completions_kwargs") or {}).get("model_name", "gpt-4-1106-preview"))
    judge = JudgeConfig.from_settings(settings, default_model=default_model, model_key="alpaca_judge_model")
    client_cfg = {"default": [{"client_class": "bench.evaluators.judge.EnvKeyOpenAI", "base_url": judge.base_url,
                               "api_key_env": judge.api_key_env, "timeout": judge.timeout,
                               "max_retries": judge.max_retries}]}
    client_text = yaml.safe_dump(client_cfg, sort_keys=True)
    client_digest = hashlib.sha256(client_text.encode()).hexdigest()[:16]
    client_path = cache_dir / "alpacaeval" / "client_configs" / f"{client_digest}.yaml"
    if not client_path.exists():
        atomic_write_text(client_path, client_text)
    models = []
    for ann, cfg in configs.items():
        cfg = dict(cfg)
        tmpl = cfg.get("prompt_template")
        if isinstance(tmpl, str) and (rel_dir / tmpl).is_file():
            cfg["prompt_template"] = str((rel_dir / tmpl).resolve())
        ck = dict(cfg.get("completions_kwargs") or {})
        if override:
            ck["model_name"] = str(override)
            ck.setdefault("requires_chatml", True)  # served chat models: always the chat endpoint
        if callable(fn):
            cfg.pop("fn_completions", None)
        else:
            if isinstance(fn, str) and fn:
                cfg["fn_completions"] = fn
            if cfg.get("fn_completions", "openai_completions") == "openai_completions":
                ck["client_config_path"] = str(client_path)
                ck.setdefault("num_procs", judge.workers)
        cfg["completions_kwargs"] = ck
        configs[ann] = cfg
        models.append(str(ck.get("model_name", "")))
    text = yaml.safe_dump(configs, sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    eff = cache_dir / "alpacaeval" / "annotators" / digest / ann_name / "configs.yaml"
    if not eff.exists():
        atomic_write_text(eff, text)
    model_key = "+".join(sorted(set(models))) + (f"+fn:{getattr(fn, '__name__', 'custom')}" if callable(fn) else "")
    caching = cache_dir / "judgments" / "alpacaeval" / f"{slug(ann_name + '__' + model_key, 80)}.json"
    caching.parent.mkdir(parents=True, exist_ok=True)
    return {"config": eff, "name": ann_name, "caching_path": caching, "judge": judge, "models": sorted(set(models)),
            "fn": fn if callable(fn) else None}
