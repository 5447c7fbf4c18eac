"""What runs capture without code: git state and patch, environment, GPUs, containers, secrets."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from labvault.refs import Digest
from labvault.services.capture.environment import PRESENT, capture_environment
from labvault.services.capture.git import capture_git
from labvault.vault import Vault

FAKE_SMI = """#!/bin/sh
if [ "$1" = "--query-gpu=name,driver_version,memory.total,uuid" ]; then
  echo "NVIDIA A100-SXM4-40GB, 535.104.05, 40960, GPU-1111"
  echo "NVIDIA A100-SXM4-40GB, 535.104.05, 40960, GPU-2222"
  exit 0
fi
echo "| NVIDIA-SMI 535.104.05   Driver Version: 535.104.05   CUDA Version: 12.2 |"
"""


def _git(root: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@e",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@e",
    }
    return subprocess.run(["git", *args], cwd=root, env=env, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q", "-b", "main")
    (root / "train.py").write_text("print('v1')\n")
    (root / ".gitignore").write_text("ignored.txt\n")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "first")
    _git(root, "remote", "add", "origin", "https://user:secret-token@example.com/team/repo.git")
    return root


def test_clean_repository(repo: Path) -> None:
    state = capture_git(repo)
    assert state.info["dirty"] is False
    assert state.patch is None
    assert state.info["branch"] == "main"
    assert state.info["commit"] == _git(repo, "rev-parse", "HEAD").strip()
    assert state.info["remote"] == "https://example.com/team/repo.git"  # credentials dropped
    assert state.warnings == []


def test_dirty_patch_restores_the_tree(repo: Path, tmp_path: Path) -> None:
    (repo / "train.py").write_text("print('v2')\n")
    (repo / "new_module.py").write_text("X = 1\n")
    (repo / "data.bin").write_bytes(bytes(range(256)))
    (repo / "ignored.txt").write_text("not part of the code\n")
    state = capture_git(repo / "")
    assert state.info["dirty"] is True
    assert state.patch
    text = state.patch.decode(errors="replace")
    assert "new_module.py" in text
    assert "train.py" in text
    assert "ignored.txt" not in text
    assert "GIT binary patch" in text or "Binary files" in text
    assert _git(repo, "status", "--porcelain").count("??") == 2  # the repository's own index is untouched
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    subprocess.run(["git", "apply", "-"], cwd=clone, input=state.patch, check=True)
    assert (clone / "train.py").read_text() == "print('v2')\n"
    assert (clone / "new_module.py").read_text() == "X = 1\n"
    assert (clone / "data.bin").read_bytes() == bytes(range(256))
    # The same tree again reuses the patch; a change makes a new one.
    assert capture_git(repo).patch == state.patch
    (repo / "new_module.py").write_text("X = 2\n")
    assert b"X = 2" in (capture_git(repo).patch or b"")


def test_not_a_repository_and_no_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, repo: Path) -> None:
    state = capture_git(tmp_path / "nowhere" if (tmp_path / "nowhere").mkdir() is None else tmp_path)
    assert state.info == {}
    assert "not in a git repository" in state.warnings[0]
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    state = capture_git(repo)
    assert state.info == {}
    assert "git executable was not found" in state.warnings[0]


def test_run_in_a_repository_records_git(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(repo)
    vault, _ = Vault.init(repo)
    try:
        run = vault.runs.create(name="x")
        vault.runs.finish(run.id)
        got = vault.runs.get(run.id)
        # `init` added .labvault/ to .gitignore: that change is in the patch.
        assert got.capture["git"]["dirty"] is True
        patch = vault.objects.get_bytes(Digest(got.capture["patch"][7:]))
        assert b".labvault/" in patch
        owners = vault.maintenance.owners_of(Digest(got.capture["patch"][7:]))
        assert owners == [got.ref]
    finally:
        vault.close()


def test_environment_with_gpus_container_and_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(FAKE_SMI)
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    sysroot = tmp_path / "root"
    (sysroot / "run").mkdir(parents=True)
    (sysroot / "proc" / "1").mkdir(parents=True)
    (sysroot / "etc").mkdir()
    (sysroot / ".dockerenv").write_text("")
    (sysroot / "run" / ".containerenv").write_text('engine="podman"\nimage="registry.example/team/train:1.4"\n')
    (sysroot / "proc" / "1" / "cgroup").write_text("0::/docker/abc\n")
    (sysroot / "proc" / "cpuinfo").write_text("model name\t: Test CPU 9000\n")
    (sysroot / "proc" / "meminfo").write_text("MemTotal:       1024 kB\n")
    (sysroot / "etc" / "os-release").write_text('PRETTY_NAME="Test Linux 1"\n')
    project = tmp_path / "proj"
    project.mkdir()
    (project / "requirements.txt").write_text("numpy==2.0\n")
    (project / "uv.lock").write_text("lock\n")
    environ = {
        "CUDA_VISIBLE_DEVICES": "0,1",
        "HF_TOKEN": "hf_supersecret",
        "NVIDIA_API_KEY": "nvapi-secret",
        "OMP_NUM_THREADS": "4",
        "UNRELATED": "x",
        "PATH": os.environ["PATH"],
    }
    data, warnings = capture_environment(project, sysroot=sysroot, environ=environ, cached=False)
    doc = json.loads(data)
    assert warnings == []
    assert doc["gpus"]["count"] == 2
    assert doc["gpus"]["cuda"] == "12.2"
    assert doc["gpus"]["driver"] == "535.104.05"
    assert doc["gpus"]["devices"][0]["name"] == "NVIDIA A100-SXM4-40GB"
    assert doc["container"]["image"] == "registry.example/team/train:1.4"
    assert "/.dockerenv" in doc["container"]["markers"]
    assert doc["cpu"]["model"] == "Test CPU 9000"
    assert doc["memory"] == 1024 * 1024
    assert doc["os"]["distribution"] == "Test Linux 1"
    assert set(doc["lock_files"]) == {"requirements.txt", "uv.lock"}
    assert doc["env"]["HF_TOKEN"] == PRESENT
    assert doc["env"]["NVIDIA_API_KEY"] == PRESENT
    assert doc["env"]["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert "UNRELATED" not in doc["env"]
    assert "supersecret" not in data.decode()
    assert "nvapi-secret" not in data.decode()
    # Canonical: the same environment gives the same bytes, so runs share one object.
    again, _ = capture_environment(project, sysroot=sysroot, environ=environ, cached=False)
    assert again == data


def test_broken_nvidia_smi_is_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    data, warnings = capture_environment(tmp_path, sysroot=tmp_path, environ={}, cached=False)
    assert json.loads(data)["gpus"] is None
    assert any("nvidia-smi exited 9" in w for w in warnings)


def _age(root: Path, seconds: float = 60) -> None:
    """Make every file and folder look old, so that the git state may be cached."""
    import time

    past = time.time() - seconds
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            os.utime(Path(dirpath) / name, (past, past), follow_symlinks=False)
    os.utime(root, (past, past))


def test_git_state_is_reused_until_something_changes(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from labvault.services.capture import git as git_capture

    (repo / "pkg").mkdir()
    (repo / "pkg" / "mod.py").write_text("A = 1\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "pkg")
    (repo / "train.py").write_text("print('v2')\n")  # dirty
    _age(repo)
    first = capture_git(repo)
    calls: list[list[str]] = []
    real = git_capture._git

    def counting(args, cwd, env=None):
        calls.append(args)
        return real(args, cwd, env)

    monkeypatch.setattr(git_capture, "_git", counting)
    again = capture_git(repo)
    assert calls == []  # nothing changed: no git process
    assert again.patch == first.patch
    assert again.info == first.info
    # The same size, another content and time: asked afresh.
    (repo / "train.py").write_text("print('v3')\n")
    _age(repo, 30)
    third = capture_git(repo)
    assert calls
    assert b"v3" in (third.patch or b"")
    # A new untracked file in a tracked folder's subfolder is seen too.
    calls.clear()
    assert capture_git(repo).patch == third.patch
    assert calls == []
    (repo / "pkg" / "deep").mkdir()
    (repo / "pkg" / "deep" / "new.py").write_text("B = 2\n")
    _age(repo, 20)
    assert b"new.py" in (capture_git(repo).patch or b"")
    assert calls


def test_a_failed_background_git_write_is_retried_at_finish_with_a_warning(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The git state of a run still going is written by a worker thread after a delay; when that
    write meets a locked database, the run's end writes it, and the run says what happened."""
    import threading

    from labvault.errors import LockedError
    from labvault.services.tracking import service as tracking_service

    monkeypatch.chdir(repo)
    monkeypatch.setattr(tracking_service, "_GIT_WRITE_DELAY", 0.01)
    (repo / "train.py").write_text("print('v2')\n")  # dirty: git runs on the worker
    vault, _ = Vault.init(repo)
    try:
        attempted = threading.Event()
        real = vault.runs.update_capture

        def locked_for_the_worker(run_id, update, *, refs=()):  # type: ignore[no-untyped-def]
            if threading.current_thread().name.startswith("labvault-git"):
                attempted.set()
                raise LockedError("the metadata database is busy (database is locked)")
            return real(run_id, update, refs=refs)

        monkeypatch.setattr(vault.runs, "update_capture", locked_for_the_worker)
        run = vault.runs.create(name="x")
        assert attempted.wait(30)
        vault.runs.finish(run.id)
        got = vault.runs.get(run.id)
        assert got.capture["git"]["commit"] == _git(repo, "rev-parse", "HEAD").strip()
        assert b"v2" in vault.objects.get_bytes(Digest(got.capture["patch"][7:]))
        (warning,) = [w for w in got.capture["warnings"] if w.startswith("git:")]
        assert "database is locked" in warning
        assert "written when the run ended" in warning
    finally:
        vault.close()


def _run_capture(vault: Vault) -> dict:  # type: ignore[type-arg]
    run = vault.runs.create(name="x")
    vault.runs.finish(run.id)
    return vault.runs.get(run.id).capture


def _patch_of(vault: Vault, capture: dict) -> bytes:  # type: ignore[type-arg]
    return vault.objects.get_bytes(Digest(capture["patch"][7:])) if capture.get("patch") else b""


def test_the_code_capture_leaves_out_every_path_the_lock_file_pins(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(repo)
    (repo / "data").mkdir()
    (repo / "data" / "raw.csv").write_text("a,b\n" + "1,2\n" * 1000)  # below the untracked limit
    (repo / "tracked.bin").write_bytes(b"t" * 100)
    _git(repo, "add", "tracked.bin")
    _git(repo, "commit", "-qm", "tracked data")
    (repo / "tracked.bin").write_bytes(b"T" * 100)  # a tracked file, modified, then pinned
    (repo / "train.py").write_text("print('v2')\n")
    vault, _ = Vault.init(repo)
    try:
        vault.data.add("raw", repo / "data")
        vault.data.add("blob", repo / "tracked.bin")
        capture = _run_capture(vault)
        patch = _patch_of(vault, capture)
        assert b"print('v2')" in patch, patch.decode()
        assert b"labvault.lock" in patch  # the pin itself is code
        assert b"b/data/raw.csv" not in patch
        assert b"b/tracked.bin" not in patch
        assert capture["git"]["left_out"] == {"pinned": ["data", "tracked.bin"], "untracked": []}
        # Data alone changed: the code is clean.
        _git(repo, "add", "-A")
        _git(repo, "commit", "-qm", "code")
        (repo / "data" / "raw.csv").write_text("changed\n")
        capture = _run_capture(vault)
        assert capture["git"]["dirty"] is False
        assert "patch" not in capture
    finally:
        vault.close()


def test_large_untracked_files_are_recorded_without_their_bytes(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    from labvault.errors import ValidationError

    monkeypatch.chdir(repo)
    big = bytes(range(256)) * (6 * 1024)  # 1.5 MiB
    (repo / "dump.bin").write_bytes(big)
    (repo / "helper.py").write_text("H = 1\n")
    vault, _ = Vault.init(repo)
    try:
        capture = _run_capture(vault)
        patch = _patch_of(vault, capture)
        assert b"helper.py" in patch
        assert b"dump.bin" not in patch
        assert len(patch) < 100_000
        entry = {"path": "dump.bin", "size": len(big), "sha256": f"sha256:{hashlib.sha256(big).hexdigest()}"}
        assert capture["git"]["left_out"] == {"pinned": [], "untracked": [entry]}
        (warning,) = [w for w in capture["warnings"] if "untracked" in w]
        assert "dump.bin" in warning
        assert "1048576 bytes" in warning
        # A higher limit in labvault.yaml takes the file into the patch again.
        (repo / "labvault.yaml").write_text("models: {}\ncapture:\n  max_untracked_size: 2 MiB\n")
        capture = _run_capture(vault)
        assert b"dump.bin" in _patch_of(vault, capture)
        assert "left_out" not in capture["git"]
        (repo / "labvault.yaml").write_text("capture:\n  max_untracked_size: lots\n")
        with pytest.raises(ValidationError, match=r"labvault.yaml:2: capture.max_untracked_size: 'lots'") as bad:
            vault.runs.create(name="x")
        assert bad.value.exit_code == 2
    finally:
        vault.close()


@pytest.mark.parametrize(
    ("text", "size"),
    [("1048576", 1048576), ("4 MiB", 4 * 2**20), ("500k", 500_000), ("1.5 GB", 1_500_000_000), ("0", 0)],
)
def test_max_untracked_size_units(tmp_path: Path, text: str, size: int) -> None:
    from labvault.services.capture.settings import max_untracked_size

    assert max_untracked_size(tmp_path) == 1024 * 1024  # no file: the default
    (tmp_path / "labvault.yaml").write_text(f"capture:\n  max_untracked_size: {text}\n")
    assert max_untracked_size(tmp_path) == size


def test_a_change_racily_clean_against_the_index_is_in_the_patch(repo: Path) -> None:
    """The patch is built on a copy of the index; the copy must keep the index's mtime, or git takes
    an entry whose stat still matches (a rewrite within one timestamp tick) for clean."""
    _git(repo, "config", "core.trustctime", "false")  # the ctime of the rewrite would tell git otherwise
    train = repo / "train.py"
    old = train.stat().st_mtime_ns - 100 * 10**9
    os.utime(train, ns=(old, old))
    _git(repo, "add", "train.py")  # the entry records the old mtime; the index is written now
    train.write_text("print('v9')\n")  # same size, same inode...
    os.utime(train, ns=(old, old))  # ...and the same mtime: only the content differs
    os.utime(repo / ".git" / "index", ns=(old, old))  # an index written in the same tick as that mtime
    state = capture_git(repo)
    assert state.info["dirty"] is True  # git status re-reads the racily clean entry
    assert b"print('v9')" in (state.patch or b"")


def test_a_malformed_lock_file_costs_a_warning_not_the_run(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(repo)
    vault, _ = Vault.init(repo)
    try:
        (repo / "labvault.lock").write_text("{not json")
        capture = _run_capture(vault)
        assert capture["git"]["commit"]
        (warning,) = [w for w in capture["warnings"] if "labvault.lock" in w]
        assert warning.startswith("git: the patch may hold pinned data:")
    finally:
        vault.close()


def test_capture_settings_are_read_through_the_bounded_loader(tmp_path: Path) -> None:
    """labvault.yaml is untrusted input: the capture reader refuses what the one safe loader refuses."""
    from labvault.errors import ValidationError
    from labvault.safeload import MAX_FILE_BYTES
    from labvault.services.capture.settings import max_untracked_size

    bomb = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    bomb += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    (tmp_path / "labvault.yaml").write_text("\n".join(bomb) + "\ncapture:\n  max_untracked_size: 2 MiB\n")
    with pytest.raises(ValidationError, match=r"^labvault.yaml:\d+: aliases expand"):
        max_untracked_size(tmp_path)
    (tmp_path / "labvault.yaml").write_text("capture:\n  max_untracked_size: 2 MiB\n" + "#" * MAX_FILE_BYTES)
    with pytest.raises(ValidationError, match=r"^labvault\.yaml"):
        max_untracked_size(tmp_path)
