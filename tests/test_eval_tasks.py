"""lmms-eval end to end on `tests/fixtures/eval` (a few documents per benchmark in its published format, the last
one malformed): every task through `python -m lmms_eval` with its metrics and `invalid_docs`, judge metrics from a
fake OpenAI-compatible server on 127.0.0.1; and, for both variants, batch size 4 giving the same predictions as
batch size 1 on every task's documents (in-process, through lmms-eval's own task objects)."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from fake_judge import FakeJudge

from pixelrefer_hf.eval_tasks.documents import INVALID_PREDICTION, set_object_only
from pixelrefer_hf.eval_tasks.lmms_eval_plugin import TASKS_DIR
from pixelrefer_hf.tiny_random import build_tiny_random


FIXTURES = Path(__file__).parent / "fixtures" / "eval"
CAPTION_METRICS = ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"]
# Every task and the metrics its results must report (besides `invalid_docs`).
TASK_METRICS = {
    "videorefer_bench_q": ["accuracy"],
    "lvis_region": ["semantic_iou", "semantic_similarity"],
    "paco_region": ["semantic_iou", "semantic_similarity"],
    "vg_region": CAPTION_METRICS,
    "refl4_region": CAPTION_METRICS,
    "hc_stvg_region": CAPTION_METRICS,
    "dlc_bench": ["positive", "negative", "average"],
    "ferret_reasoning_region": ["relative_score", "judge_failures"],
    "videorefer_bench_d": [
        "subject_correspondence",
        "appearance_description",
        "temporal_description",
        "hallucination_detection",
        "overall",
    ],
    "refl4_region_detail": ["clair"],
}


def checkpoint(tmp_path_factory, variant: str) -> Path:
    model, processor = build_tiny_random(object_only=variant == "lite")
    folder = tmp_path_factory.mktemp(f"tiny_{variant}")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def judge():
    with FakeJudge() as server:
        yield server


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, judge):
    """One `python -m lmms_eval` run of every task with the tiny full model, batch size 4."""
    model = checkpoint(tmp_path_factory, "full")
    env = {
        **os.environ,
        "PIXELREFER_EVAL_DATA": str(FIXTURES),
        "PIXELREFER_JUDGE_BASE_URL": judge.url,
        "PIXELREFER_JUDGE_MODEL": "fake-judge",
        "PIXELREFER_JUDGE_API_KEY": "test",
        "HF_HUB_OFFLINE": "1",
    }
    output = model / "results"
    command = [sys.executable, "-m", "lmms_eval", "--model", "pixelrefer", "--batch_size", "4"]
    command += ["--model_args", f"pretrained={model},max_new_tokens=8", "--tasks", ",".join(TASK_METRICS)]
    command += ["--include_path", str(TASKS_DIR), "--limit", "5", "--log_samples", "--output_path", str(output)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    (results_file,) = output.rglob("*_results.json")
    return json.loads(results_file.read_text())["results"], result.stderr


@pytest.mark.parametrize("task", list(TASK_METRICS))
def test_task_reports_its_metrics_and_invalid_docs(evaluated, task):
    results, log = evaluated
    assert task in results, f"{task} did not run: {log[-2000:]}"
    for metric in TASK_METRICS[task]:
        assert f"{metric},none" in results[task], sorted(results[task])
    # Each fixture's last document is malformed: it is counted, logged with its id, and not scored.
    assert results[task]["invalid_docs,none"] == 1
    assert f"{task}: invalid document" in log


@pytest.fixture(scope="module", params=["full", "lite"])
def predictions(request, tmp_path_factory, monkeypatch_module):
    """Every task's predictions on its fixture documents with batch size 4 and 1, for one variant."""
    from lmms_eval.tasks import TaskManager, get_task_dict

    from pixelrefer_hf.eval_tasks.model import PixelRefer

    monkeypatch_module.setenv("PIXELREFER_EVAL_DATA", str(FIXTURES))
    evaluator = PixelRefer(pretrained=str(checkpoint(tmp_path_factory, request.param)), max_new_tokens=6)
    tasks = get_task_dict(list(TASK_METRICS), TaskManager(include_path=str(TASKS_DIR), include_defaults=False))
    evaluator.task_dict = {name: {"test": task.test_docs()} for name, task in tasks.items()}
    requests = [
        SimpleNamespace(args=(task.doc_to_text(doc), {"max_new_tokens": 6}, task.doc_to_visual, i, name, "test"))
        for name, task in tasks.items()
        for i, doc in enumerate(evaluator.task_dict[name]["test"])
    ]
    answers = {}
    for size in (4, 1):
        evaluator.batch_size_per_gpu = size
        answers[size] = evaluator.generate_until(requests)
    yield request.param, answers, [request.args[4] for request in requests]
    set_object_only(False)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_batch_of_four_equals_batch_of_one(predictions):
    _, answers, task_names = predictions
    assert answers[4] == answers[1]
    for task in TASK_METRICS:
        task_answers = [answer for answer, name in zip(answers[4], task_names) if name == task]
        assert task_answers.count(INVALID_PREDICTION) == 1 and len(task_answers) >= 4, (task, task_answers)


def test_every_task_is_listed():
    result = subprocess.run(
        [sys.executable, "-m", "lmms_eval", "--tasks", "list", "--include_path", str(TASKS_DIR)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for task in TASK_METRICS:
        assert task in result.stdout + result.stderr
