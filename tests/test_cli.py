import json

from jaxcompress.cli import main


def test_cli_trains_default_model_and_prints_accuracy(capsys):
    assert main(["--epochs", "2", "--json", "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dataset"] == "mnist1d" and out["model"] == "cnn1d"
    assert 0.0 <= out["test_accuracy"] <= 1.0 and out["epochs"] == 2


def test_cli_reports_data_errors(capsys, tmp_path):
    assert main(["--dataset", "mnist", "--data-dir", str(tmp_path), "--no-progress"]) == 2
    assert "not found" in capsys.readouterr().err
