"""Push a PixelRefer checkpoint to the Hugging Face Hub: weights, config, processor and a generated model card.

The source is an original release folder (converted on the fly) or an already converted one. Everything that can fail
locally (token, folder, existing repo, conversion, resharding, model card) is checked or prepared before the repo is
created; the files then go up in one commit. A repo created by a push whose commit fails is deleted again.
"""

import json
import re
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from huggingface_hub import CommitInfo, CommitOperationAdd, HfApi, get_token
from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
from transformers.utils import logging
from transformers.utils.hub import convert_file_size_to_int

from ..modeling import PixelReferConfig, PixelReferForConditionalGeneration
from .convert_original import VARIANTS, convert_checkpoint
from .model_card import VARIANT_NAMES, build_model_card, variant_of


logger = logging.get_logger(__name__)

SourceKind = Literal["original", "converted"]
REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
# Files of a converted folder that are pushed; anything else (notes, logs, pickles) stays local.
PUSHED_SUFFIXES = (".json", ".safetensors", ".jinja", ".txt", ".model")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer_config.json")


@dataclass
class PushReport:
    """What a push did: where the checkpoint went, in which commit, and which files."""

    repo_id: str
    revision: str
    variant: str
    source_kind: SourceKind
    commit_url: str
    commit_oid: str
    files: list[str]
    created_repo: bool

    @property
    def num_shards(self) -> int:
        return sum(name.endswith(".safetensors") for name in self.files)


def inspect_source(src: str | Path) -> SourceKind:
    """Whether `src` is an original release folder or a converted one; raises naming what is missing otherwise."""
    src = Path(src)
    hint = "pass an original PixelRefer release folder or one converted with `pixelrefer convert`"
    if not src.is_dir():
        raise FileNotFoundError(f"{src} is not a folder; {hint}.")
    config_file = src / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{src} has no config.json; {hint}.")
    try:
        model_type = json.loads(config_file.read_text()).get("model_type")
    except (json.JSONDecodeError, AttributeError) as error:
        raise ValueError(f"{config_file} is not a JSON object ({error}); {hint}.") from error
    if model_type == PixelReferConfig.model_type:
        if not any(src.glob("*.safetensors")):
            raise FileNotFoundError(f"{src} is a converted PixelRefer folder without *.safetensors weights.")
        if not (src / "processor_config.json").is_file():
            raise FileNotFoundError(
                f"{src} has no processor_config.json: convert it again from an original folder that holds the "
                "release's tokenizer files, so that the pushed repo loads with AutoProcessor."
            )
        return "converted"
    if model_type in VARIANTS:
        if not any(src.glob("*.safetensors")) and not any(src.glob("*.bin")):
            raise FileNotFoundError(f"{src} is an original PixelRefer release folder without *.safetensors or *.bin.")
        if not any((src / name).is_file() for name in TOKENIZER_FILES):
            raise FileNotFoundError(
                f"{src} has no tokenizer files ({', '.join(TOKENIZER_FILES)}); put the release's Qwen2.5 tokenizer "
                "files into it, so that the pushed repo loads with AutoProcessor."
            )
        return "original"
    raise ValueError(
        f"{config_file} has model_type {model_type!r}: neither an original PixelRefer release "
        f"({', '.join(sorted(VARIANTS))}) nor a converted checkpoint ({PixelReferConfig.model_type!r}); {hint}."
    )


def _safetensors_needs_split(path: Path, max_bytes: int) -> bool:
    """Whether a safetensors file holds several tensors whose data exceed `max_bytes` (read from its header)."""
    with path.open("rb") as file:
        (header_size,) = struct.unpack("<Q", file.read(8))
        header = json.loads(file.read(header_size))
    num_tensors = len([key for key in header if key != "__metadata__"])
    return num_tensors > 1 and path.stat().st_size - 8 - header_size > max_bytes


def _files_to_push(folder: Path, resharded: Path | None) -> dict[str, Path]:
    """Path in the repo -> local file: the converted folder's files; the weights, config and generation config of
    `resharded` (a `save_pretrained` folder) instead of the folder's when given."""
    files = {}
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        if not path.is_file() or any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        if name == "README.md":
            logger.info("Replacing %s with the generated model card.", path)
        elif not name.endswith(PUSHED_SUFFIXES):
            logger.warning("Not pushing %s (not a checkpoint, config or processor file).", path)
        elif resharded is None or not (name.endswith(".safetensors") or name == "model.safetensors.index.json"):
            files[name] = path
    if resharded is not None:
        files.update({path.name: path for path in sorted(resharded.iterdir()) if path.is_file()})
    return files


def _prepare_files(
    src: Path, source_kind: SourceKind, tmp: Path, max_shard_size: int | str, progress: bool
) -> tuple[dict[str, Path], PixelReferConfig]:
    """The files to push (path in the repo -> local file) and the config: converts an original release into `tmp`,
    and re-saves weights in shards of at most `max_shard_size` when a weight file holds more."""
    folder = src
    if source_kind == "original":
        logger.info("Converting the original release %s before pushing it.", src)
        folder = convert_checkpoint(src, tmp / "converted", progress=progress).output_dir
    resharded = None
    max_bytes = convert_file_size_to_int(max_shard_size)
    if any(_safetensors_needs_split(path, max_bytes) for path in folder.glob("*.safetensors")):
        logger.info("Re-saving the weights of %s in shards of at most %s.", folder, max_shard_size)
        resharded = tmp / "resharded"
        model = PixelReferForConditionalGeneration.from_pretrained(folder, dtype="auto")
        model.save_pretrained(resharded, max_shard_size=max_shard_size)
    return _files_to_push(folder, resharded), PixelReferConfig.from_pretrained(folder)


def _check_push(
    src: str | Path,
    repo_id: str,
    base_model: str,
    token: str | None,
    exist_ok: bool,
    max_shard_size: int | str,
    results: str | Path | None,
) -> tuple[HfApi, SourceKind, bool]:
    """Checks everything that can fail before a push does anything (token, repo ids, shard size, source folder,
    results file, existing repo); returns the Hub client, the source's kind and whether the repo exists."""
    token = token or get_token()
    if not token:
        raise ValueError(
            "no Hugging Face token: pass --token (token=...), set HF_TOKEN or log in with `hf auth login`; pushing "
            "needs a token with write access."
        )
    for name, value in (("repo id", repo_id), ("base model", base_model)):
        if not isinstance(value, str) or not REPO_ID.match(value):
            raise ValueError(f"{name} {value!r} is not a Hub repo id of the form namespace/name.")
    convert_file_size_to_int(max_shard_size)  # fails on a malformed size before anything is done
    source_kind = inspect_source(src)
    if results is not None and not Path(results).is_file():
        raise FileNotFoundError(f"results file {results} does not exist; pass the benchmarks' RESULTS.md.")
    api = HfApi(token=token)
    repo_existed = api.repo_exists(repo_id)
    if repo_existed and not exist_ok:
        raise ValueError(
            f"{repo_id} already exists on {api.endpoint}; pass --exist-ok (exist_ok=True) to add a commit to it, or "
            "choose another repo id."
        )
    return api, source_kind, repo_existed


def _stage_upload(
    src: str | Path,
    source_kind: SourceKind,
    tmp: str | Path,
    repo_id: str,
    base_model: str,
    max_shard_size: int | str,
    results: str | Path | None,
    progress: bool,
) -> tuple[dict[str, Path], str]:
    """The files to push (path in the repo -> local file), prepared in `tmp` with the generated model card, and the
    checkpoint's variant."""
    files, config = _prepare_files(Path(src), source_kind, Path(tmp), max_shard_size, progress)
    card_file = Path(tmp) / "README.md"
    build_model_card(config, repo_id, base_model, results).save(card_file)
    files["README.md"] = card_file
    return files, variant_of(config)


def _commit_once(
    api: HfApi,
    repo_id: str,
    files: dict[str, Path],
    message: str,
    revision: str,
    private: bool | None,
    repo_existed: bool,
) -> CommitInfo:
    """Creates the repo (unless it exists) and the branch (unless it exists), then commits `files` (path in the repo
    -> local file); on failure, deletes the repo or branch it created."""
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=path) for name, path in files.items()]
    if not repo_existed:
        api.create_repo(repo_id, private=private)
    created_branch = False
    try:
        if revision != "main" and not api.revision_exists(repo_id, revision):
            api.create_branch(repo_id, branch=revision)
            created_branch = True
        return api.create_commit(repo_id, operations, commit_message=message, revision=revision)
    except Exception:
        if not repo_existed:
            logger.warning("The push to %s failed: deleting the repo it created.", repo_id)
            api.delete_repo(repo_id, missing_ok=True)
        elif created_branch:
            logger.warning("The push to %s failed: deleting the branch %s it created.", repo_id, revision)
            api.delete_branch(repo_id, branch=revision)
        raise


@contextmanager
def _progress_bars(enabled: bool) -> Iterator[None]:
    """Switches the progress bars of huggingface_hub and transformers off inside the block unless `enabled`."""
    if enabled:
        yield
        return
    hub_on, transformers_on = not are_progress_bars_disabled(), logging.is_progress_bar_enabled()
    disable_progress_bars()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if hub_on:
            enable_progress_bars()
        if transformers_on:
            logging.enable_progress_bar()


def push_checkpoint(
    src: str | Path,
    repo_id: str,
    *,
    base_model: str,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    exist_ok: bool = False,
    token: str | None = None,
    max_shard_size: int | str = "5GB",
    results: str | Path | None = None,
    progress: bool = True,
) -> PushReport:
    """Pushes a PixelRefer checkpoint to the Hub in one commit, with a generated model card.

    Args:
        src: an original release folder (converted into a temporary folder first) or a converted folder.
        repo_id: target model repo, `namespace/name`.
        base_model: Hub id of the original release the checkpoint comes from (model card metadata `base_model`).
        private: create the repo private (ignored when it exists).
        revision: branch to commit to (created from `main` when missing); defaults to `main`.
        commit_message: defaults to "Upload <variant> converted from <base_model>".
        exist_ok: commit to `repo_id` even if it exists; otherwise an existing repo is an error.
        token: Hub token; defaults to `HF_TOKEN` or the saved login.
        max_shard_size: weights are re-saved in shards of at most this size (`"5GB"`, `"500MB"` or bytes) when a
            weight file is larger.
        results: `benchmarks/RESULTS.md` for the model card's Lite/full figures; defaults to the source checkout's.
        progress: show progress bars (conversion, resharding, and huggingface_hub's upload bars).

    Raises:
        ValueError: no token, a malformed repo id or base model, an existing repo without `exist_ok`, a folder that is
            neither an original release nor a converted checkpoint.
        FileNotFoundError: `src` or files it needs are missing.
    """
    api, source_kind, repo_existed = _check_push(src, repo_id, base_model, token, exist_ok, max_shard_size, results)
    revision = revision or "main"
    with _progress_bars(progress), tempfile.TemporaryDirectory(prefix="pixelrefer-push-") as tmp:
        files, variant = _stage_upload(src, source_kind, tmp, repo_id, base_model, max_shard_size, results, progress)
        message = commit_message or f"Upload {VARIANT_NAMES[variant]} converted from {base_model}"
        commit = _commit_once(api, repo_id, files, message, revision, private, repo_existed)
    logger.info("Pushed %s (%d files) to %s@%s: %s", src, len(files), repo_id, revision, commit.commit_url)
    return PushReport(
        repo_id, revision, variant, source_kind, commit.commit_url, commit.oid, sorted(files), not repo_existed
    )


__all__ = ["PushReport", "inspect_source", "push_checkpoint"]
