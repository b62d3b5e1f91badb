"""`pixelrefer train` on the fixtures in the original release's format: the loss falls for both variants, the result
reloads with the Auto classes, bad data is reported or skipped, LoRA, and a 2-process DDP run (torchrun, gloo) logs
the losses of the single-process run with the same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from pixelrefer_hf.cli import main


FIXTURES = Path(__file__).parent / "fixtures" / "training"
MEDIA_ROOT = Path(__file__).parents[1] / "src" / "pixelrefer_hf" / "assets"
# A small pixel budget and few frames, so that a step takes about a second on two CPU cores.
SMALL = ["--max_pixels", "25088", "--max_frames", "2", "--use_cpu", "--report_to", "none", "--seed", "0"]


def train_options(output: Path, *extra: str, data=("image_samples.json", "video_samples.jsonl")) -> list[str]:
    options = ["train", "--media_root", str(MEDIA_ROOT), "--output", str(output), *SMALL, *extra]
    for name in data:
        options += ["--data", str(FIXTURES / name)]
    return options


def logged_losses(output: Path) -> list[float]:
    history = json.loads((output / "trainer_state.json").read_text())["log_history"]
    return [entry["loss"] for entry in history if "loss" in entry]


@pytest.fixture(scope="module", params=["tiny-random", "tiny-random-lite"])
def finetuned(request, tmp_path_factory):
    output = tmp_path_factory.mktemp("finetuned")
    # Every part at 1e-2 (stage2's 1e-5 x 1000): random weights need large steps to show learning in 16 steps.
    options = ["--model", request.param, "--recipe", "stage2", "--lr_scale", "1000", "--max_steps", "16"]
    options += ["--per_device_train_batch_size", "2", "--logging_steps", "1", "--save_strategy", "no"]
    assert main(train_options(output, *options)) == 0
    return request.param, output


def test_finetuning_on_the_original_format_lowers_the_loss(finetuned):
    _, output = finetuned
    losses = logged_losses(output)
    assert len(losses) == 16
    assert np.mean(losses[-4:]) < np.mean(losses[:4]) - 1.0, losses


def test_finetuned_model_reloads_with_the_auto_classes(finetuned):
    name, output = finetuned
    model = AutoModelForImageTextToText.from_pretrained(output).eval()
    processor = AutoProcessor.from_pretrained(output)
    assert model.config.object_only == (name == "tiny-random-lite")
    assert processor.image_processor.size["longest_edge"] == 25088 and processor.video_max_frames == 2
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image", "path": str(MEDIA_ROOT / "brooklyn_bridge.jpg")},
                {"type": "text", "text": "What is "},
                {"type": "region", "box": [100, 50, 300, 250]},
            ],
        }
    ]
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 4


def test_check_data_reports_every_bad_sample(tmp_path, capsys):
    bad = json.loads((FIXTURES / "bad_samples.json").read_text())
    assert main(train_options(tmp_path, "--check_data", data=["image_samples.json", "bad_samples.json"])) == 2
    out, err = capsys.readouterr()
    reported = [line for line in out.splitlines() if line.startswith("bad sample: ")]
    assert len(reported) == len(bad)
    assert all("bad_samples.json" in line for line in reported)
    assert err.strip().splitlines()[
        -1
    ] == f"error: {len(bad)} bad samples in {FIXTURES / 'image_samples.json'}, " + str(FIXTURES / "bad_samples.json")
    assert main(train_options(tmp_path, "--check_data")) == 0
    assert "are valid" in capsys.readouterr().out


def test_bad_data_stops_training_with_one_error_line(tmp_path, capsys):
    options = train_options(
        tmp_path, "--max_steps", "2", "--per_device_train_batch_size", "4", data=["bad_samples.json"]
    )
    assert main(options) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "bad_samples.json, sample" in errors[0] and "Traceback" not in err


def test_skip_bad_samples_counts_them(tmp_path, caplog):
    options = ["--skip_bad_samples", "--max_steps", "3", "--per_device_train_batch_size", "8", "--save_strategy", "no"]
    assert main(train_options(tmp_path, *options, data=["image_samples.json", "bad_samples.json"])) == 0
    bad = json.loads((FIXTURES / "bad_samples.json").read_text())
    assert f"Skipping {len(bad)} bad samples of {len(bad) + 8}" in caplog.text


def test_usage_errors_are_one_line(tmp_path, capsys):
    assert main(["train", "--media_root", str(MEDIA_ROOT), "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--data" in err and err.count("\n") == 1
    assert main(train_options(tmp_path, "--recipe", "stage3")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "stage3" in err and err.count("\n") == 1


def test_lora_recipe_saves_an_adapter_and_a_merged_model(tmp_path):
    options = ["--recipe", "lora", "--lora_rank", "4", "--max_steps", "2", "--save_strategy", "no"]
    assert main(train_options(tmp_path, *options, data=["image_samples.json"])) == 0
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    merged = AutoModelForImageTextToText.from_pretrained(tmp_path)
    assert not any("lora_" in name for name, _ in merged.named_parameters())


def test_two_process_ddp_logs_the_single_process_losses(tmp_path):
    """torchrun --nproc_per_node 2 (gloo) with 1 sample per process vs 1 process with 2: same global batches, same
    losses at every step (atol 1e-4: the gradient all-reduce sums in another order)."""
    common = ["--recipe", "stage1", "--lr_scale", "100", "--max_steps", "3", "--logging_steps", "1"]
    common += ["--save_strategy", "no", "--model", "tiny-random"]
    assert main(train_options(tmp_path / "single", *common, "--per_device_train_batch_size", "2")) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533"]
    command += [
        "-m",
        "pixelrefer_hf.cli",
        *train_options(tmp_path / "ddp", *common, "--per_device_train_batch_size", "1"),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    single, ddp = logged_losses(tmp_path / "single"), logged_losses(tmp_path / "ddp")
    assert len(single) == len(ddp) == 3
    np.testing.assert_allclose(ddp, single, rtol=0, atol=1e-4)
