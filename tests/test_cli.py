"""The ``jaxcompress`` command's manners: help, version, errors with suggestions, Ctrl-C, run
folders as SOURCE, data download, ``--check``, clean logs, file modes, one bench command."""

import functools
import gzip
import hashlib
import http.server
import json
import os
import signal
import stat
import subprocess
import sys
import threading

import numpy as np
import pytest

from jaxcompress import cli
from jaxcompress.cli import main
from jaxcompress.data import IDX_FILES, load_dataset, write_idx

MINI = """
[study]
name = "mini"
dataset = "mnist1d"
train_limit = 300
test_limit = 100
seed = 1

[student]
model = "mlp"
hidden = [16]
epochs = 1

[prune]
sparsity = 0.5
rounds = 1
epochs = 1

[quantize]
bits = 8

[edge]
enabled = false
"""

INTERRUPTED = "jaxcompress run: interrupted in stage prune; rerun the same command to resume"


def _cli(*args, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "jaxcompress.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory):
    """`jaxcompress run` interrupted by SIGINT in stage prune, then the same command again.

    Both runs write to pipes (stderr is not a terminal), as a run under nohup or CI would.
    """
    root = tmp_path_factory.mktemp("cli")
    (root / "mini.toml").write_text(MINI)
    args = ("run", "mini.toml", "--out", "out")
    old = os.umask(0o022)
    try:
        p = _cli(*args, cwd=root)
        lines = []
        for line in p.stderr:  # wait until the second stage is running, then press Ctrl-C
            lines.append(line)
            if "stage prune: running" in line:
                p.send_signal(signal.SIGINT)
                break
        rest_out, rest_err = p.communicate(timeout=120)
        first = (p.returncode, "".join(lines) + rest_err)
        q = _cli(*args, cwd=root)
        out, err = q.communicate(timeout=300)
        second = (q.returncode, out, err)
    finally:
        os.umask(old)
    return root / "out", first, second


def test_bare_command_prints_help_and_trains_nothing(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: jaxcompress")
    for cmd in ("run", "recipes", "inspect", "bench", "export", "data", "train"):
        assert f"    {cmd} " in out
    assert "(default)" not in out  # `train` is a command like the others
    assert "--epochs" not in out  # training options belong to `train`


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("jaxcompress ") and out.split()[1][0].isdigit()


def test_misspelled_recipe_suggests_names(capsys):
    assert main(["run", "deep_compresion_lenet300100"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'deep_compression_lenet300100'" in err
    assert "`jaxcompress recipes`" in err and len(err.strip().splitlines()) == 1
    assert main(["run", "zzzz_qqqq"]) == 2  # nothing close: no suggestion, still the pointer
    err = capsys.readouterr().err
    assert "did you mean" not in err and "`jaxcompress recipes`" in err


def test_keyboard_interrupt_is_one_line_exit_130(monkeypatch, capsys):
    from jaxcompress._core import StageInterrupted

    def interrupted(*a, **k):
        raise StageInterrupted("distill")

    monkeypatch.setattr("jaxcompress.study.run_study", interrupted)
    assert main(["run", "--quiet"]) == 130
    err = capsys.readouterr().err
    assert (
        err == "jaxcompress run: interrupted in stage distill; rerun the same command to resume\n"
    )

    def plain(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("jaxcompress.study.run_study", plain)
    assert main(["run", "--quiet"]) == 130
    assert capsys.readouterr().err == (
        "jaxcompress run: interrupted; rerun the same command to resume\n"
    )


def test_sigint_names_the_stage_and_rerun_resumes(resumed_run):
    out, (code, err), (code2, out2, err2) = resumed_run
    assert code == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == INTERRUPTED
    assert (out / "stages" / "student.json").is_file()
    assert code2 == 0, err2
    assert "stage student: already finished" in err2 and "stage prune: running" in err2
    assert "report.md" in out2


def test_logs_have_no_bars_or_escape_codes(resumed_run):
    _, (_, err), (_, _, err2) = resumed_run
    for text in (err, err2):
        assert "\r" not in text and "\x1b" not in text
    assert all(line.startswith("[jaxcompress run] ") for line in err2.strip().splitlines())


def test_run_outputs_are_0644(resumed_run):
    out, _, _ = resumed_run
    files = [os.path.join(d, f) for d, _, fs in os.walk(out) for f in fs]
    assert len(files) >= 10 and any(f.endswith(".png") for f in files)
    modes = {f: stat.S_IMODE(os.stat(f).st_mode) for f in files}
    assert all(m == 0o644 for m in modes.values()), modes


def test_inspect_bench_export_take_a_run_folder(resumed_run, tmp_path, capsys):
    out, _, _ = resumed_run
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"artifact {out / 'model.jcx'}:" in text and "checksums verified" in text
    assert main(["inspect", str(out), "--stage", "prune", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["artifact"] == str(out / "artifacts" / "prune.jcx")
    rep = tmp_path / "bench.json"
    args = ["bench", str(out), "--stage", "student", "--iters", "3", "--warmup", "1"]
    assert main([*args, "--device", "rpi4", "--json", str(rep)]) == 0
    assert "rpi4" in capsys.readouterr().out
    assert json.loads(rep.read_text())["artifact"] == str(out / "artifacts" / "student.jcx")
    assert stat.S_IMODE(rep.stat().st_mode) & 0o044 == 0o044  # readable by others, not 0600
    copy = tmp_path / "final.jcx"
    assert main(["export", str(out), "--out", str(copy)]) == 0
    assert copy.read_bytes() == (out / "model.jcx").read_bytes()


def test_unknown_stage_lists_the_stages(resumed_run, capsys):
    out, _, _ = resumed_run
    for cmd in ("export", "inspect", "bench"):
        extra = ["--out", "x.jcx"] if cmd == "export" else []
        assert main([cmd, str(out), "--stage", "prunne", *extra]) == 2
        err = capsys.readouterr().err
        assert f"jaxcompress {cmd}: error:" in err and "no artifact for stage 'prunne'" in err
        assert "did you mean 'prune'?" in err
        assert "stages with artifacts: prune, quantize, student" in err
    assert main(["inspect", str(out / "stages")]) == 2
    assert "not a jaxcompress run" in capsys.readouterr().err


def _idx_folder(path, n_train=30, n_test=10, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for k, a in arrays.items():
        write_idx(path / (IDX_FILES[k] + ".gz"), a)
    return arrays


class _Server:
    """A local HTTP mirror serving a folder; counts the files it served."""

    def __init__(self, folder):
        self.hits = []
        hits = self.hits

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *a):
                hits.append(self.path)

        handler = functools.partial(Handler, directory=str(folder))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _md5s(folder):
    return {
        f.name: "md5:" + hashlib.md5(f.read_bytes(), usedforsecurity=False).hexdigest()
        for f in folder.iterdir()
    }


def test_data_download_checksummed_and_atomic(tmp_path, monkeypatch, capsys):
    from jaxcompress.data import _idx

    mirror = tmp_path / "mirror"
    arrays = _idx_folder(mirror)
    monkeypatch.setitem(_idx.CHECKSUMS, "mnist", _md5s(mirror))
    dest = tmp_path / "data" / "mnist"
    with _Server(mirror) as srv:
        assert main(["data", "download", "mnist", "--to", str(dest), "--mirror", srv.url]) == 0
        assert len(srv.hits) == 4
        assert sorted(os.listdir(dest)) == sorted(f.name for f in mirror.iterdir())
        ds = load_dataset("mnist", data_dir=dest)
        np.testing.assert_array_equal(ds.y_test, arrays["test_labels"])
        assert all(stat.S_IMODE(f.stat().st_mode) == 0o644 for f in dest.iterdir())
        assert f"--dataset mnist --data-dir {dest}" in capsys.readouterr().out
        # a second download keeps the verified files and fetches nothing
        assert main(["data", "download", "mnist", "--to", str(dest), "--mirror", srv.url]) == 0
        assert len(srv.hits) == 4 and capsys.readouterr().err.count("checksum ok") == 4
        # a damaged local file is fetched again
        victim = dest / "t10k-labels-idx1-ubyte.gz"
        victim.write_bytes(b"damaged")
        assert main(["data", "download", "mnist", "--to", str(dest), "--mirror", srv.url]) == 0
        assert len(srv.hits) == 5 and victim.read_bytes() == (mirror / victim.name).read_bytes()


def test_data_download_refuses_bad_files_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    from jaxcompress.data import _idx

    mirror = tmp_path / "mirror"
    _idx_folder(mirror)
    sums = _md5s(mirror)
    dest = tmp_path / "dest"
    # the mirror's file differs from the published digest
    monkeypatch.setitem(
        _idx.CHECKSUMS,
        "fashion_mnist",
        dict(sums, **{"train-images-idx3-ubyte.gz": "md5:" + "0" * 32}),
    )
    with _Server(mirror) as srv:
        args = ["data", "download", "fashion_mnist", "--to", str(dest), "--mirror", srv.url]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "train-images-idx3-ubyte.gz has md5:" in err and "nothing written" in err
        assert not dest.exists() or os.listdir(dest) == []
        # right digest but not an IDX file (a mirror serving an HTML error page, say)
        (mirror / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"<html>oops</html>"))
        monkeypatch.setitem(_idx.CHECKSUMS, "fashion_mnist", _md5s(mirror))
        assert main(args) == 2
        assert "not an unsigned-byte IDX file" in capsys.readouterr().err
        assert not dest.exists() or os.listdir(dest) == []
        # a file missing on the mirror: the error names the URL
        os.remove(mirror / "train-images-idx3-ubyte.gz")
        assert main(args) == 2
        assert "404" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: not a dataset with IDX files
        main(["data", "download", "cifar", "--to", str(dest)])


def test_check_verifies_the_data_folder(tmp_path, capsys):
    recipe = "deep_compression_lenet300100"
    assert main(["run", recipe, "--check"]) == 2
    err = capsys.readouterr().err
    assert "needs its IDX folder" in err and "jaxcompress data download mnist" in err
    assert main(["run", recipe, "--check", "--data-dir", str(tmp_path / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["run", recipe, "--check", "--data-dir", str(tmp_path)]) == 2
    assert "lacks train-images-idx3-ubyte" in capsys.readouterr().err
    _idx_folder(tmp_path)
    assert main(["run", recipe, "--check", "--data-dir", str(tmp_path)]) == 0
    assert f"valid ({recipe}); dataset mnist in {tmp_path}" in capsys.readouterr().out
    assert main(["run", "--check"]) == 0  # MNIST-1D needs no folder
    assert "generated offline" in capsys.readouterr().out


def test_one_bench_command(monkeypatch, tmp_path):
    """`jaxcompress bench` is the only artifact-benchmark command; its defaults are those of a
    study's [edge] section, and it calls the edge package's public `benchmark`."""
    import importlib.util

    from jaxcompress.study import SCHEMA

    assert importlib.util.find_spec("jaxcompress.edge._cli") is None  # the duplicate is gone
    calls = []

    def fake(path, **kw):
        calls.append((path, kw))

        class R:
            def to_markdown(self):
                return "report"

            def to_json(self):
                return "{}"

        return R()

    monkeypatch.setattr("jaxcompress.edge.benchmark", fake)
    art = tmp_path / "a.jcx"
    art.write_bytes(b"x")
    assert main(["bench", str(art)]) == 0
    ((path, kw),) = calls
    assert path == str(art)
    edge = SCHEMA["edge"]
    assert [d.name for d in kw["devices"]] == list(edge["devices"].default)
    assert kw["split_edge"].name == edge["split_edge"].default
    assert kw["num_threads"] == edge["threads"].default
    assert (kw["warmup"], kw["iters"]) == (edge["warmup"].default, edge["iters"].default)
    assert cli.BENCH_DEFAULTS["limit"] == edge["eval_limit"].default
    assert cli.BENCH_DEFAULTS["rtt_ms"] == edge["rtt_ms"].default


def test_train_command(capsys):
    assert main(["train", "--epochs", "1", "--model", "mlp1d", "--json", "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dataset"] == "mnist1d" and out["model"] == "mlp1d"
    assert 0.0 <= out["test_accuracy"] <= 1.0 and out["epochs"] == 1
    assert main(["train", "--model", "lenet5"]) == 2
    assert "does not fit --dataset 'mnist1d'" in capsys.readouterr().err


def test_cli_reports_data_errors(capsys, tmp_path):
    assert main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and "jaxcompress data download mnist" in err
