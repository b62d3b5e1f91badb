"""Pushing converted checkpoints to the Hub and loading them back by Hub id, against a Hub on 127.0.0.1 (offline)."""

import json
import re
import shutil
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers.utils.hub
import yaml
from golden import ByVariant, checkpoints
from hub_server import HubServer
from huggingface_hub import ModelCard, constants
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import get_session
from safetensors.torch import load as safe_load
from safetensors.torch import save_file
from transformers import AutoModelForImageTextToText, AutoProcessor

from pixelrefer_hf import PixelReferConfig, cli
from pixelrefer_hf.conversion import build_model_card, model_card, push_checkpoint


# The golden set's original checkpoint per variant; a test that asks for a variant the set lacks is skipped.
CHECKPOINTS = checkpoints()
BASE_MODELS = {"full": "Alibaba-DAMO-Academy/PixelRefer-2B", "lite": "Alibaba-DAMO-Academy/PixelRefer-Lite-2B"}
RESULTS = """# Lite vs. full

Device: CPU (test fixture).

| variant | LLM input tokens | prefill GFLOPs |
|---|---|---|
| full | 1234 | 56.7 |
| lite | 89 | 4.2 |
"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A Hub on 127.0.0.1 that huggingface_hub and transformers use, with an empty cache and a token in HF_TOKEN."""
    home = tmp_path_factory.mktemp("hf_home")
    with HubServer() as server, pytest.MonkeyPatch.context() as patch:
        settings = {
            "HF_ENDPOINT": server.url,
            "HF_TOKEN": server.token,
            "HF_HOME": str(home),
            "HF_HUB_CACHE": str(home / "hub"),
        }
        for name, value in settings.items():
            patch.setenv(name, value)
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_OIDC_RESOURCE", "HUGGING_FACE_HUB_TOKEN"):
            patch.delenv(name, raising=False)
        # huggingface_hub reads these at import, before this fixture runs.
        patch.setattr(constants, "ENDPOINT", server.url)
        patch.setattr(
            constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}"
        )
        patch.setattr(constants, "HF_HOME", str(home))
        patch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
        patch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
        patch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
        patch.setattr(constants, "HF_HUB_OFFLINE", False)
        patch.setattr(constants, "AGENT_HARNESSES_PATH", str(home / "agent_harnesses.json"), raising=False)
        patch.setattr(transformers.utils.hub, "_hf_api", None)  # transformers' shared HfApi keeps its endpoint
        yield server


@pytest.fixture(scope="module")
def pushed(hub, converted):
    """Both variants (those the golden set has) pushed once: full from the original release folder, Lite from a
    converted folder in 2 MB shards."""
    pushes = {
        "full": lambda: push_checkpoint(
            CHECKPOINTS["full"], "tester/pixelrefer-tiny-hf", base_model=BASE_MODELS["full"], progress=False
        ),
        "lite": lambda: push_checkpoint(
            converted(CHECKPOINTS["lite"]),
            "tester/pixelrefer-lite-tiny-hf",
            base_model=BASE_MODELS["lite"],
            max_shard_size="2MB",
            progress=False,
        ),
    }
    return ByVariant({variant: push() for variant, push in pushes.items() if variant in CHECKPOINTS})


def region_inputs(processor):
    image = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": image},
                {"type": "text", "text": "What is "},
                {"type": "region", "box": [30, 20, 110, 100]},
                {"type": "text", "text": "?"},
            ],
        }
    ]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)


def card_metadata(text: str) -> dict:
    return yaml.safe_load(re.match(r"^---\n(.*?)\n---\n", text, re.S).group(1))


@pytest.mark.parametrize("variant", ["full", "lite"])
def test_round_trip_by_hub_id(hub, pushed, converted, variant):
    """Model and processor downloaded by Hub id into the empty cache give the local folder's logits exactly."""
    report, local = pushed[variant], converted(CHECKPOINTS[variant])
    assert report.source_kind == ("original" if variant == "full" else "converted") and report.created_repo
    repo = hub.repos[report.repo_id]
    assert [commit.message for commit in repo.commits] == [
        "initial commit",
        f"Upload {'PixelRefer-Lite' if variant == 'lite' else 'PixelRefer'} converted from {BASE_MODELS[variant]}",
    ]
    files = hub.files(report.repo_id)
    assert set(report.files) == set(files) - {".gitattributes"}
    processor_files = ["processor_config.json", "chat_template.jinja", "tokenizer.json", "tokenizer_config.json"]
    assert {"README.md", "config.json", "generation_config.json", *processor_files} <= set(files)
    for name in processor_files:
        assert files[name] == (local / name).read_bytes(), name

    cache = Path(constants.HF_HUB_CACHE) / f"models--{report.repo_id.replace('/', '--')}"
    assert not cache.exists()
    hub.requests.clear()
    model = AutoModelForImageTextToText.from_pretrained(report.repo_id).eval()
    processor = AutoProcessor.from_pretrained(report.repo_id)
    assert (cache / "snapshots" / repo.branches["main"] / "config.json").is_file()
    downloads = {path for method, path in hub.requests if method == "GET" and "/resolve/" in path}
    weights = {path.rsplit("/", 1)[1] for path in downloads if path.endswith(".safetensors")}
    assert weights == {name for name in files if name.endswith(".safetensors")}
    assert any(path.endswith("/chat_template.jinja") for path in downloads)
    assert model.config.object_only == (variant == "lite")

    inputs = region_inputs(processor)
    local_model = AutoModelForImageTextToText.from_pretrained(local).eval()
    with torch.inference_mode():
        assert torch.equal(model(**inputs).logits, local_model(**inputs).logits)


def test_sharded_push(hub, pushed):
    files = hub.files(pushed["lite"].repo_id)
    shards = sorted(name for name in files if name.endswith(".safetensors"))
    assert len(shards) >= 2 and "model.safetensors" not in files and "model.safetensors.index.json" in files
    index = json.loads(files["model.safetensors.index.json"])
    assert set(index["weight_map"].values()) == set(shards) and pushed["lite"].num_shards == len(shards)
    assert all(len(files[shard]) <= 2 * 10**6 or len(safe_load(files[shard])) == 1 for shard in shards)
    assert "model.safetensors" in hub.files(pushed["full"].repo_id)


@pytest.mark.parametrize("variant", ["full", "lite"])
def test_model_card(hub, pushed, converted, variant):
    report = pushed[variant]
    text = hub.files(report.repo_id)["README.md"].decode()
    metadata = card_metadata(text)
    assert metadata["library_name"] == "transformers" and metadata["pipeline_tag"] == "image-text-to-text"
    assert metadata["license"] == "apache-2.0" and metadata["base_model"] == BASE_MODELS[variant]
    assert set(metadata["tags"]) == {"region-understanding", "video", "pixelrefer", variant}
    mask_num = PixelReferConfig.from_pretrained(converted(CHECKPOINTS[variant])).mask_num
    tokens, image_tokens = (str(mask_num), "no") if variant == "lite" else (f"up to {mask_num}", "yes")
    assert f"| object tokens per region | {tokens} |" in text
    assert f"| image tokens reach the LLM | {image_tokens} |" in text
    assert f'from_pretrained("{report.repo_id}"' in text and '{"type": "region", "box": [' in text
    assert '{"type": "video", "video": video}' in text and '"frame": 0' in text and "propagate_in_clip" in text
    assert "eprint        = {2510.23603}" in text and "Yuqian Yuan and Wenqiao Zhang and Xin Li" in text
    ModelCard(text).validate()  # against the test Hub's /api/validate-yaml


def test_invalid_card_fails_validation(hub):
    with pytest.raises(ValueError, match="base_model"):
        ModelCard("---\nlicense: apache-2.0\nbase_model: [not a repo id]\n---\n# x\n").validate()
    response = get_session().post(f"{hub.url}/api/validate-yaml", json={"content": "---\nlicense: [apache\n---\n"})
    assert response.status_code == 400 and "invalid YAML" in response.json()["errors"][0]["message"]


@pytest.mark.parametrize("section", ["Images", "Videos"])
def test_card_snippets_run_against_the_hub(hub, pushed, capsys, section):
    repo_id = pushed["full"].repo_id
    text = hub.files(repo_id)["README.md"].decode()
    snippet = re.search(rf"### {section}\n\n```python\n(.*?)```", text, re.S).group(1)
    # The video snippet's placeholder file becomes the clip shipped with the package (1280x720).
    snippet = snippet.replace('"video.mp4"', repr(str(files("pixelrefer_hf") / "assets" / "dog_and_laptop.mp4")))
    namespace = {}
    exec(compile(snippet, "model card snippet", "exec"), namespace)
    assert namespace["model"].name_or_path == repo_id
    assert namespace["output"].shape[1] > namespace["inputs"]["input_ids"].shape[1]
    assert capsys.readouterr().out.endswith("\n")


def test_card_results_verbatim_or_pending(tmp_path, monkeypatch):
    config = PixelReferConfig(object_only=True, mask_num=8)
    results = tmp_path / "RESULTS.md"
    results.write_text(RESULTS)
    text = str(build_model_card(config, "me/lite", "org/orig", results))
    assert "### Lite vs. full" in text and "| lite | 89 | 4.2 |" in text and "Device: CPU (test fixture)." in text
    monkeypatch.setattr(model_card, "DEFAULT_RESULTS", tmp_path / "absent.md")
    text = str(build_model_card(config, "me/lite", "org/orig"))
    assert "Figures pending" in text and "| object tokens per region | 8 |" in text
    with pytest.raises(FileNotFoundError, match="absent.md"):
        build_model_card(config, "me/lite", "org/orig", tmp_path / "absent.md")


def unmappable_weight(tmp_path):
    """An original release folder with a weight the converter cannot map: the push fails while preparing files."""
    folder = tmp_path / "broken"
    shutil.copytree(CHECKPOINTS["full"], folder)
    save_file({"model.unknown_head.weight": torch.zeros(2)}, folder / "extra.safetensors")
    return folder, {}


def other_model(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    return tmp_path, {}


BAD_INPUTS = {
    "unmappable weight": (unmappable_weight, ValueError, r"model\.unknown_head\.weight"),
    "other model": (other_model, ValueError, "model_type .llama.: neither an original PixelRefer release"),
    "no config": (lambda tmp_path: (tmp_path, {}), FileNotFoundError, "no config.json"),
    "missing results": (
        lambda tmp_path: (CHECKPOINTS["full"], {"results": tmp_path / "absent.md"}),
        FileNotFoundError,
        "absent.md",
    ),
    "bad base model": (
        lambda tmp_path: (CHECKPOINTS["full"], {"base_model": "PixelRefer-2B"}),
        ValueError,
        "namespace/name",
    ),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_pushes_nothing(hub, tmp_path, case):
    make, error, message = BAD_INPUTS[case]
    src, kwargs = make(tmp_path)
    hub.requests.clear()
    with pytest.raises(error, match=message):
        push_checkpoint(src, "tester/never-created", **{"base_model": BASE_MODELS["full"], **kwargs}, progress=False)
    assert "tester/never-created" not in hub.repos
    assert not any(method in ("POST", "DELETE") for method, _ in hub.requests)


def test_no_token_or_existing_repo_pushes_nothing(hub, pushed, monkeypatch):
    existing = hub.repos[pushed["full"].repo_id]
    with pytest.raises(ValueError, match="already exists.*exist_ok"):
        push_checkpoint(CHECKPOINTS["full"], existing.repo_id, base_model=BASE_MODELS["full"], progress=False)
    assert len(existing.commits) == 2
    monkeypatch.delenv("HF_TOKEN")
    hub.requests.clear()
    with pytest.raises(ValueError, match="no Hugging Face token"):
        push_checkpoint(CHECKPOINTS["full"], "tester/never-created", base_model=BASE_MODELS["full"], progress=False)
    assert hub.requests == []


def test_failed_commit_deletes_the_created_repo(hub, monkeypatch):
    """A repo that a push created is deleted again when its commit fails."""
    monkeypatch.setattr(hub, "fail_commits", True)
    with pytest.raises(HfHubHTTPError):
        push_checkpoint(CHECKPOINTS["lite"], "tester/failed-commit", base_model=BASE_MODELS["lite"], progress=False)
    assert "tester/failed-commit" not in hub.repos


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_push_to_a_branch(hub, capsys):
    repo_id = "tester/cli-lite"
    push = ["push", str(CHECKPOINTS["lite"]), repo_id, "--base-model", BASE_MODELS["lite"], "--no-progress"]
    code, out, err = run(
        capsys, *push, "--private", "--revision", "dev", "--commit-message", "first", "--max-shard-size", "5GB"
    )
    assert code == 0, err
    assert f"-> {repo_id}@dev" in out and "variant: lite (PixelRefer-Lite)" in out and "repo: created" in out
    assert "it/s" not in err  # no progress bars
    repo = hub.repos[repo_id]
    assert repo.private and set(hub.files(repo_id)) == {".gitattributes"}
    assert repo.commit("dev").message == "first" and "model.safetensors" in hub.files(repo_id, "dev")

    code, out, err = run(capsys, *push, "--revision", "dev")
    assert code == 2 and err.startswith("error:") and "already exists" in err and "--exist-ok" in err
    code, out, err = run(capsys, *push, "--revision", "dev", "--commit-message", "second", "--exist-ok")
    assert code == 0, err
    assert "repo: existing" in out and repo.commit("dev").message == "second" and len(repo.commits) == 3


def test_cli_describe_with_a_hub_id(hub, pushed, capsys):
    argv = ["--model", pushed["lite"].repo_id, "--box", "30,20,110,100", "--max-new-tokens", "2", "What is <region>?"]
    code, out, err = run(capsys, "describe", *argv)
    assert code == 0, err
    assert out.startswith("Answer:")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--token", "hf_wrong"], "Invalid credentials"),
        (["--max-shard-size", "huge"], "valid format"),
    ],
)
def test_cli_push_errors(hub, capsys, argv, message):
    code, out, err = run(
        capsys,
        "push",
        str(CHECKPOINTS["full"]),
        "tester/cli-error",
        "--base-model",
        BASE_MODELS["full"],
        "--no-progress",
        *argv,
    )
    assert code == 2 and err.startswith("error:") and message in err and out == ""
    assert "tester/cli-error" not in hub.repos


def test_cli_push_without_token_or_folder(hub, capsys, monkeypatch, tmp_path):
    code, _, err = run(capsys, "push", str(tmp_path), "tester/cli-error", "--base-model", BASE_MODELS["full"])
    assert code == 2 and err.startswith("error:") and "config.json" in err
    monkeypatch.delenv("HF_TOKEN")
    code, _, err = run(capsys, "push", str(CHECKPOINTS["full"]), "tester/cli-error", "--base-model", "org/original")
    assert code == 2 and err.startswith("error:") and "token" in err
    code, _, err = run(capsys, "push", str(CHECKPOINTS["full"]), "tester/cli-error")
    assert code == 2 and "--base-model" in err
    assert "tester/cli-error" not in hub.repos


def test_cli_push_help_documents_every_option(capsys):
    code, out, _ = run(capsys, "push", "--help")
    assert code == 0
    for option in (
        "SRC",
        "REPO_ID",
        "--private",
        "--revision",
        "--commit-message",
        "--exist-ok",
        "--token",
        "--max-shard-size",
        "--base-model",
        "--results",
        "--no-progress",
    ):
        assert option.lower() in out.lower(), option
