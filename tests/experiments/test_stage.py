"""One reuse rule: a Stage is reused only when its settings and its inputs' records match; a rebuilt stage
rebuilds everything downstream of it; a crash mid-build leaves no record, so the stage is rebuilt."""

from __future__ import annotations

import json

import pytest

from grace.errors import GraceError
from grace.experiments.stage import RunContext, Stage, StageTimer, ensure, matches


def chain(tmp_path, builds: list[str], *, seed: int = 0, data: str = "abc", crash: str = ""):
    """data.txt → upper (settings: seed) → count: three stages whose builds are appended to ``builds``."""
    source = tmp_path / "data.txt"
    if not source.is_file() or source.read_text() != data:
        source.write_text(data)

    def writer(name, text_of):
        def build(folder):
            builds.append(name)
            folder.mkdir(parents=True)
            (folder / "out.txt").write_text("partial")
            if crash == name:
                raise RuntimeError("killed mid-build")
            (folder / "out.txt").write_text(text_of())
            return (folder / "out.txt").read_text()
        return build

    def read(folder):
        return (folder / "out.txt").read_text()

    upper = Stage("upper", tmp_path / "upper", writer("upper", lambda: source.read_text().upper() + str(seed)), read,
                  settings={"seed": seed}, inputs={"data": source})
    count = Stage("count", tmp_path / "count", writer("count", lambda: str(len(read(upper.folder)))), read,
                  inputs={"upper": upper.folder})
    return upper, count


def run_chain(tmp_path, ctx: RunContext, **kwargs) -> tuple[list[str], str]:
    builds: list[str] = []
    upper, count = chain(tmp_path, builds, **kwargs)
    ctx.stage(upper)
    return builds, ctx.stage(count)


def test_a_stage_is_reused_only_while_its_settings_and_inputs_match(tmp_path, capsys):
    ctx = lambda **kw: RunContext(tmp_path, StageTimer(), **kw)
    assert run_chain(tmp_path, ctx()) == (["upper", "count"], "4")
    recorded = json.loads((tmp_path / "upper" / "stage.json").read_text())["build_s"]
    timer = StageTimer()
    assert run_chain(tmp_path, RunContext(tmp_path, timer)) == ([], "4") and timer.skipped == {"upper", "count"}
    assert timer.build_seconds["upper"] == recorded  # a reused stage reports what its build took
    builds, _ = run_chain(tmp_path, ctx(), seed=1)  # a setting: the stage and its downstream
    assert builds == ["upper", "count"] and "[upper] stale (seed=0, now 1): rebuilding" in capsys.readouterr().out
    builds, out = run_chain(tmp_path, ctx(), seed=1, data="abcdef")  # an input file
    assert builds == ["upper", "count"] and out == "7"
    assert "input data changed" in capsys.readouterr().out
    assert run_chain(tmp_path, ctx(), seed=1, data="abcdef")[0] == []


def test_forcing_a_stage_rebuilds_it_and_everything_downstream(tmp_path):
    run_chain(tmp_path, RunContext(tmp_path))
    assert run_chain(tmp_path, RunContext(tmp_path, force=("count",)))[0] == ["count"]
    assert run_chain(tmp_path, RunContext(tmp_path, force=("upper",)))[0] == ["upper", "count"]
    assert run_chain(tmp_path, RunContext(tmp_path, force=("all",)))[0] == ["upper", "count"]
    assert run_chain(tmp_path, RunContext(tmp_path))[0] == []
    assert matches("build/clip_faiss/heads", ["build/clip_faiss"]) and not matches("build/clip_faiss_expanded",
                                                                                     ["build/clip_faiss"])


def test_a_stage_killed_mid_build_is_rebuilt_on_the_next_run(tmp_path):
    with pytest.raises(RuntimeError, match="killed"):
        run_chain(tmp_path, RunContext(tmp_path), crash="count")
    assert (tmp_path / "count" / "out.txt").read_text() == "partial" and not (tmp_path / "count" / "stage.json").exists()
    assert run_chain(tmp_path, RunContext(tmp_path)) == (["count"], "4")  # upper was finished: reused


def test_a_resumable_stage_continues_an_interrupted_build_made_for_the_same_record(tmp_path):
    calls = []

    def stage(steps, crash=False):
        def build(folder):
            done = sorted(p.name for p in folder.iterdir() if p.name.startswith("step"))
            calls.append(done)
            for step in range(len(done), steps):
                if crash and step == 2:
                    raise RuntimeError("killed mid-build")
                (folder / f"step{step}").write_text("")
            return steps
        return Stage("train", tmp_path / "train", build, lambda f: steps, settings={"steps": steps, "out": tmp_path},
                     resumable=True)

    with pytest.raises(RuntimeError):
        ensure(stage(4, crash=True))
    assert ensure(stage(4)) == 4 and calls[-1] == ["step0", "step1"]  # resumed from the two finished steps
    record = json.loads((tmp_path / "train" / "stage.json").read_text())
    assert record["settings"] == {"steps": 4, "out": str(tmp_path)} and len(record["built"]) == 32
    assert not (tmp_path / "train" / "stage.building.json").exists()
    with pytest.raises(RuntimeError):
        ensure(stage(6, crash=True), force=("train",))  # forced: from scratch
    assert calls[-1] == []
    ensure(stage(5))  # interrupted for another record (steps 6): started again, not resumed
    assert calls[-1] == [] and ensure(stage(5)) == 5 and len(calls) == 4


def test_a_missing_input_names_the_stage_that_has_not_run(tmp_path):
    stage = Stage("s", tmp_path / "s", lambda f: f.mkdir(), lambda f: None, inputs={"ids": tmp_path / "ids"})
    with pytest.raises(GraceError, match="ids: a stage's input is missing"):
        ensure(stage)


def test_a_group_is_built_when_any_stage_inside_was(tmp_path):
    timer = StageTimer()
    ctx = RunContext(tmp_path, timer)
    with timer.group("both"):
        run_chain(tmp_path, ctx)
    assert "both" not in timer.skipped and timer.seconds["both"] >= 0
    with timer.group("both"):
        run_chain(tmp_path, ctx)
    assert "both" in timer.skipped
