"""The package: its console command `aligntds` (each subcommand exactly its script's flags, running the script), a wheel
built and installed here without downloading anything (the templates ship, the command runs a real pipeline from it),
`import aligntds` without torch, and pyproject's dependencies against requirements.txt."""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from setuptools.config.pyprojecttoml import load_file

from aligntds import __version__
from aligntds.cli.logit_analysis import main as logit_analysis
from aligntds.cli.main import COMMANDS, main, make_parser
from aligntds.store import load_records
from helpers import REPO, assert_same_records, one_error_line

TEMPLATES = sorted(p.name for p in (REPO / "src/aligntds/templates").iterdir())


def described(parser) -> list[tuple]:
    """Everything argparse knows of a parser's flags."""
    return [(a.option_strings, a.dest, a.default, a.required, a.nargs, a.choices, a.type, type(a).__name__, a.metavar, a.help)
            for a in parser._actions]


def help_body(text: str) -> str:
    """A help text without its usage block (the one place the program's name shows)."""
    return text.split("\n\n", 1)[1]


def subparser(top, name):
    return next(a for a in top._actions if a.dest == "command").choices[name]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_subcommand_has_exactly_its_scripts_flags(name):
    module, _, line = COMMANDS[name]
    script = importlib.import_module(f"aligntds.cli.{module}").make_parser()
    sub = subparser(make_parser(name), name)
    assert described(sub) == described(script)
    assert help_body(sub.format_help()) == help_body(script.format_help())
    assert sub.format_usage().startswith(f"usage: aligntds {name} ")
    assert f"({script.prog})" in line  # `aligntds --help` names the script each command is


def test_the_command_lists_every_stage_and_runs_a_script(capsys, tmp_path, data_file, pair_llama):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    listed = capsys.readouterr().out
    for name in ("score", "merge", "prep", "html", "generate", "compare", "findings", "get-smollm2", "build-demo-pair"):
        assert re.search(rf"^    {name}\b", listed, re.M), name
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"aligntds {__version__}"

    # A subcommand is its script: the same records, the same one-line errors and exit status.
    args = ["--data_file", str(data_file), "--pair", "t", "--mode", "i2i", "--aligned_model", str(pair_llama["aligned"])]
    assert main(["score", *args, "--logits_folder", str(tmp_path / "command")]) == 0
    assert logit_analysis([*args, "--logits_folder", str(tmp_path / "script")]) == 0
    assert_same_records(load_records(tmp_path / "command/t-i2i.[0:7].pkl"), load_records(tmp_path / "script/t-i2i.[0:7].pkl"))
    assert main(["merge", str(tmp_path / "none"), "t", "i2i"]) == 2
    one_error_line(capsys, "no such folder")
    with pytest.raises(SystemExit) as bad:
        main(["score", "--mode", "x2y"])
    assert bad.value.code == 2


def test_import_aligntds_and_the_command_help_load_no_heavy_module():
    code = ("import sys, aligntds; from aligntds.cli.main import make_parser; make_parser().format_help(); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers', 'numpy', 'pandas', 'pyarrow'}))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO / "src", check=True)
    assert run.stdout.strip() == "[]"


def _requirements(path: Path) -> dict[str, Requirement]:
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    reqs = [Requirement(line) for line in lines if line and not line.startswith("-")]
    return {r.name: r for r in reqs}


def test_pyproject_dependencies_are_the_requirements():
    project = load_file(REPO / "pyproject.toml")["project"]
    deps = {r.name: r for r in map(Requirement, project["dependencies"])}
    pinned = _requirements(REPO / "requirements.txt")
    assert set(deps) == set(pinned)
    for name, req in pinned.items():
        if name == "torch":  # pinned there, a range here that the pin satisfies
            (spec,) = req.specifier
            assert spec.operator == "==" and deps[name].specifier.contains(spec.version)
        else:
            assert deps[name].specifier == req.specifier, name
    dev = _requirements(REPO / "requirements-dev.txt")
    extras = project["optional-dependencies"]
    for extra in ("datasets", "peft"):
        (req,) = map(Requirement, extras[extra])
        assert dev[req.name].specifier == req.specifier


@pytest.mark.slow
def test_a_wheel_built_here_installs_and_its_command_runs_the_pipeline(tmp_path, data_file, pair_llama):
    """Build a wheel offline (the virtualenv's own setuptools; --no-index: nothing downloaded) from a copy of the package's
    sources, check that its dependencies and extras need nothing this environment lacks, install it (not editable) into a
    folder, and run its `aligntds` from a folder that is no checkout."""
    source = tmp_path / "source"
    (source / "src").mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "src/aligntds", source / "src/aligntds", ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    built = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp_path / "dist"),
                            str(source)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("aligntds-*.whl")
    assert wheel.name == f"aligntds-{__version__}-py3-none-any.whl"
    names = zipfile.ZipFile(wheel).namelist()
    assert [n for n in names if n.startswith("aligntds/templates/")] == [f"aligntds/templates/{t}" for t in TEMPLATES]
    assert {n.split("/")[0] for n in names} == {"aligntds", f"aligntds-{__version__}.dist-info"}  # not the scripts' shims
    entry = zipfile.ZipFile(wheel).read(f"aligntds-{__version__}.dist-info/entry_points.txt").decode()
    assert "aligntds = aligntds.cli.main:main" in entry
    # The project's dependencies and extras are met by this environment: nothing else would be installed, and nothing
    # is downloaded (--no-index).
    report = tmp_path / "report.json"
    dry = subprocess.run([*pip, "install", "--dry-run", "--no-index", "--no-build-isolation", "--report", str(report),
                          f"{source}[datasets,peft]"], capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert [x["metadata"]["name"] for x in json.loads(report.read_text())["install"]] == ["aligntds"]
    site = tmp_path / "site"
    installed = subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
                               capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr[-3000:]

    work = tmp_path / "work"  # no checkout here: src/ is not on the path, the package comes from site/
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}

    def aligntds(*args):
        run = subprocess.run([str(site / "bin" / "aligntds"), *map(str, args)], capture_output=True, text=True, cwd=work, env=env)
        assert run.returncode == 0, run.stderr[-3000:]
        return run.stdout

    where = subprocess.run([sys.executable, "-c", "import aligntds; print(aligntds.__file__)"], capture_output=True, text=True,
                           cwd=work, env=env, check=True).stdout.strip()
    assert Path(where) == site / "aligntds" / "__init__.py"
    assert "score" in aligntds("--help") and aligntds("--version").strip() == f"aligntds {__version__}"
    script = subprocess.run([sys.executable, str(REPO / "src/logit_analysis.py"), "--help"], capture_output=True, text=True,
                            env={**os.environ, "COLUMNS": "100"}, check=True).stdout
    env["COLUMNS"] = "100"
    assert help_body(aligntds("score", "--help")) == help_body(script)

    aligntds("score", "--data_file", data_file, "--logits_folder", "shards", "--pair", "t", "--mode", "pair", "--enable_template",
             "--aligned_model", pair_llama["aligned"], "--base_model", pair_llama["base"])
    aligntds("prep", "t", "shards/t-pair.[0:7].pkl", "--out", "prep/t.pkl", "--parquet", "tables")
    aligntds("html", "t", "--data", "prep/t.pkl", "--out", "pages")
    css = (REPO / "src/aligntds/templates/style.css").read_text().strip().splitlines()[0]
    assert css in (work / "pages/summary.html").read_text()  # the page was made from the installed templates
    assert (work / "pages/0.html").is_file()
    import pyarrow.parquet as pq

    meta = json.loads(pq.read_schema(work / "tables/positions.parquet").metadata[b"aligntds"])
    assert meta["written_by"] == {"version": __version__, "git": None}  # an installed copy is not a checkout
    assert meta["provenance"]["aligned"]["version"] == __version__ and meta["provenance"]["aligned"]["git"] is None
