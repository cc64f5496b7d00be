"""Issue 11/12: one validated configuration; every option refused in one line before anything
is read or any store is created."""

import math

import pytest

from hybridcert.cli.main import main
from hybridcert.runs.config import ConfigError, RunConfig, parse_target

BASE = {"model": "tests.runs.toy_model:factory", "sigma": 0.25, "keep_prob": 0.3}


@pytest.mark.parametrize(("changes", "message"), [
    ({"noise": "foo"}, "noise must be substitution or mask"),
    ({"alpha": 2}, r"alpha must lie in \(0, 1\)"),
    ({"alpha": math.nan}, "alpha must be a finite number"),
    ({"targets": 5}, "targets must be a list"),
    ({"targets": [[-0.1, 1]]}, "target eps must be a finite number >= 0"),
    ({"targets": [[math.nan, 1]]}, "target eps must be a finite number >= 0"),
    ({"targets": [[0.25, 100_000]]}, "at most 1000"),
    ({"targets": [[0.25, 1.5]]}, "must be an integer"),
    ({"mode": "decision"}, "needs targets"),
    ({"mode": "sequential"}, "mode must be fixed, decision or radius"),
    ({"n": 0}, "n must be an integer >= 1"),
    ({"n": 2.5}, "n must be an integer"),
    ({"max_tokens": 5000}, "max_tokens must be at most 1000"),
    ({"sigma": -1}, "gaussian sigma must be a finite number > 0"),
    ({"keep_prob": 1.5}, r"keep probability must lie in \(0, 1\]"),
    ({"rule": "flag"}, "needs a threshold"),
    ({"rule": "flag", "threshold": 1.0}, r"threshold must lie in \(0, 1\)"),
    ({"threshold": 0.1}, "majority rule takes none"),
    ({"threat": "suffix"}, "needs --suffix-length"),
    ({"threat": "append", "append_slots": 0}, "append_slots must be an integer >= 1"),
    ({"blocks": {"audio": "laplace:1"}}, "noise must be gaussian, substitution, mask or none"),
    ({"checkpoint": "x"}, "exactly one of --checkpoint or --model"),
    ({"model": "no_colon"}, "must look like 'module:factory'"),
    ({"label_map": {"safe": 0, "unsafe": 2}}, r"must be a class in \[0, 1\]"),
    ({"image_size": [0, 3]}, "image_size must be HEIGHTxWIDTH"),
    ({"p_upper": "bonferroni", "mode": "decision", "targets": [[0.1, 0]]},
     "in mode fixed only"),
    ({"unknown_option": 1}, "unknown option"),
    ({"mode": "decision", "targets": [[0.1, 0]], "boundary": "bonferroni"},
     "boundary must be one of mixture, looks, spending"),
    ({"mode": "radius", "boundary": "spending"}, "spending is for the decision mode"),
    ({"boundary": "looks"}, "boundary looks is for the sequential modes"),
    ({"no_text_noise": True}, r"no_text_noise contradicts the text noise of \['text'\]"),
    ({"keep_prob": None, "blocks": {"caption": "mask:0.5"}, "no_text_noise": True},
     r"contradicts the text noise of \['caption'\]"),
    ({"no_text_noise": "yes"}, "no_text_noise must be true or false"),
    ({"allow_empty_text": 1}, "allow_empty_text must be true or false"),
])
def test_bad_options_are_refused(changes, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig.from_dict({**BASE, **changes})


def test_targets_normalised_and_per_block():
    config = RunConfig.from_dict({**BASE, "mode": "decision",
                                  "targets": [[0.25, 1], {"image": 0.5, "text": 2}]})
    assert config.target_budgets() == [{"image": 0.25, "text": 1}, {"image": 0.5, "text": 2}]
    assert parse_target("image=0.25,text=1") == {"image": 0.25, "text": 1}
    with pytest.raises(ConfigError, match="--target must look like"):
        parse_target("0.25")


@pytest.mark.parametrize("targets", [
    [[0.1, 1], [0.1, 1]],
    [[0.1, 1], [0.2, 0], {"image": 0.1, "text": 1}],      # the same budget, spelled per block
])
def test_a_repeated_target_is_refused(targets):
    """Duplicated targets used to be accepted silently (and answered twice per row)."""
    with pytest.raises(ConfigError, match=r"^target \d \(.*\) repeats target 1 \(0\.1,1\); "
                                          r"give each target once$"):
        RunConfig.from_dict({**BASE, "mode": "decision", "targets": targets})


def test_toml_errors_are_one_line(tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text('model = "tests.runs.toy_model:factory"\nsigma = 0.25\ntargets = 5\n')
    store = tmp_path / "s.sqlite"
    assert main(["certify", "--config", str(config), "--store", str(store), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hybridcert: error:") and "targets" in err
    assert len(err.splitlines()) == 1 and not store.exists()
    config.write_text("sigma = [\n")
    assert main(["certify", "--config", str(config), "--store", str(store)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv", [
    ["--mode", "decision", "--target", "0.25,1", "--alpha", "2"],
    ["--mode", "decision", "--target", "-0.25,1"],
    ["--mode", "decision", "--target", "nan,1"],
    ["--mode", "decision", "--target", "0.25,100000"],
    ["--device", "foo"],
    ["--model", "tests.runs.toy_model:bare_factory"],
    ["--mode", "decision", "--target", "0.1,0", "--boundary", "spending", "--alpha", "1e-250"],
    ["--boundary", "spending"],
    ["--mode", "decision", "--target", "0.1,1", "--target", "0.1,1"],
])
def test_refused_before_the_store_is_created(tmp_path, capsys, argv):
    store = tmp_path / "never.sqlite"
    code = main(["certify", "--dataset", "missing.jsonl", "--store", str(store), "--model",
                 "tests.runs.toy_model:factory", "--sigma", "0.25", "--keep-prob", "0.3",
                 "--quiet", *argv])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hybridcert: error:") and len(err.splitlines()) == 1
    assert "not found" not in err         # refused before the dataset was even looked at
    assert not store.exists()


def test_serve_takes_the_sequential_options(capsys):
    """hybridcert serve passes --boundary and --price to the run config (refused in one line
    before anything is loaded when wrong)."""
    for argv, message in ((["--boundary", "spendng"], "boundary must be one of"),
                          (["--price", "-3"], "price must be a finite number > 0")):
        code = main(["serve", "--model", "tests.runs.toy_model:factory", "--sigma", "0.25",
                     "--keep-prob", "0.3", *argv])
        assert code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("hybridcert: error:") and len(err.splitlines()) == 1
        assert message in err


def test_toml_accepts_the_flags_spelling(tmp_path):
    """A TOML file may use the command line's spellings: keep-prob, "safe=0,unsafe=1",
    "48x48", "0.25,1" (a table form works too)."""
    config = tmp_path / "run.toml"
    config.write_text('model = "tests.runs.toy_model:factory"\nsigma = 0.25\nkeep-prob = 0.3\n'
                      'label_map = "safe=0,unsafe=1"\nimage_size = "48x48"\n'
                      'mode = "decision"\ntargets = ["0.25,1", {image = 0.5, text = 2}]\n'
                      'columns = {text = "caption"}\n')
    run = RunConfig.from_sources(config)
    assert run.keep_prob == 0.3 and run.label_map == {"safe": 0, "unsafe": 1}
    assert run.image_size == [48, 48] and run.columns == {"text": "caption"}
    assert run.target_budgets() == [{"image": 0.25, "text": 1}, {"image": 0.5, "text": 2}]


def test_serve_refuses_an_unnoised_text_model_without_no_text_noise(capsys):
    """Serving a model that reads text with image noise alone needs --no-text-noise (it used
    to start and certify image changes only, without a word)."""
    code = main(["serve", "--model", "tests.runs.toy_model:factory", "--sigma", "0.25"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hybridcert: error:") and len(err.splitlines()) == 1
    assert "reads text block(s) ['text']" in err and "--no-text-noise" in err
