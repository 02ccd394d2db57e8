"""`hanzocloud replicate restore`: latest and point-in-time restores, and every refusal."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import pytest

from conftest import hanzocloud_cmd, make_settings, subprocess_env
from hanzocloud.keys import resolve_master_key
from hanzocloud.replicate import objects, with_dev_sink

from .conftest import add_notes, replicated, rows, settled
from .test_server import key_file


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*hanzocloud_cmd(), *args], capture_output=True, text=True,
                          env=subprocess_env(), timeout=60)


@pytest.fixture
def shipped(tmp_path: Path) -> dict[str, object]:
    """A sink holding acme/alpha with three moments: after a1, after b1, after c1."""
    key = key_file(tmp_path)
    master = resolve_master_key(f"file:{key}")
    url = f"file://{tmp_path / 'sink'}"
    moments: list[float] = []

    async def fill() -> None:
        async with replicated(tmp_path / "source", url, master) as (store, replicator):
            for body in ("a1", "b1", "c1"):
                await add_notes(store, "acme", [body])
                await settled(replicator, "acme")
                moments.append(time.time())
                await asyncio.sleep(0.1)

    asyncio.run(fill())
    return {"key": key, "master": master, "url": url, "moments": moments,
            "flags": [f"--kms-master-key-ref=file:{key}", f"--replicate-url={url}",
                      f"--data-dir={tmp_path / 'data'}"]}


def test_restore_latest_and_points_in_time(tmp_path: Path, shipped: dict[str, object]) -> None:
    flags, moments = shipped["flags"], shipped["moments"]
    assert isinstance(flags, list) and isinstance(moments, list)
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moments[1])) + \
        f".{int(moments[1] % 1 * 1000):03d}Z"
    cases = [("latest", [], ["a1", "b1", "c1"]),
             ("unix-seconds", [f"--to={moments[0]}"], ["a1"]),
             ("iso-8601", [f"--to={iso}"], ["a1", "b1"])]
    for name, extra, expected in cases:
        out = tmp_path / name / "alpha.db"
        result = run_cli("replicate", "restore", "--org=acme", "--service=alpha",
                         f"--output={out}", *extra, *flags)
        assert result.returncode == 0, (name, result.stderr)
        assert "quick_check ok" in result.stdout
        assert rows(out, shipped["master"], "acme") == expected, name  # type: ignore[arg-type]


def test_restore_into_the_data_dir_with_globals_first(shipped: dict[str, object],
                                                      tmp_path: Path) -> None:
    flags = shipped["flags"]
    assert isinstance(flags, list)
    result = run_cli(*flags, "replicate", "restore", "--org", "acme", "--service", "alpha")
    assert result.returncode == 0, result.stderr
    target = tmp_path / "data" / "orgs" / "acme" / "alpha.db"
    assert rows(target, shipped["master"], "acme") == ["a1", "b1", "c1"]  # type: ignore[arg-type]
    again = run_cli("replicate", "restore", "--org=acme", "--service=alpha", *flags)
    assert again.returncode == 2 and "--force" in again.stderr
    forced = run_cli("replicate", "restore", "--org=acme", "--service=alpha", "--force", *flags)
    assert forced.returncode == 0, forced.stderr
    assert list(target.parent.glob("alpha.db.superseded-*"))


def _tamper(shipped: dict[str, object]) -> None:
    sink_dir = Path(str(shipped["url"]).removeprefix("file://")) / "replicate" / "acme" / "alpha"
    segment = sorted((sink_dir / generations_of(sink_dir)[0] / "wal").iterdir())[0]
    blob = segment.read_bytes()
    segment.write_bytes(blob[:-10] + bytes([blob[-10] ^ 1]) + blob[-9:])


def generations_of(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if objects.GENERATION_RE.match(p.name))


REFUSALS = [
    ("no-sink", ["--org=acme", "--service=alpha"], False, 2, "no replication sink"),
    ("bad-org", ["--org=Not A Slug", "--service=alpha"], True, 2, "invalid org slug"),
    ("bad-service", ["--org=acme", "--service=../x"], True, 2, "invalid service name"),
    ("bad-moment", ["--org=acme", "--service=alpha", "--to=yesterday"], True, 2,
     "neither unix seconds"),
    ("nothing-shipped", ["--org=initech", "--service=alpha"], True, 1, "has nothing"),
    ("before-history", ["--org=acme", "--service=alpha", "--to=1000"], True, 1, "has nothing"),
    ("missing-org", ["--service=alpha"], True, 2, "--org"),
    ("empty-org", ["--org=", "--service=alpha"], True, 2, "--org: empty"),
    ("nan-moment", ["--org=acme", "--service=alpha", "--to=nan"], True, 2,
     "neither unix seconds"),
    ("infinite-moment", ["--org=acme", "--service=alpha", "--to=1e400"], True, 2,
     "neither unix seconds"),
]


@pytest.mark.parametrize(("args", "with_sink", "status", "message"),
                         [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_refusals(tmp_path: Path, shipped: dict[str, object], args: list[str], with_sink: bool,
                  status: int, message: str) -> None:
    flags = shipped["flags"]
    assert isinstance(flags, list)
    used = flags if with_sink else [f for f in flags if not f.startswith("--replicate-url")]
    result = run_cli("replicate", "restore", f"--output={tmp_path / 'o' / 'x.db'}", *args, *used)
    assert result.returncode == status, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "o" / "x.db").exists()


def test_output_must_be_a_file_path(tmp_path: Path, shipped: dict[str, object]) -> None:
    flags = shipped["flags"]
    assert isinstance(flags, list)
    folder = tmp_path / "a-folder"
    folder.mkdir()
    (tmp_path / "a-file").write_text("x")
    for output, message in ((folder, "is a directory"), (tmp_path / "a-file" / "x.db",
                                                         "cannot create")):
        result = run_cli("replicate", "restore", "--org=acme", "--service=alpha", "--force",
                         f"--output={output}", *flags)
        assert result.returncode == 2 and message in result.stderr, result.stderr
    assert folder.is_dir() and (tmp_path / "a-file").read_text() == "x"


def _data_file(shipped: dict[str, object]) -> Path:
    flags = shipped["flags"]
    assert isinstance(flags, list)
    assert run_cli("replicate", "restore", "--org=acme", "--service=alpha", *flags).returncode == 0
    data = Path(next(f for f in flags if f.startswith("--data-dir=")).split("=", 1)[1])
    return data / "orgs" / "acme" / "alpha.db"


def test_a_forced_restore_that_fails_leaves_the_file_in_place(
        tmp_path: Path, shipped: dict[str, object]) -> None:
    target = _data_file(shipped)
    before = target.read_bytes(), target.with_name("alpha.db.dek").read_bytes()
    flags = [f for f in shipped["flags"] if not f.startswith("--replicate-url")]  # type: ignore[attr-defined]
    empty = f"--replicate-url=file://{tmp_path / 'empty-sink'}"  # a typo'd sink, say
    result = run_cli("replicate", "restore", "--org=acme", "--service=alpha", "--force", empty,
                     *flags)
    assert result.returncode == 1 and "has nothing" in result.stderr
    assert (target.read_bytes(), target.with_name("alpha.db.dek").read_bytes()) == before
    # Nothing staged is left behind (the file's own -wal and -shm outlive its connections).
    assert sorted(p.name for p in target.parent.iterdir()
                  if not p.name.endswith(("db-wal", "db-shm"))) == ["alpha.db", "alpha.db.dek"]
    assert not list(target.parent.glob(".*"))


def test_a_restore_into_a_data_dir_in_use_is_refused(shipped: dict[str, object]) -> None:
    target = _data_file(shipped)
    before = target.read_bytes()
    # Another process holds the data dir as a server does (its shared lock on keys/lock).
    holder = subprocess.Popen(
        [*hanzocloud_cmd()[:1], "-c", "import sys, time\n"
         "from pathlib import Path\n"
         "from hanzocloud.keys import resolve_master_key\n"
         "from hanzocloud.rotate import check_master_key\n"
         "check_master_key(Path(sys.argv[1]), resolve_master_key(sys.argv[2]))\n"
         "print('held', flush=True); time.sleep(60)",
         str(target.parents[2]), f"file:{shipped['key']}"],
        stdout=subprocess.PIPE, text=True, env=subprocess_env())
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        result = run_cli("replicate", "restore", "--org=acme", "--service=alpha", "--force",
                         *shipped["flags"])  # type: ignore[misc]
        assert result.returncode == 2 and "is using" in result.stderr, result.stderr
        assert "rerun the restore" in result.stderr and "Traceback" not in result.stderr
        assert target.read_bytes() == before and not list(target.parent.glob("*superseded*"))
    finally:
        holder.kill()
        holder.wait()


def _sink_tenant(shipped: dict[str, object]) -> Path:
    return Path(str(shipped["url"]).removeprefix("file://")) / "replicate" / "acme" / "alpha"


def test_a_latest_generation_without_snapshots_is_refused(
        tmp_path: Path, shipped: dict[str, object]) -> None:
    folder = _sink_tenant(shipped)
    for generation in generations_of(folder):
        for snapshot in (folder / generation / "snapshots").iterdir():
            snapshot.unlink()
    out = tmp_path / "o" / "alpha.db"
    result = run_cli("replicate", "restore", "--org=acme", "--service=alpha", f"--output={out}",
                     *shipped["flags"])  # type: ignore[misc]
    assert result.returncode == 1 and "no snapshot left" in result.stderr, result.stderr
    assert not out.exists()


def test_a_renamed_snapshot_is_refused(tmp_path: Path, shipped: dict[str, object]) -> None:
    folder = _sink_tenant(shipped)
    snapshots = folder / generations_of(folder)[-1] / "snapshots"
    newest = sorted(snapshots.iterdir())[-1]
    match = objects.SNAPSHOT_RE.match(newest.name)
    assert match is not None
    earlier = objects.snapshot_name(int(match[1], 16), int(match[2]) / 1000 - 60)
    newest.rename(snapshots / earlier)  # claims to be a minute older than it is
    out = tmp_path / "o" / "alpha.db"
    result = run_cli("replicate", "restore", "--org=acme", "--service=alpha", f"--output={out}",
                     *shipped["flags"])  # type: ignore[misc]
    assert result.returncode == 1 and "does not carry the time" in result.stderr
    assert not out.exists()


def test_tampered_chain_is_refused(tmp_path: Path, shipped: dict[str, object]) -> None:
    _tamper(shipped)
    flags = shipped["flags"]
    assert isinstance(flags, list)
    out = tmp_path / "o" / "alpha.db"
    result = run_cli("replicate", "restore", "--org=acme", "--service=alpha", f"--output={out}",
                     *flags)
    assert result.returncode == 1
    assert "restore refused" in result.stderr and "cannot be decrypted" in result.stderr
    assert not out.exists()


@pytest.mark.parametrize(("flags", "expected"), [
    ({"dev": True}, "replicate-sink"),
    ({"dev": True, "replicate_url": "memory://explicit"}, "memory://explicit"),
    ({"dev": False, "kms_master_key_ref": "env:X"}, None),
], ids=["dev-default", "explicit-wins", "off-without-url"])
def test_dev_replicates_under_the_data_dir(tmp_path: Path, flags: dict[str, object],
                                           expected: str | None) -> None:
    settings = with_dev_sink(make_settings(tmp_path / "d", **flags))
    if expected is None:
        assert settings.replicate_url is None
    else:
        assert settings.replicate_url is not None and expected in settings.replicate_url


def test_a_restored_sidecar_that_does_not_open_is_one_error_line(
        shipped: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from hanzocloud import keys
    from hanzocloud.replicate.cli import run_restore

    def not_ours(*_: object, **__: object) -> bytes:  # as for a sidecar of an older master
        raise keys.KeyUnwrapError("wrapped under another master key")

    monkeypatch.setattr(keys, "unwrap_dek", not_ours)
    settings = make_settings(tmp_path / "data", kms_master_key_ref=f"file:{shipped['key']}",
                             replicate_url=str(shipped["url"]), dev=False)
    args = argparse.Namespace(org="acme", service="alpha", output=str(tmp_path / "o" / "a.db"),
                              to=None, force=False)
    assert run_restore(settings, args) == 1
    err = capsys.readouterr().err
    assert "key sidecar does not open: wrapped under another master key" in err
    assert "Traceback" not in err
