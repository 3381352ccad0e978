"""AlpacaEval instruction sets (the standard 805, the run's own test prompts, or a local file) and the outputs a run
gives for them (see :mod:`bench.evaluators.alpacaeval`)."""
from __future__ import annotations

import json
from pathlib import Path

from bench.errors import BenchError
from bench.store.rundir import RunDir


# ----------------------------------------------------------------------------------------------------------------
# instructions and outputs
def instruction_text(messages) -> str:
    """An AlpacaEval instruction for a chat prompt: the user text of a single-turn prompt, else a role-tagged
    transcript."""
    if isinstance(messages, str):
        return messages
    if len(messages) == 1 and messages[0].get("role") == "user":
        return messages[0]["content"]
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)


def load_alpaca_eval_instructions() -> list[dict]:
    from bench.modeling.hub import offline_by_env

    try:
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(repo_id="tatsu-lab/alpaca_eval", filename="alpaca_eval.json", repo_type="dataset",
                               local_files_only=offline_by_env())
    except Exception as e:  # noqa: BLE001 - any hub failure means the same here
        raise BenchError(f"the AlpacaEval instructions (tatsu-lab/alpaca_eval, alpaca_eval.json) could not be loaded "
                         f"({type(e).__name__}; offline?); pass alpaca_instructions=PATH to a local copy, or "
                         "alpaca_instructions=embedded") from None
    return _read_instruction_file(Path(path))


def _read_instruction_file(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".jsonl":
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            rows = json.loads(text)
    except json.JSONDecodeError as e:
        raise BenchError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}); give a JSON list of "
                         '{"instruction": ...} rows') from None
    if isinstance(rows, dict):
        rows = rows.get("instructions") or rows.get("data") or []
    out = []
    for i, row in enumerate(rows):
        if isinstance(row, str):
            row = {"instruction": row}
        if not isinstance(row, dict) or not isinstance(row.get("instruction"), str) or not row["instruction"].strip():
            raise BenchError(f"{path} row {i + 1}: needs a non-empty string 'instruction'")
        out.append({"instruction": row["instruction"], "dataset": row.get("dataset", path.stem)})
    if not out:
        raise BenchError(f"{path} has no instructions")
    return out


def resolve_instruction_set(run: RunDir, settings: dict) -> tuple[str, list[dict] | None]:
    """(set name, instructions or None for ``embedded``)."""
    choice = str(settings.get("alpaca_instructions") or "auto")
    if choice == "auto":
        choice = "embedded" if str(run.manifest.get("dataset", "")).lower() == "embedded" else "alpaca_eval"
    if choice == "embedded":
        return "embedded", None
    if choice == "alpaca_eval":
        return "alpaca_eval", load_alpaca_eval_instructions()
    path = Path(choice).expanduser()
    if not path.is_file():
        raise BenchError(f"alpaca_instructions={choice!r} is neither auto, alpaca_eval, embedded nor an existing "
                         "JSON/JSONL file")
    return str(path), _read_instruction_file(path)


def _embedded_outputs(run: RunDir) -> dict[str, tuple[str, str]]:
    """{row id: (instruction, response)} from generations.jsonl."""
    out = {}
    for i, row in enumerate(run.generations()):
        if "id" not in row or "prompt" not in row or not isinstance(row.get("response"), str):
            raise BenchError(f"{run.path}/generations.jsonl row {i + 1} lacks id/prompt/response; rerun `bench run`")
        out[str(row["id"])] = (instruction_text(row["prompt"]), row["response"])
    return out


def _generated_outputs(run: RunDir, instructions: list[dict], settings: dict) -> list[str]:
    from bench.evaluators.mtbench import generate_answers

    questions = [{"question_id": i, "turns": [row["instruction"]]} for i, row in enumerate(instructions)]
    answers = generate_answers(run, questions, 1, settings, "alpaca_answers.jsonl", default_max_new_tokens=1024,
                               max_tokens_key="alpaca_max_new_tokens")
    return [answers[i]["choices"][0]["turns"][0] for i in range(len(instructions))]
