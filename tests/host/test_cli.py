"""The command line: help, and every bad configuration exits 2 with a one-line message."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest

from conftest import hanzocloud_cmd, subprocess_env


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
    ],
    ids=["unknown-subsystem", "listen-no-port", "listen-port-range", "health-listen-bad",
         "no-master-key", "env-key-missing", "key-not-base64", "key-wrong-length",
         "key-file-missing", "key-ref-malformed", "kms-ref-needs-remote", "unknown-brand",
         "bad-int", "unknown-flag", "env-listen-bad", "unknown-ext-capability",
         "negative-read-budget", "negative-write-budget", "tiny-header-limit",
         "zero-header-timeout", "bad-trusted-proxy",
         "snapshots-shorter-than-wal"],
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
