"""Accelerator copies made once: the vocabulary's lookup tables and a stream's record
(exercised on the "meta" device, which every torch build has; the CUDA run is in
docs/SERVICE.md)."""

import pickle

import torch

from hybridcert.blocks import TokenBlock, Vocabulary
from hybridcert.smoothing.core import _record_on


def test_vocabulary_copies_its_tables_to_a_device_once_and_never_pickles_them(monkeypatch):
    vocab = Vocabulary(torch.tensor([7, 5, 9, 11]), mask_id=3)
    meta = torch.device("meta")
    copies = []
    to = torch.Tensor.to

    def counting_to(self, *args, **kwargs):
        copies.append(args)
        return to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", counting_to)
    first = vocab._table("noisable_ids", meta)
    assert first.device.type == "meta" and first.shape == (4,)
    for _ in range(5):
        assert vocab._table("noisable_ids", meta) is first       # reused ...
        vocab._table("_index_of", meta)
    assert len(copies) == 2                                      # ... and copied once each
    monkeypatch.undo()
    assert vocab._table("noisable_ids", torch.device("cpu")) is vocab.noisable_ids
    back = pickle.loads(pickle.dumps(vocab))
    assert back._on_device == {} and torch.equal(back.noisable_ids, vocab.noisable_ids)
    ids = torch.tensor([5, 2, 11, 40])
    assert back.to_indices(ids).tolist() == [0, -1, 3, -1]
    assert back.to_ids(torch.tensor([1, 0, -1, 2]), ids,       # -1: masked
                       torch.tensor([True, False, True, True])).tolist() == [7, 2, 3, 9]


def test_a_record_moves_to_a_device_whole_and_stays_put_on_a_cpu():
    block = TokenBlock(torch.tensor([1, 5, 7, 0]), torch.tensor([False, True, True, False]),
                       torch.tensor([1, 1, 1, 0]))
    record = {"image": torch.zeros(3, 4, 4), "text": block}
    assert _record_on(record, torch.device("cpu")) is record
    moved = _record_on(record, torch.device("meta"))
    assert moved["image"].device.type == "meta" and moved["image"].shape == (3, 4, 4)
    assert isinstance(moved["text"], TokenBlock)
    assert {getattr(moved["text"], f).device.type for f in ("ids", "noisable", "attention")} \
        == {"meta"}
    assert record["text"].ids.device.type == "cpu"                # the original is untouched
