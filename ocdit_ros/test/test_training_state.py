"""Run state lives in main's history, not its tree: tools/training_state.sh save / restore / check."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "tools" / "training_state.sh"
GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=GIT_ENV).stdout


def tool(repo: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(repo / "tools" / "training_state.sh"), *args], cwd=cwd or repo,
                          capture_output=True, text=True, env=GIT_ENV)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A small git repository with the tool and an empty STATE, like main after the state moved out."""
    root = tmp_path / "repo"
    (root / "tools").mkdir(parents=True)
    (root / "training").mkdir()
    shutil.copy(TOOL, root / "tools")
    (root / "training" / "STATE").write_text("# <commit> <folder>\n")
    (root / "README.md").write_text("x\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "start")
    return root


def make_run(path: Path, step: int, payload: bytes) -> Path:
    path.mkdir(parents=True)
    ckpt = f"checkpoint_{step:07d}.pt"
    (path / ckpt).write_bytes(payload)
    (path / "checkpoint_0000001.pt").write_bytes(b"an older checkpoint resuming does not need")
    (path / "last_checkpoint.txt").write_text(ckpt)
    (path / "log.jsonl").write_text('{"step": %d}\n' % step)
    (path / "model.safetensors").write_bytes(payload[::-1])
    return path


def test_save_keeps_the_state_in_history_not_the_tree_and_restore_returns_it(repo: Path, tmp_path: Path):
    run = make_run(tmp_path / "work" / "runs" / "coarse", 40, os.urandom(2048))
    (repo / "README.md").write_text("an unrelated change that must stay uncommitted\n")
    out = tool(repo, "save", "v9", str(run))
    assert out.returncode == 0, out.stderr

    # Two commits: the first holds the run, the second takes it out of the tree again.
    assert not (repo / "training" / "resume").exists()
    assert "training/resume" not in git(repo, "ls-files")
    assert git(repo, "status", "--porcelain").split() == ["M", "README.md"]
    commit, folder = (repo / "training" / "STATE").read_text().splitlines()[-1].split()
    assert folder == "training/resume/v9"
    assert git(repo, "rev-list", "--count", "HEAD") == "3\n"
    assert sorted(git(repo, "ls-tree", "--name-only", f"{commit}:{folder}/coarse").split()) == [
        "checkpoint_0000040.pt", "last_checkpoint.txt", "log.jsonl", "model.safetensors"]

    # Restore, from another folder with a relative destination: the same bytes.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tool(repo, "restore", "state", cwd=elsewhere)
    assert out.returncode == 0, out.stderr
    back = elsewhere / "state" / "v9" / "coarse"
    for name in ("checkpoint_0000040.pt", "last_checkpoint.txt", "log.jsonl", "model.safetensors"):
        assert (back / name).read_bytes() == (run / name).read_bytes()
    assert not (back / "checkpoint_0000001.pt").exists()


def test_a_second_save_of_the_same_name_replaces_its_line(repo: Path, tmp_path: Path):
    assert tool(repo, "save", "v9", str(make_run(tmp_path / "a" / "coarse", 10, b"first"))).returncode == 0
    assert tool(repo, "save", "v9", str(make_run(tmp_path / "b" / "coarse", 20, b"second"))).returncode == 0
    lines = [line for line in (repo / "training" / "STATE").read_text().splitlines() if not line.startswith("#")]
    assert len(lines) == 1
    out = tool(repo, "restore", str(tmp_path / "dest"))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "dest" / "v9" / "coarse" / "checkpoint_0000020.pt").read_bytes() == b"second"


def test_missing_commit_and_bad_runs_are_named(repo: Path, tmp_path: Path):
    not_a_run = tmp_path / "notes"
    not_a_run.mkdir()
    out = tool(repo, "save", "v9", str(not_a_run))
    assert out.returncode == 2 and "not a training run" in out.stderr
    with open(repo / "training" / "STATE", "a") as f:
        f.write("0123456789abcdef0123456789abcdef01234567 training/resume/v1\n")
    out = tool(repo, "restore", str(tmp_path / "dest"))
    assert out.returncode == 2
    assert "not in this clone" in out.stderr and "git fetch --unshallow" in out.stderr
    assert not (tmp_path / "dest").exists()


@pytest.mark.skipif(not (REPO / ".git").exists(), reason="not a git checkout (installed package)")
def test_the_committed_state_is_in_this_clone():
    """Every STATE line names a folder of main's history, each run in it resumable or exported."""
    out = subprocess.run(["bash", str(TOOL), "check"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for line in (REPO / "training" / "STATE").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        commit, folder = line.split()
        runs = git(REPO, "ls-tree", "-r", "--name-only", commit, folder).split()
        assert any(p.endswith("/model.safetensors") for p in runs), folder
        for marker in (p for p in runs if p.endswith("/last_checkpoint.txt")):
            ckpt = git(REPO, "show", f"{commit}:{marker}").strip()
            assert f"{marker.rsplit('/', 1)[0]}/{ckpt}" in runs
