"""Throughput of the smoothing machinery alone (noise, id mapping, batching, counting) with a
model that costs nothing: the part a refactor of blocks/noise could slow.

    python benchmarks/sampling_machinery.py 30720      # prints samples/s

Compare two versions by running it alternately with each on PYTHONPATH
(docs/benchmark/refactor_overhead.log).
"""
import sys
import time

import torch

from hybridcert import Gaussian, Substitution
from hybridcert.smoothing import SmoothedClassifier, TokenBlock, Vocabulary

torch.set_num_threads(1)
vocab = Vocabulary(torch.arange(999, 30522), mask_id=103)
def model(b):
    return torch.zeros(b["image"].shape[0], dtype=torch.long)
clf = SmoothedClassifier(model, {"image": Gaussian(0.25), "text": Substitution(0.2, vocab.size)}, 2,
                         {"text": vocab}, batch_size=256, prefetch=False)
rec = {"image": torch.rand(3, 32, 32), "text": TokenBlock(torch.randint(999, 30522, (32,)))}
x = clf.validate(rec)
clf.sample_counts(x, 2048, 0, 1)
start = time.perf_counter()
clf.sample_counts(x, int(sys.argv[1]), 1, 1)
print(f"{int(sys.argv[1]) / (time.perf_counter() - start):.0f}")
