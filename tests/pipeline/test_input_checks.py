"""Input checks that must fail before any work: a teacher whose embedding matrix is padded beyond the student's
(same tokenizer, e.g. Qwen2.5-7B vs 0.5B) and an out-of-range top-k size. One `error:` line, exit 2."""
from __future__ import annotations

import pytest

from bench.errors import BenchError
from bench.modeling.models import check_embedding_sizes, embedding_size
from cli_kit import TINY, assert_one_line_error, bench_main

pytestmark = pytest.mark.usefixtures("single_thread_module")


@pytest.fixture(scope="module")
def padded_teacher(tiny_dirs, tmp_path_factory):
    """The tiny teacher with 64 extra (padding) embedding rows, saved with the shared tokenizer."""
    from bench.modeling.models import load_model, load_tokenizer

    out = tmp_path_factory.mktemp("padded") / "padded-teacher"
    tok = load_tokenizer("tiny-random")
    model = load_model("tiny-random")
    model.resize_token_embeddings(len(tok) + 64)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_embedding_sizes_are_read_from_the_config(padded_teacher, tiny_dirs):
    assert embedding_size("tiny-random-student") == 49152
    assert embedding_size(str(padded_teacher)) == 49152 + 64


def test_padded_teacher_is_refused_before_any_work(padded_teacher, tmp_path, monkeypatch, capsys):
    import bench.pipeline.graph as pipeline_mod

    built = []
    monkeypatch.setattr(pipeline_mod.Pipeline, "model_dir", lambda self, role: built.append(role))
    code, _, err = bench_main(monkeypatch, capsys, "run", "--method", "dckd", *TINY, "--teacher", str(padded_teacher),
                              "--runs", str(tmp_path / "runs"))
    assert_one_line_error(code, err, "49216 embedding rows", "49152", "resize_token_embeddings")
    assert built == [] and not (tmp_path / "runs").exists()


def test_equal_padding_and_a_short_embedding(padded_teacher, tiny_dirs):
    check_embedding_sizes(str(padded_teacher), str(padded_teacher), 49152)  # both padded alike: fine
    with pytest.raises(BenchError, match="49216 embedding rows but its tokenizer has 50000 tokens"):
        check_embedding_sizes(str(padded_teacher), str(padded_teacher), 50000)


@pytest.mark.parametrize("k,needle", [("0", "k=0 is invalid"), ("49153", "k=49153 is invalid"),
                                      ("2.5", "k=2.5 is invalid")])
def test_k_out_of_range_is_refused(k, needle, tiny_dirs, tmp_path, monkeypatch, capsys):
    code, _, err = bench_main(monkeypatch, capsys, "run", "--method", "dckd", *TINY, "--set", f"k={k}",
                              "--runs", str(tmp_path / "runs"))
    assert_one_line_error(code, err, needle, "between 1 and the vocabulary size 49152")
    assert not (tmp_path / "runs").exists()
