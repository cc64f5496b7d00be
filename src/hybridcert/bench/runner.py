"""The image+text safety-filter benchmark end to end (``make demo``: small;
``make full-benchmark``: full; docs/BENCHMARK.md).

Data (docs/DATASET.md) -> noise-trained filters, one per training seed and noise level
(checkpoints reused when present) -> for each filter and threat model: a detection threshold
chosen on validation for a benign false-flag rate, then certification of a fixed,
stratified set of test inputs at the 25 grid cells, detector and majority vote, with the
sequential-composition and per-modality thresholds answered from the same draws (full run:
sequential decisions; demo: a fixed n, the sequential rule beside it on the same draws) ->
baselines on one seed (image-only and text-only smoothing; full run: the factorized AND of
unimodal branches) -> full run only: attacks at the same budgets on the base and the smoothed
detector, and a search for a counterexample to the per-modality check -> REPORT.md, plots,
per-input TSVs, results.json.

Every finished unit (one filter, one threat) is saved under ``<cache>/bench/<out name>/`` and
reused by a rerun with the same configuration, and the report is rewritten after each, so a
long run never loses finished work.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from hybridcert.bench import curves
from hybridcert.bench import report as bench_report
from hybridcert.bench.attack_eval import AttackSettings, merge_parts, run_attacks
from hybridcert.bench.calibrate import choose_threshold, refine
from hybridcert.bench.counterexample import CounterexampleSettings, search_counterexample
from hybridcert.bench.engine import count_copies
from hybridcert.bench.metrics import ceiling_probability, eps_ceiling
from hybridcert.bench.models import CachedModality, FastFilter
from hybridcert.bench.store import load_unit, save_unit
from hybridcert.bench.threats import CELLS, THREATS, branch_noise, noise_for
from hybridcert.bench.units import Settings, certify_unit, unit_rows
from hybridcert.blocks import HybridNoise, TokenBlock
from hybridcert.certificate import MAJORITY, Rule
from hybridcert.datasets import safety
from hybridcert.models import fusion, training
from hybridcert.models.checkpoints import RECIPE, load_or_train, provenance
from hybridcert.reports.tables import EPS_GRID, TOKEN_GRID
from hybridcert.smoothing import SmoothedClassifier, write_tsv
from hybridcert.smoothing.core import input_seed, lower_confidence_bound

#: The demo's one noise level (sigma, keep): heavy token noise, where the majority vote is
#: robust to token changes and the joint certificate differs from sequential composition.
DEMO_LEVEL = (0.25, 0.25)
#: Draws per input of the demo (fixed n): about 40 s for 80 inputs on 2 idle cores.
DEMO_N = 1000


@dataclass
class BenchmarkConfig:
    """What a benchmark run does (defaults: ``make demo``; :func:`full_config`: the full run).

    Parameters
    ----------
    levels : list of (sigma, keep_prob)
        Noise levels: Gaussian sigma on the image (pixels in [0, 1]) and the substitution
        keep probability of the text; one filter is trained per level and seed.
    seeds : tuple of int
        Training seeds (intervals span them).
    n_train, n_val, n_test : int
        Split sizes (docs/DATASET.md).
    epochs, text_layers : int
        Training recipe of every filter.
    data_seed, run_seed : int
        Seed of the dataset, and of the inputs' noise (``input_seed(run_seed, id)``) and the
        test subset.
    test_inputs : int
        Certified test inputs: a stratified draw (each slice and class in proportion).
    val_shifted : int
        Validation records in the test split's held-out art style (Noto; seen sprites only,
        :func:`~hybridcert.datasets.safety.load_shifted_validation`) added to the
        ``n_val`` records of the validation split, so the thresholds are chosen on the
        style shift too (0: none).
    val_inputs : int
        Validation records scored to choose thresholds (stratified by art style and class).
    val_copies : int
        Noisy copies per validation record (the estimate's resolution is 1 / val_copies).
    val_copies_top : int
        Copies behind the estimates of the benign records estimated at 1/2 or more, where the
        threshold falls (its resolution there).
    false_flag_rate : float
        Largest share of benign validation records the detector may flag.
    settings : Settings
        alpha, n, mode (the demo: fixed n = :data:`DEMO_N`, every rule read from the same
        draws; the full run: sequential decisions capped at 10,000), boundary and prices of
        the sequential decisions.
    threats : tuple of str
        "anywhere" (substitution at every content token) and/or "append" (``append_slots``
        noised slots after the caption).
    majority_threats : tuple of str
        Threats under which the majority vote is certified too (the detector is the headline
        under every threat).
    append_seeds : tuple of int, optional
        Seeds certified under the append threat (None: all).
    majority_seeds : tuple of int, optional
        Seeds whose filters are certified in the majority-vote setting too (None: all); the
        detector, the headline, is certified for every seed.
    baseline_seed : int
        The seed whose filters are compared with the baselines, attacked and searched for a
        counterexample.
    baseline_levels : tuple of int, optional
        Indices of the levels given the baselines (None: all).
    factorized_and : bool
        Whether the baselines include the factorized AND (two unimodal branches trained for
        it: about 75 s more per level on 2 cores; the full run only).
    attack : AttackSettings
        ``inputs=0`` (the demo): no attacks.
    counterexample : CounterexampleSettings
        ``seconds=0`` (the demo): no search for a counterexample.
    quality_votes : int
        Noisy copies behind the "smoothed" (majority-vote) accuracy of each filter on the
        test split.
    bootstrap : int
        Bootstrap replicates of every interval.
    batch_size : int, optional
        Copies per forward pass (None: 128 on a CPU, the fastest there, and 1024 on CUDA).
    device : str
        Where the filters are trained and run and the noise is drawn: "cpu" (default),
        "cuda" or "cuda:N".  Results are stored on the CPU either way.  On CUDA a seed names
        other noisy copies (docs/SERVICE.md), so the device is part of :meth:`signature`
        there (a CPU run's signature is the one from before this option).
    out : Path
        Report folder.
    cache : Path
        Data, checkpoints and finished units.
    """

    levels: list[tuple[float, float]] = field(default_factory=lambda: [DEMO_LEVEL])
    seeds: tuple[int, ...] = (0,)
    n_train: int = RECIPE.n_train
    n_val: int = RECIPE.n_val
    n_test: int = RECIPE.n_test
    epochs: int = RECIPE.epochs
    text_layers: int = RECIPE.text_layers
    data_seed: int = RECIPE.data_seed
    run_seed: int = 0
    test_inputs: int = 80
    val_shifted: int = 250
    val_inputs: int = 400
    val_copies: int = 32
    val_copies_top: int = 256
    false_flag_rate: float = 0.05
    settings: Settings = field(default_factory=lambda: Settings(n_max=DEMO_N, mode="fixed"))
    threats: tuple[str, ...] = ("anywhere",)
    majority_threats: tuple[str, ...] = ("anywhere",)
    append_slots: int = 8
    append_seeds: tuple[int, ...] | None = None
    majority_seeds: tuple[int, ...] | None = None
    baseline_seed: int = 0
    baseline_levels: tuple[int, ...] | None = (0,)
    factorized_and: bool = False
    attack: AttackSettings = field(default_factory=lambda: AttackSettings(inputs=0))
    counterexample: CounterexampleSettings = field(
        default_factory=lambda: CounterexampleSettings(seconds=0.0))
    quality_votes: int = 16
    bootstrap: int = 2000
    batch_size: int | None = None
    device: str = "cpu"
    out: Path = Path("artifacts/demo")
    cache: Path = RECIPE.cache

    def __post_init__(self) -> None:
        self.device = check_device(self.device)
        if self.batch_size is None:
            self.batch_size = 128 if self.device == "cpu" else 1024
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) \
                or self.batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        unknown = sorted(set(self.threats) - set(THREATS))
        if unknown or not self.threats:
            raise ValueError(f"threats must be among {THREATS}, got {self.threats!r}")
        if not self.levels or any(not (s > 0 and 0 < k <= 1) for s, k in self.levels):
            raise ValueError(f"levels must be (sigma > 0, keep in (0, 1]) pairs, got "
                             f"{self.levels!r}")
        if not self.seeds or self.baseline_seed not in self.seeds:
            raise ValueError(f"baseline_seed {self.baseline_seed} must be one of the seeds "
                             f"{self.seeds}")
        if self.test_inputs < 4 or self.test_inputs > self.n_test:
            raise ValueError(f"test_inputs must lie in [4, n_test={self.n_test}], got "
                             f"{self.test_inputs}")
        if self.baseline_levels is not None and any(
                not 0 <= li < len(self.levels) for li in self.baseline_levels):
            raise ValueError(f"baseline_levels must index levels (0..{len(self.levels) - 1}), "
                             f"got {self.baseline_levels!r}")
        if self.val_shifted != 0 and self.val_shifted < 4:
            raise ValueError(f"val_shifted must be 0 or at least 4, got {self.val_shifted}")
        if self.val_inputs < 4 or self.val_inputs > self.n_val + self.val_shifted:
            raise ValueError(f"val_inputs must lie in [4, n_val + val_shifted="
                             f"{self.n_val + self.val_shifted}], got {self.val_inputs}")

    def filter_config(self, level: tuple[float, float], seed: int,
                      modalities=("image", "text")) -> fusion.FilterConfig:
        """The :class:`FilterConfig` of a level and seed (a unimodal branch ignores the other
        modality's noise, so its name fixes it: one image branch per sigma, one text branch
        per keep probability)."""
        sigma, keep = level
        if tuple(modalities) == ("image",):
            keep = 0.5
        elif tuple(modalities) == ("text",):
            sigma = 0.25
        return fusion.FilterConfig(tuple(modalities), text_layers=self.text_layers, sigma=sigma,
                                   keep_prob=keep, seed=seed)

    def signature(self) -> str:
        """Hash of everything that determines a unit's numbers (not out, cache, attack,
        counterexample, bootstrap)."""
        keys = ("n_train", "n_val", "n_test", "epochs", "text_layers", "data_seed", "run_seed",
                "test_inputs", "val_inputs", "val_shifted", "val_copies", "val_copies_top",
                "false_flag_rate",
                "append_slots", "majority_threats",
                "batch_size")
        data = {k: getattr(self, k) for k in keys}
        data["settings"] = asdict(self.settings)
        if self.settings.mode == "sequential":
            del data["settings"]["mode"]    # the signature of runs from before the fixed mode
        data["version"] = safety.VERSION
        if self.device != "cpu":
            data["device"] = torch.device(self.device).type   # other copies per seed there
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def check_device(device) -> str:
    """``device`` if it names a usable device: "cpu", or "cuda" / "cuda:N" when CUDA is
    available (:func:`torch.cuda.is_available`) with that many devices."""
    if not isinstance(device, str) or not (
            device in ("cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit())):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available to torch "
                             f"{torch.__version__} (a CUDA build of torch and a GPU are needed)")
        index = int(device[5:]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA "
                             f"device(s) present")
    return device


#: Draws per input of the full run on a CPU: a fixed n, every comparison read from the same
#: draws, the sample-size ceiling drawn on every table.
FULL_N = 2000
#: Draws per input of the full run on an accelerator (``--device cuda``).
FULL_N_GPU = 10_000


def full_config(out: Path = Path("artifacts/full"), device: str = "cpu") -> BenchmarkConfig:
    """The full benchmark (docs/BENCHMARK.md) at a fixed n (the sequential rule with a price
    only in its own table, on the same draws).

    On a CPU it is sized for 3 h on 2 cores: keep probabilities 0.75 and 0.25 at sigma 0.25,
    five training seeds, 200 stratified test inputs, n = :data:`FULL_N` draws per input.  On
    an accelerator: keep 0.75, 0.5, 0.25 and 0.1, 250 inputs, n = :data:`FULL_N_GPU`.  The
    detector (the headline) and the majority vote are certified for every seed under threat
    anywhere; the append threat, the baselines at every level, the factorized AND (matched
    false-flag rate) and the counterexample search use seed 0; the attacks (100 certified
    flagged inputs at keep 0.75, seed 0's first, then seed 1's, ...; 100 PGD steps x 128
    copies, inside and beyond their regions) each input's own seed."""
    cpu = device == "cpu"
    keeps = (0.75, 0.25) if cpu else (0.75, 0.5, 0.25, 0.1)
    return BenchmarkConfig(
        levels=[(0.25, k) for k in keeps], seeds=(0, 1, 2, 3, 4),
        test_inputs=200 if cpu else 250, val_inputs=1000, threats=THREATS,
        append_seeds=(0,), majority_seeds=None, baseline_levels=None, factorized_and=True,
        settings=Settings(n_max=FULL_N if cpu else FULL_N_GPU, mode="fixed"),
        attack=AttackSettings(inputs=100, levels=(0,), seeds=(0, 1, 2, 3, 4)),
        counterexample=CounterexampleSettings(seconds=600.0, samples=128, steps=100,
                                              candidates=512, rounds=2, common_noise=True,
                                              screen_share=0.4),
        device=device, out=out)


# -- inputs and noises ----------------------------------------------------------------------
def stratified_subset(data: safety.SafetyData, size: int, seed: int,
                      by_slice: bool = True, field: str = "slice") -> np.ndarray:
    """``size`` record indices drawn without replacement, each (meta ``field``, class) group
    in proportion to its size (largest remainders), sorted (``by_slice=False``: by class
    only)."""
    keys = [(s if by_slice else "", int(y)) for s, y in
            zip(data.meta[field].tolist(), data.labels.tolist(), strict=True)]
    groups: dict = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    order = sorted(groups)
    exact = np.array([size * len(groups[k]) / len(keys) for k in order])
    counts = np.floor(exact).astype(int)
    for j in np.argsort(-(exact - counts), kind="stable")[: size - counts.sum()]:
        counts[j] += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(groups[k], c, replace=False) for k, c in zip(order, counts,
                                                                       strict=True)]
    return np.sort(np.concatenate(chosen)).astype(int)


def _record(data: safety.SafetyData, i: int, blocks=("image", "text")) -> dict:
    out = {}
    if "image" in blocks:
        out["image"] = data.image(int(i))
    if "text" in blocks:
        out["text"] = TokenBlock(torch.from_numpy(data.tokens[i]),
                                 attention=torch.from_numpy(data.attention[i]))
    return out


def _ids(split: str, index) -> list[str]:
    return [f"{split}-{int(i):05d}" for i in index]


# -- the run ---------------------------------------------------------------------------------
class _Log:
    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.start = time.perf_counter()

    def __call__(self, message: str) -> None:
        # process CPU time (all threads) beside the wall time: on shared cores the wall time
        # says little, the CPU time what the step costs
        line = (f"[{time.perf_counter() - self.start:7.1f} s, cpu {time.process_time():7.1f} s]"
                f" {message}")
        print(line, flush=True)
        with open(self.path, "a") as handle:
            handle.write(line + "\n")


def run(cfg: BenchmarkConfig) -> dict:
    """Run the benchmark and write ``cfg.out``: REPORT.md, plots, per-input TSVs
    (``inputs/``), results.json and run.log.  Returns the results."""
    started = time.perf_counter()
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / "inputs").mkdir(exist_ok=True)
    log = _Log(cfg.out / "run.log")
    log(f"benchmark -> {cfg.out} (configuration {cfg.signature()}); torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}"
        + ("" if cfg.device == "cpu" else
           f", {cfg.device} ({torch.cuda.get_device_name(torch.device(cfg.device))})"))
    units_dir = cfg.cache / "bench" / cfg.out.name / cfg.signature()
    units_dir.mkdir(parents=True, exist_ok=True)
    data = safety.splits(cfg.n_train, cfg.n_val, cfg.n_test, cfg.data_seed, cfg.cache / "data")
    if cfg.val_shifted:
        # thresholds chosen on the art-style shift too (the test split's Noto slice)
        data["val"] = safety.concatenate([data["val"], safety.load_shifted_validation(
            cfg.val_shifted, cfg.data_seed, cfg.cache / "data")])
    test, val = data["test"], data["val"]
    test_index = stratified_subset(test, cfg.test_inputs, cfg.run_seed)
    # a batch runs at its longest text: certify in order of length
    test_index = test_index[np.argsort(test.attention[test_index].sum(1), kind="stable")]
    val_index = stratified_subset(val, cfg.val_inputs, cfg.run_seed + 1, field="style")
    results: dict = {"config": _config_dict(cfg), "machine": _machine(cfg.device), "units": {},
                     "training": {}, "checkpoints": {}, "quality": {}, "baselines": {},
                     "timings": {}}
    results["inputs"] = {"test": _ids("test", test_index), "labels": test.labels[
        test_index].tolist(), "slices": test.meta["slice"][test_index].tolist()}

    models: dict = {}

    def certify_seed(seed: int) -> None:
        for li, level in enumerate(cfg.levels):
            config = cfg.filter_config(level, seed)
            model, seconds = load_or_train(cfg.cache, config, data["train"], cfg.epochs, log,
                                           device=cfg.device)
            results["training"][config.name] = round(seconds, 1)
            results["checkpoints"][config.name] = provenance(cfg.cache, config, cfg.epochs,
                                                             len(data["train"]), cfg.device)
            results["quality"][config.name] = _quality(cfg, model, test, units_dir,
                                                       config.name)
            models[(seed, li)] = model
            for threat in cfg.threats:
                if threat == "append" and cfg.append_seeds is not None and \
                        seed not in cfg.append_seeds:
                    continue
                name = f"seed{seed}_level{li}_{threat}"
                unit = load_unit(units_dir / f"{name}.json")
                if unit is not None and (unit.get("level") != list(level) or
                                         unit.get("threat") != threat):
                    unit = None             # the levels changed since it was stored
                if unit is None:
                    unit = _certify_level(cfg, model, level, threat, test, test_index, val,
                                          val_index, log, name, seed)
                    save_unit(units_dir / f"{name}.json", unit)
                else:
                    log(f"reusing unit {name}")
                results["units"][name] = {"seed": seed, "level": li, "threat": threat,
                                          **_unit_summary(unit)}
                _write_unit_files(cfg.out / "inputs", name, unit)
                _write(results, cfg, started, units_dir)

    # the baseline seed first, then everything compared with it, then the other seeds: a run
    # stopped early still has every section of the report
    certify_seed(cfg.baseline_seed)
    results["timings"]["baseline_seed_s"] = round(time.perf_counter() - started, 1)

    base_levels = range(len(cfg.levels)) if cfg.baseline_levels is None else cfg.baseline_levels
    for li in base_levels:
        level = cfg.levels[li]
        name = f"baselines_seed{cfg.baseline_seed}_level{li}"
        unit = load_unit(units_dir / f"{name}.json")
        joint = load_unit(units_dir / f"seed{cfg.baseline_seed}_level{li}_anywhere.json")
        # the factorized AND is calibrated to the joint detector's validation false-flag rate
        target = joint["calibration"]["rate"] if joint is not None else cfg.false_flag_rate
        if unit is not None and (unit.get("level") != list(level) or
                                 (cfg.factorized_and and
                                  (unit.get("and_alpha") != cfg.settings.alpha / 2 or
                                   unit.get("and", {}).get("calibration", {}).get("target")
                                   != target))):
            unit = None
        if unit is None:
            unit = _baselines(cfg, models[(cfg.baseline_seed, li)], level, data, test_index,
                              val_index, log, target)
            save_unit(units_dir / f"{name}.json", unit)
        else:
            log(f"reusing unit {name}")
            if cfg.factorized_and and "and" in unit and "validation" not in unit["and"]:
                # stored before the AND's validation estimates were: recount them (the same
                # seeds, so the same draws) and check that they give the stored pair
                unit["and"]["validation"] = _and_validation_of(cfg, level, data, val_index,
                                                               unit["and"]["calibration"], log)
                save_unit(units_dir / f"{name}.json", unit)
        results["baselines"][str(li)] = unit
        _write(results, cfg, started, units_dir)
    results["timings"]["baselines_s"] = round(time.perf_counter() - started, 1)

    def attack_certified() -> None:
        """Attack each level's certified flagged inputs, seed by seed (cfg.attack.seeds) as
        far as the seeds certified so far allow; saved after each seed: a rerun resumes."""
        if not cfg.attack.inputs:
            return
        attacks = load_unit(units_dir / "attacks.json")
        key = _procedure_key(cfg.attack, ATTACK_VERSION, omit=("seeds",))
        if attacks is None or attacks.get("settings") != key:
            attacks = {"settings": key, "levels": {}}
        attacks["seeds"] = list(cfg.attack.seeds)
        parts_of = attacks.setdefault("parts", {})
        for li in cfg.attack.levels:
            if li >= len(cfg.levels) or "anywhere" not in cfg.threats:
                continue
            parts = parts_of.setdefault(str(li), {})
            if not parts and str(li) in attacks["levels"]:      # stored before seeds: seed 0's
                parts[str(cfg.attack.seeds[0])] = attacks["levels"][str(li)]
            for seed in cfg.attack.seeds:
                if str(seed) in parts:
                    continue
                wanted = cfg.attack.inputs - sum(len(p["ids"]) for p in parts.values())
                if wanted <= 0 or (seed, li) not in models:
                    break
                unit = load_unit(units_dir / f"seed{seed}_level{li}_anywhere.json")
                parts[str(seed)] = run_attacks(
                    models[(seed, li)], noise_for(cfg.levels[li], "anywhere"), test,
                    test_index, unit, val, val_index, cfg, log, inputs=wanted)
                save_unit(units_dir / "attacks.json", attacks)     # the parts: a rerun resumes
            if parts:
                attacks["levels"][str(li)] = merge_parts(parts)
        save_unit(units_dir / "attacks.json", attacks)
        results["attacks"] = attacks
        _write(results, cfg, started, units_dir)

    attack_certified()
    results["timings"]["attacks_s"] = round(time.perf_counter() - started, 1)

    if cfg.counterexample.seconds > 0:
        found = load_unit(units_dir / "counterexample.json")
        key = _procedure_key(cfg.counterexample, COUNTEREXAMPLE_VERSION)
        if found is None or found.get("procedure") != key:
            found = search_counterexample(cfg, models, results, test, test_index, log)
            found["procedure"] = key
            save_unit(units_dir / "counterexample.json", found)
        results["counterexample"] = found
        _write(results, cfg, started, units_dir)
    results["timings"]["counterexample_s"] = round(time.perf_counter() - started, 1)

    for seed in cfg.seeds:
        if seed != cfg.baseline_seed:
            certify_seed(seed)
    attack_certified()             # the attacks' other seeds, now certified
    results["timings"]["total_s"] = round(time.perf_counter() - started, 1)
    _write(results, cfg, started, units_dir, final=True)
    log(f"report: {cfg.out / 'REPORT.md'} ({time.perf_counter() - started:.0f} s in all)")
    return results


def _quality(cfg, model, test, units_dir: Path, name: str) -> dict:
    """Clean, noisy (one copy) and smoothed (majority of ``quality_votes`` copies, not a
    certificate) recall per class and balanced accuracy of a filter on the whole test
    split (cached beside the units)."""
    path = units_dir / f"quality_{name}.json"
    stored = load_unit(path)
    if stored is None:
        stored = training.evaluate(model, test, votes=cfg.quality_votes, seed=cfg.run_seed,
                                   device=cfg.device)
        save_unit(path, stored)
    return stored


def _certify_level(cfg, model, level, threat, test, test_index, val, val_index, log,
                   name, seed) -> dict:
    noise = noise_for(level, threat, cfg.append_slots)
    clf = SmoothedClassifier(FastFilter(model), noise, 2, batch_size=cfg.batch_size,
                             device=cfg.device)
    start = time.perf_counter()
    calibration = _calibrate(cfg, clf, val, val_index)
    val_seconds = time.perf_counter() - start
    log(f"{name}: tau {calibration['tau']:.4f} (validation false-flag rate "
        f"{100 * calibration['rate']:.1f}% of {calibration['records']} benign records, "
        f"{cfg.val_copies} copies each; {val_seconds:.0f} s)")
    ids = _ids("test", test_index)
    records = [_record(test, i) for i in test_index]
    seeds = [input_seed(cfg.run_seed, s) for s in ids]
    unit = certify_unit(clf, records, seeds, CELLS, cfg.settings, calibration["tau"],
                        majority=threat in cfg.majority_threats and (
                            cfg.majority_seeds is None or seed in cfg.majority_seeds),
                        batch_size=cfg.batch_size)
    out = _pack(unit, test.labels[test_index], ids)
    out.update(calibration=calibration, val_seconds=round(val_seconds, 1), level=list(level),
               threat=threat,
               ceiling=_ceilings(noise, cfg.settings, calibration["tau"]))
    s = out["summary"]
    majority = f"; majority certified accuracy at (0, 0) {100 * s['majority_accuracy'][0]:.1f}%" \
        if "majority_accuracy" in s else ""
    log(f"{name}: {len(ids)} inputs in {unit['seconds']:.0f} s, {s['mean_draws']:.0f} draws "
        f"per input ({s['draws_per_s']:.0f}/s; per rule "
        + ", ".join(f"{k} {v:.0f}" for k, v in s["queries"].items())
        + f"); certified unsafe recall at (0, 0) {100 * s['detector_recall'][0]:.1f}%, test "
        f"false-flag rate {100 * s['false_flag_rate']:.1f}%{majority}")
    return out


def _calibrate(cfg, clf, val, val_index, fast=None, fixed=None) -> dict:
    """The detector's tau on the benign validation records (bench/calibrate.py): estimates
    from ``val_copies`` copies, the top re-estimated from ``val_copies_top``."""
    safe = val_index[val.labels[val_index] == 0]
    records = [_record(val, i) for i in safe]
    seeds = [input_seed(cfg.run_seed, s) for s in _ids("val", safe)]

    def counts(index, copies):
        chosen = [records[int(i)] for i in index]
        labels_fn = CachedModality(fast, fixed, chosen) if fixed else None
        return count_copies(clf, chosen, [seeds[int(i)] for i in index], copies,
                            labels_fn=labels_fn, batch_size=cfg.batch_size)[:, 1]

    first = counts(np.arange(len(records)), cfg.val_copies) / cfg.val_copies
    scores, copies = refine(first, counts, cfg.val_copies, cfg.val_copies_top)
    out = choose_threshold(scores, copies, cfg.false_flag_rate)
    # the estimates themselves: the operating curves' validation taus (bench/curves.py) and
    # the false-flag rate per art style
    out.update(scores=scores.tolist(), copies_each=copies.tolist(),
               styles=val.meta["style"][safe].tolist())
    return out


def _ceilings(noise: HybridNoise, settings: Settings, tau: float | None) -> dict:
    """Sample-size ceilings of the detector and the majority vote: the largest certifiable
    threshold and the L2 radius it certifies per token budget of the grid (fixed n: the
    Clopper-Pearson bound of n agreeing draws, at alpha for the detector and alpha / 2 for
    the majority vote, :func:`hybridcert.bench.units.certify_fixed`)."""
    out = {}
    for name, rule, zero in (("majority", MAJORITY, noise.threshold(noise.budget({}))),
                             ("detector", None if tau is None else Rule.flag(tau), tau)):
        if rule is None:
            continue
        mode = "flag" if name == "detector" else "majority"
        if settings.mode == "fixed":
            level = settings.alpha if name == "detector" else settings.alpha / 2
            p = lower_confidence_bound(settings.n_max, settings.n_max, level)
        else:
            p = ceiling_probability(zero, settings.alpha, settings.n_max, settings.boundary,
                                    mode)
        out[name] = {"p": p, "eps": eps_ceiling(noise, p, rule, TOKEN_GRID)}
    return out


def _pack(unit: dict, labels, ids) -> dict:
    """A unit as JSON-ready data: per-input rows, cell outcomes, draws, a summary."""
    labels = np.asarray(labels, dtype=int)
    rows = unit_rows(unit, labels, ids)
    outcomes = {k: v.astype(int).tolist() for k, v in unit["outcomes"].items()}
    drawn = unit["drawn"]
    queries = {name: float(np.mean(v)) for name, v in unit["queries"].items()}
    out = {"ids": list(ids), "labels": labels.tolist(), "rows": rows, "outcomes": outcomes,
           "queries": queries,
           "labels_of": unit["labels_of"], "baseline_labels": unit["baseline_labels"],
           "drawn": drawn.tolist(), "seconds": round(unit["seconds"], 1),
           "thresholds": {k: {m: [None if not np.isfinite(x) else float(x) for x in v]
                              for m, v in t.items()} for k, t in unit["thresholds"].items()}}
    out["mode"] = unit.get("mode", "sequential")
    out["summary"] = _unit_summary(out)
    return out


def _unit_summary(unit: dict) -> dict:
    labels = np.asarray(unit["labels"])
    summary = {"mean_draws": float(np.mean(unit["drawn"])), "queries": unit.get("queries", {}),
               "draws_per_s": float(np.sum(unit["drawn"]) / max(unit["seconds"], 1e-9)),
               "seconds": unit["seconds"]}
    if "detector" in unit["outcomes"]:
        det = np.asarray(unit["outcomes"]["detector"], dtype=bool)
        summary["detector_recall"] = det[labels == 1].mean(0).tolist()
        summary["false_flag_rate"] = float(det[labels == 0, 0].mean())
    if "majority" in unit["outcomes"]:
        maj = np.asarray(unit["outcomes"]["majority"], dtype=bool)
        correct = np.asarray(unit["labels_of"]["majority"]) == labels
        summary["majority_accuracy"] = (maj & correct[:, None]).mean(0).tolist()
    return summary


def _baselines(cfg, model, level, data, test_index, val_index, log,
               and_rate: float | None = None) -> dict:
    """Image-only and text-only smoothing of the joint filter and (``cfg.factorized_and``)
    the factorized AND of separately trained unimodal branches, on the same test inputs (one
    seed); the AND's pair of thresholds is chosen for at most ``and_rate`` benign validation
    false flags (the joint detector's achieved rate: a matched operating point; default
    ``cfg.false_flag_rate``)."""
    test, val = data["test"], data["val"]
    out = {"level": list(level)}
    ids = _ids("test", test_index)
    seeds = [input_seed(cfg.run_seed, s) for s in ids]
    labels = test.labels[test_index]
    fast = FastFilter(model).to(cfg.device)
    # one-modality smoothing of the joint filter: the other modality clean and cached
    for name, image, text, fixed, cells in (
            ("image_only", True, False, "text", [(e, 0) for e in EPS_GRID]),
            ("text_only", False, True, "image", [(0.0, r) for r in TOKEN_GRID])):
        noise = noise_for(level, "anywhere", image=image, text=text)
        clf = SmoothedClassifier(fast, noise, 2, batch_size=cfg.batch_size, device=cfg.device)
        calibration = _calibrate(cfg, clf, val, val_index, fast, fixed)
        records = [_record(test, i) for i in test_index]
        unit = certify_unit(clf, records, seeds, cells, cfg.settings, calibration["tau"],
                            baselines=False, labels_fn=CachedModality(fast, fixed, records),
                            batch_size=cfg.batch_size)
        packed = _pack(unit, labels, ids)
        packed["calibration"] = calibration
        packed["cells"] = [list(c) for c in cells]
        out[name] = packed
        log(f"baseline {name} smoothing (level {level}): tau {calibration['tau']:.4f}, "
            f"{unit['seconds']:.0f} s, {packed['summary']['mean_draws']:.0f} draws per input")
    if not cfg.factorized_and:
        return out
    branches = _and_branches(cfg, level, data, val_index, log)
    validation = _and_validation(branches, cfg, val, val_index)
    target = cfg.false_flag_rate if and_rate is None else float(and_rate)
    pair = {**curves.and_pairs(validation, (target,))[target], "target": target}
    # each branch at alpha / 2: the AND's claim needs both, so it holds with probability at
    # least 1 - alpha, like the joint certificate's
    branch_settings = replace(cfg.settings, alpha=cfg.settings.alpha / 2)
    out["and"] = {"calibration": pair, "branches": {}, "validation": validation}
    out["and_alpha"] = branch_settings.alpha
    for modality, cells in (("image", [(e, 0) for e in EPS_GRID]),
                            ("text", [(0.0, r) for r in TOKEN_GRID])):
        tau = pair["tau_image"] if modality == "image" else pair["tau_text"]
        records = [_record(test, i, (modality,)) for i in test_index]
        unit = certify_unit(branches[modality]["clf"], records, seeds, cells, branch_settings,
                            tau,
                            majority=False, baselines=False, batch_size=cfg.batch_size)
        packed = _pack(unit, labels, ids)
        packed.update(cells=[list(c) for c in cells], model=branches[modality]["name"],
                      train_s=branches[modality]["train_s"])
        out["and"]["branches"][modality] = packed
    image_cert = np.asarray(out["and"]["branches"]["image"]["outcomes"]["detector"], bool)
    text_cert = np.asarray(out["and"]["branches"]["text"]["outcomes"]["detector"], bool)
    # (eps, r) certified iff the image branch is certified at eps and the text branch at r
    grid = image_cert[:, :, None] & text_cert[:, None, :]
    out["and"]["outcomes"] = grid.reshape(len(ids), -1).astype(int).tolist()
    log(f"baseline factorized AND (level {level}): taus {pair['tau_image']:.3f} / "
        f"{pair['tau_text']:.3f} (validation false-flag rate {100 * pair['rate']:.1f}%, "
        f"recall {100 * pair['recall']:.1f}%); certified unsafe recall at (0, 0) "
        f"{100 * grid[labels == 1, 0, 0].mean():.1f}%")
    return out


def _and_branches(cfg, level, data, val_index, log) -> dict:
    """The factorized AND's two branches (an image-only and a text-only filter, trained on
    the baseline seed), each smoothed over its own modality, with its estimates of the flag
    probability on the validation records (the draws the calibration reads)."""
    val = data["val"]
    val_seeds = [input_seed(cfg.run_seed, s) for s in _ids("val", val_index)]
    branches = {}
    for modality in ("image", "text"):
        config = cfg.filter_config(level, cfg.baseline_seed, (modality,))
        branch, seconds = load_or_train(cfg.cache, config, data["train"], cfg.epochs, log,
                                        device=cfg.device)
        clf = SmoothedClassifier(FastFilter(branch), branch_noise(level, modality), 2,
                                 batch_size=cfg.batch_size, device=cfg.device)
        counts = count_copies(clf, [_record(val, i, (modality,)) for i in val_index],
                              val_seeds, cfg.val_copies, batch_size=cfg.batch_size)
        branches[modality] = {"clf": clf, "scores": counts[:, 1] / cfg.val_copies,
                              "train_s": round(seconds, 1), "name": config.name}
    return branches


def _and_validation(branches: dict, cfg, val, val_index) -> dict:
    """What the AND's calibration read, stored so that the report can choose its pair of
    thresholds at other validation false-flag rates: each branch's validation estimates,
    the records' labels and art styles, and the copies per record."""
    return {"image": [float(v) for v in branches["image"]["scores"]],
            "text": [float(v) for v in branches["text"]["scores"]],
            "labels": [int(v) for v in val.labels[val_index]],
            "styles": val.meta["style"][val_index].tolist(), "copies": int(cfg.val_copies)}


def _and_validation_of(cfg, level, data, val_index, pair: dict, log) -> dict:
    """The AND's validation estimates, recounted for a baselines unit stored without them;
    an error when they do not give the stored pair of thresholds (different draws)."""
    branches = _and_branches(cfg, level, data, val_index, log)
    stored = _and_validation(branches, cfg, data["val"], val_index)
    again = curves.and_pairs(stored, (pair["target"],))[float(pair["target"])]
    # the rates are exact ratios of counts: equal only if the recount flags the same records
    fields = ("tau_image", "tau_text", "rate", "recall", "feasible")
    if any(again[k] != pair[k] for k in fields):
        raise RuntimeError("the recounted AND validation estimates choose "
                           + ", ".join(f"{k} {again[k]}" for k in fields) + "; the stored unit "
                           + ", ".join(f"{k} {pair[k]}" for k in fields) + ": not the same "
                           "draws; delete the baselines unit to recompute it")
    log(f"AND validation estimates recounted (level {level}): they choose the stored taus, "
        f"validation false-flag rate and recall")
    return stored


#: Versions of the attack and counterexample procedures: a cached result of another version
#: is recomputed.
ATTACK_VERSION = 3
COUNTEREXAMPLE_VERSION = 3


def _procedure_key(settings, version: int, omit: tuple[str, ...] = ()) -> dict:
    """A procedure's settings as stored in JSON (tuples become lists), with its version,
    without the fields in ``omit`` (those that say which work is done, not how)."""
    fields = {k: v for k, v in asdict(settings).items() if k not in omit}
    return {**json.loads(json.dumps(fields)), "version": version}


def _write_unit_files(folder: Path, name: str, unit: dict) -> None:
    """Per-input exports of a unit: the smoothing literature's TSV per setting
    (:func:`hybridcert.smoothing.write_tsv`) and the cell decisions of every rule."""
    for setting, rows in unit["rows"].items():
        write_tsv(folder / f"{name}_{setting}.tsv", rows)
    methods = sorted(unit["outcomes"])
    with open(folder / f"{name}_cells.tsv", "w") as handle:
        header = ["id", "label", "drawn"] + [f"{m}[{e:g},{r}]" for m in methods
                                             for e, r in CELLS]
        handle.write("\t".join(header) + "\n")
        for i, input_id in enumerate(unit["ids"]):
            values = [input_id, str(unit["labels"][i]), str(unit["drawn"][i])]
            values += [str(v) for m in methods for v in unit["outcomes"][m][i]]
            handle.write("\t".join(values) + "\n")


def _write(results: dict, cfg: BenchmarkConfig, started: float, units_dir: Path,
           final: bool = False) -> None:
    results["duration_s"] = round(time.perf_counter() - started, 1)
    units = {name: load_unit(units_dir / f"{name}.json") for name in results["units"]}
    bench_report.write(results, units, cfg, final=final)


def _config_dict(cfg: BenchmarkConfig) -> dict:
    out = asdict(cfg)
    out["out"], out["cache"] = str(cfg.out), str(cfg.cache)
    out["signature"] = cfg.signature()
    return out


def _machine(device: str = "cpu") -> dict:
    import os

    out = {"machine": platform.machine(), "cores": os.cpu_count(),
           "torch": torch.__version__, "threads": torch.get_num_threads(),
           "python": platform.python_version()}
    if device != "cpu":
        out["device"] = torch.cuda.get_device_name(torch.device(device))
    return out


__all__ = ["CELLS", "BenchmarkConfig", "full_config",
           "noise_for", "run", "stratified_subset"]
