"""The command line: help, and every bad configuration exits 2 with a one-line message."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import hanzocloud_cmd, start_server, subprocess_env
from hanzocloud.cli import main
from hanzocloud.errors import SubsystemUnavailable
from hanzocloud.keys import KeyUnwrapError


def run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*hanzocloud_cmd(), *args], capture_output=True, text=True,
                          env=subprocess_env(**env), timeout=60)


def test_help_lists_flags_and_commands() -> None:
    result = run(["--help"])
    assert result.returncode == 0
    for word in ("--enable", "--kms-master-key-ref", "--data-dir", "serve", "keys"):
        assert word in result.stdout


def test_subcommand_help_accepts_global_flags() -> None:
    result = run(["keys", "rotate-master", "--help"])
    assert result.returncode == 0
    assert "--new-key-ref" in result.stdout and "--data-dir" in result.stdout


KEY = base64.b64encode(b"k" * 32).decode()


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--enable=nosuch", "--dev"], {}, "unknown subsystem 'nosuch'; valid names"),
        (["--listen=localhost", "--dev"], {}, "--listen: malformed address 'localhost'"),
        (["--listen=:99999", "--dev"], {}, "port 99999 is out of range"),
        (["--health-listen=1.2.3.4:x", "--dev"], {}, "--health-listen: malformed address"),
        ([], {}, "no master key"),
        (["--kms-master-key-ref=env:MISSING_KEY"], {}, "MISSING_KEY is not set"),
        (["--kms-master-key-ref=env:BADKEY"], {"BADKEY": "not base64!!"}, "not valid base64"),
        (["--kms-master-key-ref=env:SHORTKEY"], {"SHORTKEY": base64.b64encode(b"x" * 8).decode()},
         "must decode to 32 bytes"),
        (["--kms-master-key-ref=file:/nonexistent/key"], {}, "cannot read /nonexistent/key"),
        (["--kms-master-key-ref=vault:abc"], {}, "is malformed"),
        (["--kms-master-key-ref=kms://d/o/p"], {}, "needs a remote kms"),
        (["--brand=nosuch", "--dev"], {}, "unknown brand 'nosuch'"),
        (["--body-limit=abc", "--dev"], {}, "bad value 'abc' for body_limit"),
        (["--bogus-flag"], {}, "unrecognized arguments"),
        (["--dev"], {"CLOUD_LISTEN": "nope"}, "malformed address 'nope'"),
        (["--ext-capabilities=nope", "--dev"], {}, "unknown capability 'nope'"),
        (["--tenant-read-budget-ms=-1", "--dev"], {}, "--tenant-read-budget-ms must be 0"),
        (["--dev"], {"CLOUD_TENANT_WRITE_BUDGET_MS": "-5"}, "--tenant-write-budget-ms must be 0"),
        (["--header-limit=100", "--dev"], {}, "--header-limit must be at least 1024"),
        (["--dev"], {"CLOUD_HEADER_TIMEOUT": "0"}, "--header-timeout must be a positive"),
        (["--dev"], {"CLOUD_TRUSTED_PROXIES": "10.0.0.0/8,lb.internal"},
         "--trusted-proxies: 'lb.internal' is not an IP address"),
        (["--dev", "--replicate-snapshot-days=1"], {}, "--replicate-snapshot-days must cover"),
        (["--dev", "--shutdown-timeout=nan"], {}, "bad value 'nan' for shutdown_timeout"),
        (["--dev", "--shutdown-timeout=inf"], {}, "bad value 'inf' for shutdown_timeout"),
        (["--dev", "--shutdown-timeout=-5"], {}, "--shutdown-timeout must be a positive"),
        (["--dev", "--header-timeout=nan"], {}, "bad value 'nan' for header_timeout"),
        (["--dev"], {"CLOUD_TENANT_IDLE_SECONDS": "nan"},
         "CLOUD_TENANT_IDLE_SECONDS: bad value 'nan' for tenant_idle_seconds"),
        (["--dev", "--tenant-idle-seconds=-1"], {}, "--tenant-idle-seconds must be 0"),
        (["--dev", "--replicate-lease-seconds=1e999"], {},
         "bad value '1e999' for replicate_lease_seconds (expected a finite number)"),
        (["--dev", "--tenant-read-budget-ms=-inf"], {}, "bad value '-inf' for tenant_read"),
        (["--dev", "--listen=a\nb"], {}, "--listen: malformed address 'a b'"),
        (["--dev", "--log-level=verbose"], {}, "--log-level: unknown level 'verbose'; use one"),
    ],
    ids=["unknown-subsystem", "listen-no-port", "listen-port-range", "health-listen-bad",
         "no-master-key", "env-key-missing", "key-not-base64", "key-wrong-length",
         "key-file-missing", "key-ref-malformed", "kms-ref-needs-remote", "unknown-brand",
         "bad-int", "unknown-flag", "env-listen-bad", "unknown-ext-capability",
         "negative-read-budget", "negative-write-budget", "tiny-header-limit",
         "zero-header-timeout", "bad-trusted-proxy",
         "snapshots-shorter-than-wal", "nan-shutdown-timeout", "inf-shutdown-timeout",
         "negative-shutdown-timeout", "nan-header-timeout", "env-nan-idle-seconds",
         "negative-idle-seconds", "overflowing-lease-seconds", "minus-inf-read-budget",
         "newline-in-value", "unknown-log-level"],
)
def test_bad_config_exits_2_with_one_line(tmp_path: Path, args: list[str], env: dict[str, str],
                                          message: str) -> None:
    result = run([*args, f"--data-dir={tmp_path / 'data'}"], **env)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.stderr


def test_unwritable_data_dir_exits_2(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = run(["--dev", f"--data-dir={blocker / 'data'}"])
    assert result.returncode == 2
    assert "is not writable" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_config_file_is_lowest_precedence(tmp_path: Path) -> None:
    from hanzocloud.config import load_settings

    cfg = tmp_path / "cloud.toml"
    cfg.write_text('brand = "osage"\ndomain = "from-file"\nlisten = ":7000"\ndev = true\n')
    s = load_settings({"domain": "from-flag", "data_dir": tmp_path}, config_file=cfg,
                      environ={"CLOUD_LISTEN": ":7001"}, known=())
    assert (s.brand, s.domain, s.listen.port) == ("osage", "from-flag", 7001)


def test_config_file_unknown_key(tmp_path: Path) -> None:
    cfg = tmp_path / "cloud.toml"
    cfg.write_text("colour = 1\n")
    result = run([f"--config={cfg}", "--dev", f"--data-dir={tmp_path}"])
    assert result.returncode == 2 and "unknown setting 'colour'" in result.stderr


BINARY = b"\xff\xfe\x00garbage"


@pytest.mark.parametrize(
    ("files", "args", "message"),
    [
        ({"cloud.toml": BINARY}, ["--config={dir}/cloud.toml"], "cloud.toml is not UTF-8 text"),
        ({"brand.toml": BINARY}, ["--brand-file={dir}/brand.toml"],
         "brand.toml is not UTF-8 text"),
        ({"cloud.toml": b'data_dir = "a\\u0000b"\n'}, ["--config={dir}/cloud.toml"],
         "bad value 'a\\x00b' for data_dir (contains a NUL byte)"),
        ({"cloud.toml": b'brand_file = "b\\u0000"\n'}, ["--config={dir}/cloud.toml"],
         "bad value 'b\\x00' for brand_file (contains a NUL byte)"),
        ({"cloud.toml": b"shutdown_timeout = nan\n"}, ["--config={dir}/cloud.toml"],
         "config shutdown_timeout: bad value nan for shutdown_timeout"),
        ({"cloud.toml": b"body_limit = inf\n"}, ["--config={dir}/cloud.toml"],
         "config body_limit: bad value inf for body_limit"),
    ],
    ids=["binary-config", "binary-brand-file", "nul-in-data-dir", "nul-in-brand-file",
         "toml-nan-timeout", "toml-inf-int"],
)
def test_bad_file_exits_2_with_one_line(tmp_path: Path, files: dict[str, bytes],
                                        args: list[str], message: str) -> None:
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    # No --data-dir: the one in the file must be the one that is refused.
    result = subprocess.run([*hanzocloud_cmd(), "--dev", *(a.format(dir=tmp_path) for a in args)],
                            capture_output=True, text=True, env=subprocess_env(), timeout=60,
                            cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.stderr


def test_damaged_key_sidecar_exits_2_with_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    args = [*hanzocloud_cmd(), "--dev", "--enable=iam", f"--data-dir={data}",
            *(f"--{name}=127.0.0.1:0" for name in ("listen", "zap-listen", "health-listen",
                                                   "admin-listen"))]
    first = start_server(args)  # creates the data dir's record of its key and iam's sidecar
    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(timeout=30) == 0
    sidecar = data / "global" / "iam.db.dek"
    sidecar.write_bytes(b"garbage")
    result = subprocess.run(args, capture_output=True, text=True, env=subprocess_env(),
                            timeout=60)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    # The structlog record of the failed unwrap (it names the sidecar) stays; the error
    # itself is the one line that is not a JSON log record.
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if not line.startswith("{")]
    assert errors == [f"hanzocloud: error: a database key under {data} does not open (bad "
                      "length (7 bytes, expected 76)); the key_unwrap_failed log line names its "
                      "sidecar: restore that file from a backup, or pass the master key it was "
                      "made with"], result.stderr
    assert [json.loads(line)["sidecar"] for line in lines if line.startswith("{")
            and "key_unwrap_failed" in line] == [str(sidecar)]


@pytest.mark.parametrize(
    ("error", "status"),
    [(KeyUnwrapError("bad length (7 bytes, expected 76)"), 2),
     (SubsystemUnavailable("kms"), 2),
     (RuntimeError("a bug"), None)],
    ids=["key-unwrap", "cloud-error", "programming-error"],
)
def test_only_the_hosts_own_errors_become_exit_2(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        error: Exception, status: int | None) -> None:
    def fail(*_: object, **__: object) -> None:
        raise error

    monkeypatch.setattr("hanzocloud.host.build_host", fail)
    monkeypatch.setattr("hanzocloud.logging.configure", lambda level: None)
    argv = ["--dev", f"--data-dir={tmp_path}"]
    if status is None:  # a bug keeps its traceback
        with pytest.raises(type(error)):
            main(argv)
        return
    assert main(argv) == status
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hanzocloud: error: ")
