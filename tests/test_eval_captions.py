"""The category (LVIS, PACO) and caption (VG, Ref-L4, HC-STVG) tasks: their metrics on hand-made predictions, and
their documents read from the fixtures (`tests/fixtures/eval/make_captions.py`)."""

import math
import shutil
from pathlib import Path

import pytest
from eval_helpers import task_functions, task_utils

from pixelrefer_hf.eval_tasks import captioning, similarity
from pixelrefer_hf.eval_tasks.documents import INVALID_PREDICTION, InvalidDocument, set_object_only
from pixelrefer_hf.eval_tasks.model import query_messages
from pixelrefer_hf.processing.regions import region_to_mask


FIXTURES = Path(__file__).parent / "fixtures" / "eval"
needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="the caption metrics need Java")


@pytest.fixture
def data(monkeypatch):
    monkeypatch.setenv("PIXELREFER_EVAL_DATA", str(FIXTURES))
    yield FIXTURES
    set_object_only(False)


def documents(task: str, lite: bool = False) -> tuple:
    """The functions lmms-eval calls for `task` (from its YAML) and its documents."""
    set_object_only(lite)
    functions = task_functions(task)
    return functions, list(functions.process_docs(None))


def test_process_and_semantic_iou():
    assert similarity.process(" Car_(Automobile). ") == "car  automobile"
    assert similarity.process("stool:seat,") == "stool seat"
    assert similarity.semantic_iou("Car (automobile)", "car_(automobile)") == 1.0
    assert similarity.semantic_iou("red car", "car_(automobile)") == pytest.approx(1 / 3)
    assert similarity.semantic_iou("stool:leg", "stool:seat") == pytest.approx(1 / 3)
    assert similarity.semantic_iou("", "horse") == 0.0


def test_semantic_similarity_without_a_model_is_nan_with_one_warning(monkeypatch, caplog):
    monkeypatch.delenv(similarity.EMBEDDING_ENV, raising=False)
    similarity._embedding_model.cache_clear()
    similarity._WARNED["embedding"] = False
    with caplog.at_level("WARNING"):
        items = [{"prediction": "horse", "answer": "horse"}, None]
        assert math.isnan(similarity.mean_semantic_similarity(items))
        assert math.isnan(similarity.mean_semantic_similarity(items))
    warnings = [record for record in caplog.records if similarity.EMBEDDING_ENV in record.getMessage()]
    assert len(warnings) == 1
    similarity._embedding_model.cache_clear()


def test_truncate_keeps_the_first_100_words():
    assert captioning.truncate(" ".join(["w"] * 150)) == " ".join(["w"] * 100)
    assert captioning.truncate("a  b") == "a  b"


@needs_java
def test_caption_metrics_identical_versus_unrelated():
    captions = ["a man riding a horse on the beach", "a red car parked on the street", "two dogs in the snow"]
    same = [captioning.caption_item(str(i), c, c) for i, c in enumerate(captions)]
    other = [captioning.caption_item(str(i), c, p) for i, (c, p) in enumerate(zip(captions, ["purple", "jam", "x"]))]
    identical, unrelated = captioning.caption_scores(same + [None]), captioning.caption_scores(other)
    assert identical["Bleu_1"] == pytest.approx(1.0) and identical["CIDEr"] > 0 and identical["METEOR"] > 0.9
    assert unrelated["Bleu_1"] < 1e-6 and unrelated["CIDEr"] == 0.0 and unrelated["ROUGE_L"] == 0.0
    assert captioning.aggregate_bleu_1(same) == identical["Bleu_1"]


def test_caption_results_keep_invalid_documents_out():
    results = captioning.caption_results("0", "a dog", INVALID_PREDICTION)
    assert results["invalid_docs"] == 1 and results["CIDEr"] is None
    results = captioning.caption_results("0", "a dog", "a cat")
    assert results["invalid_docs"] == 0 and results["Bleu_4"]["references"] == ["a dog"]
    assert all(math.isnan(value) for value in captioning.caption_scores([None]).values())


def test_caption_metrics_without_java_say_so(monkeypatch):
    monkeypatch.setattr(captioning.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="Java"):
        captioning.require_java()


@pytest.mark.parametrize("task", ["lvis_region", "paco_region"])
def test_category_documents(data, task):
    utils, docs = documents(task)
    assert [doc["doc_id"] for doc in docs] == ["0_0", "0_1", "1_0", "2_0"]
    (query,) = utils.doc_to_visual(docs[0])
    assert query.image.endswith(("train2017/000000000009.jpg", "val2017/000000000139.jpg"))
    assert query.image_size == (211, 320)
    assert set(query.regions[0]) <= {"polygon", "rle"}
    assert "<region>" in utils.doc_to_text(docs[0])
    results = utils.process_results(docs[2], [docs[2]["answer"].replace("_", " ")])
    assert results["semantic_iou"]["score"] == 1.0 and results["invalid_docs"] == 0
    invalid = utils.process_results(docs[2], [INVALID_PREDICTION])
    assert invalid["invalid_docs"] == 1 and invalid["semantic_iou"] is None and invalid["semantic_similarity"] is None


def test_lvis_and_paco_prompts_and_forms(data):
    lvis, lvis_docs = documents("lvis_region")
    paco, paco_docs = documents("paco_region")
    assert lvis.doc_to_text(lvis_docs[0]) == "What is the category of <region>? Using only one word or phrase."
    assert "'category:subcategory'" in paco.doc_to_text(paco_docs[0])
    assert lvis.doc_to_visual(lvis_docs[0])[0].image.endswith("train2017/000000000009.jpg")
    assert "polygon" in lvis.doc_to_visual(lvis_docs[0])[0].regions[0]
    assert "rle" in paco.doc_to_visual(paco_docs[0])[0].regions[0]
    assert paco_docs[0]["answer"] == "stool:seat"


def test_vg_documents(data):
    utils, docs = documents("vg_region")
    assert len(docs) == 4 and docs[0]["answer"] == "a stone tower"
    (query,) = utils.doc_to_visual(docs[0])
    assert query.regions == [{"box": [20, 30, 130, 180]}] and query.image_size == (211, 320)
    assert utils.doc_to_text(docs[0]) == "Please describe <region> briefly."
    assert utils.doc_to_visual(docs[2])[0].regions == [{"box": [200, 5, 310, 65]}]  # clipped to the image
    with pytest.raises(InvalidDocument, match="does not exist"):
        utils.doc_to_visual(docs[3])


def test_refl4_documents(data):
    utils, docs = documents("refl4_region")
    assert [doc["document"].count("objects365") > 0 for doc in docs] == [True] * 4
    assert docs[1]["references"] == ["a wooden walkway"]
    (query,) = utils.doc_to_visual(docs[0])
    assert query.regions == [{"box": [10, 20, 130, 100]}]
    assert utils.doc_to_text(docs[0]) == "Please describe <region> in brief."
    with pytest.raises(InvalidDocument, match="covers no pixel"):
        utils.doc_to_visual(docs[3])


@pytest.mark.parametrize("lite", [False, True])
def test_hc_stvg_documents(data, lite):
    utils, docs = documents("hc_stvg_region", lite)
    assert len(docs) == 4 and docs[0]["answer"] == "A dog walks to the laptop."
    (query,) = utils.doc_to_visual(docs[1])
    assert query.video.endswith("hc_stvg/videos/dog.mp4")
    region = query.regions[0]
    if lite:
        assert sorted(region["masklet"]) == [8, 10] and "There is one object" in utils.doc_to_text(docs[0])
    else:
        assert region["frame"] == 8 and "rle" in region
        assert utils.doc_to_text(docs[0]) == "Please describe the object <region> in brief in the video."
    messages = query_messages(utils.doc_to_text(docs[1]), query)
    assert [item["type"] for item in messages[0]["content"]][:3] == ["video", "text", "region"]


def test_malformed_last_documents_fail_in_the_processor(data):
    """The LVIS (size), PACO (RLE) and HC-STVG (frame) last documents pass `doc_to_visual` and fail later."""
    lvis, lvis_docs = documents("lvis_region")
    with pytest.raises(InvalidDocument, match="422, 640"):
        query_messages(lvis.doc_to_text(lvis_docs[-1]), lvis.doc_to_visual(lvis_docs[-1])[0])
    paco, paco_docs = documents("paco_region")
    region = paco.doc_to_visual(paco_docs[-1])[0].regions[0]
    with pytest.raises(ValueError, match="RLE counts"):
        region_to_mask(region, (211, 320))
    hc, hc_docs = documents("hc_stvg_region")
    assert hc.doc_to_visual(hc_docs[-1])[0].regions[0]["frame"] == 40


def test_missing_file_names_it_and_its_source(tmp_path, monkeypatch):
    monkeypatch.setenv("PIXELREFER_EVAL_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="vg_val_5000.json.*huggingface.co"):
        task_utils("vg_region").process_docs(None)
