"""Issue 25 item 3: factory arguments (``--model-arg``, TOML ``[model.args]``, ``serve``),
checked against the factory's signature before it runs, stored with the run."""

import pytest

from hybridcert.cli.main import main
from hybridcert.runs.config import ConfigError, RunConfig, parse_model_args
from hybridcert.runs.store import RunStore

ENTRY = "tests.runs.toy_model:threshold_factory"
NOISE = ["--sigma", "0.25", "--keep-prob", "0.3", "--n0", "16", "--n", "200", "--alpha",
         "0.01", "--max-tokens", "2"]


def certify(dataset, store, *extra, quiet=True):
    return main(["certify", "--dataset", str(dataset), "--store", str(store), *NOISE, *extra,
                 *(["--quiet"] if quiet else [])])


def predictions(store):
    with RunStore(store, readonly=True) as s:
        return [r["predict"] for r in s.rows()], s.config


def test_values_are_json_where_they_parse_else_strings():
    args = parse_model_args(["sigma=0.5", "path=/ckpt/a b", "flags=[1, 2]", "on=true",
                             'quoted="7"', "nan=NaN", "empty=", "eq=a=b"])
    assert args == {"sigma": 0.5, "path": "/ckpt/a b", "flags": [1, 2], "on": True,
                    "quoted": "7", "nan": "NaN", "empty": "", "eq": "a=b"}
    for bad, message in ((["=1"], "KEY=VALUE"), (["sigma"], "KEY=VALUE"),
                         (["a=1", "a=2"], "given twice")):
        with pytest.raises(ConfigError, match=message):
            parse_model_args(bad)


def test_arguments_reach_the_factory_and_are_stored(jsonl_dataset, tmp_path):
    low, high = tmp_path / "low.sqlite", tmp_path / "high.sqlite"
    assert certify(jsonl_dataset, low, "--model", ENTRY, "--model-arg", "threshold=0.0") == 0
    assert certify(jsonl_dataset, high, "--model", ENTRY, "--model-arg", "threshold=5") == 0
    low_pred, low_config = predictions(low)
    high_pred, high_config = predictions(high)
    assert set(low_pred) == {1} and set(high_pred) == {0}     # every score is in (0, 5)
    assert low_config["model_args"] == {"threshold": 0.0}
    assert high_config["model_args"] == {"threshold": 5}
    assert main(["report", str(low), "--out", str(tmp_path / "r")]) == 0
    assert f"Model: {ENTRY}(threshold=0.0)." in (tmp_path / "r" / "REPORT.md").read_text()


def test_resume_must_match_the_arguments(jsonl_dataset, tmp_path, capsys):
    store = tmp_path / "s.sqlite"
    assert certify(jsonl_dataset, store, "--model", ENTRY, "--model-arg", "threshold=0.6") == 0
    capsys.readouterr()
    assert certify(jsonl_dataset, store, "--model", ENTRY, "--model-arg", "threshold=0.7") == 2
    err = capsys.readouterr().err.strip()
    assert "belongs to another run" in err and "model_args" in err
    assert certify(jsonl_dataset, store, "--model", ENTRY, "--model-arg", "threshold=0.6",
                   quiet=False) == 0
    assert "12 already done, 0 to go" in capsys.readouterr().err


def test_a_run_without_arguments_stores_the_old_configuration():
    """Runs stored before model_args existed must still resume: the key is absent when empty."""
    config = RunConfig.from_dict({"model": "tests.runs.toy_model:factory", "sigma": 0.25})
    assert "model_args" not in config.to_dict()
    assert RunConfig.from_dict(config.to_dict()).to_dict() == config.to_dict()


@pytest.mark.parametrize(("args", "message"), [
    (["--model-arg", "thresh=0.5"], "--model-arg 'thresh' is not an argument of "
                                    f"{ENTRY} (its arguments: threshold, harmful, name)"),
    ([], f"{ENTRY} needs argument 'threshold': give --model-arg threshold=VALUE"),
    (["--model-arg", "threshold"], "--model-arg must look like KEY=VALUE"),
])
def test_wrong_or_missing_arguments_are_one_line(tmp_path, capsys, args, message):
    store = tmp_path / "never.sqlite"
    code = certify(tmp_path / "missing.jsonl", store, "--model", ENTRY, *args)
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hybridcert: error:") and len(err.splitlines()) == 1
    assert message in err and not store.exists()


def test_checkpoint_takes_no_arguments():
    with pytest.raises(ConfigError, match="a --checkpoint takes none"):
        RunConfig.from_dict({"checkpoint": "x", "sigma": 0.25, "model_args": {"a": 1}})


def test_toml_model_table(jsonl_dataset, tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(f'sigma = 0.25\nkeep_prob = 0.3\n[model]\nentry = "{ENTRY}"\n'
                      f'[model.args]\nthreshold = 0.6\nharmful = ["hurt"]\n')
    run = RunConfig.from_sources(config)
    assert run.model == ENTRY and run.model_args == {"threshold": 0.6, "harmful": ["hurt"]}
    # flags override the file's arguments key by key (same factory)
    run = RunConfig.from_sources(config, model_args={"threshold": 0.7})
    assert run.model_args == {"threshold": 0.7, "harmful": ["hurt"]}
    # another factory on the command line: the file's arguments are not passed to it
    run = RunConfig.from_sources(config, model="tests.runs.toy_model:factory")
    assert run.model_args == {}
    via_file, via_flags = tmp_path / "a.sqlite", tmp_path / "b.sqlite"
    assert main(["certify", "--config", str(config), "--dataset", str(jsonl_dataset),
                 "--store", str(via_file), "--n0", "16", "--n", "200", "--alpha", "0.01",
                 "--max-tokens", "2", "--quiet"]) == 0
    assert certify(jsonl_dataset, via_flags, "--model", ENTRY, "--model-arg",
                   "threshold=0.6", "--model-arg", 'harmful=["hurt"]') == 0
    assert predictions(via_file) == predictions(via_flags)
    config.write_text(f'sigma = 0.25\n[model]\nentry = "{ENTRY}"\nthreshold = 1\n')
    with pytest.raises(ConfigError, match=r"\[model\] table takes entry"):
        RunConfig.from_sources(config)


def test_serve_checks_the_arguments_before_serving(capsys):
    code = main(["serve", "--model", ENTRY, "--model-arg", "treshold=1", "--sigma", "0.25",
                 "--keep-prob", "0.3"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "'treshold' is not an argument" in err and len(err.splitlines()) == 1


def test_serve_passes_the_arguments(monkeypatch):
    pytest.importorskip("fastapi")
    import hybridcert.serve.app as app

    served = {}
    monkeypatch.setattr(app, "run_server", lambda service, *a: served.update(service=service))
    assert main(["serve", "--model", ENTRY, "--model-arg", "threshold=0.6",
                 "--model-arg", "name=guarded", "--sigma", "0.25", "--keep-prob", "0.3",
                 "--image-size", "32"]) == 0
    service = served["service"]
    assert service.plan.adapter.name == "guarded"
    assert service.plan.config.model_args == {"threshold": 0.6, "name": "guarded"}


def test_quiet_prints_nothing_on_a_clean_run(jsonl_dataset, tmp_path, capsys):
    store = tmp_path / "q.sqlite"
    assert certify(jsonl_dataset, store, "--model", ENTRY, "--model-arg", "threshold=0.6") == 0
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""
    assert certify(jsonl_dataset, store, "--model", ENTRY, "--model-arg", "threshold=0.6",
                   quiet=False) == 0
    assert "already done" in capsys.readouterr().err
