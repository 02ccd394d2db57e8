"""Serve a host built from the test registry: `python serve_test_host.py [flags]`."""

from __future__ import annotations

import sys

from hanzocloud import logging as cloud_logging
from hanzocloud.cli import _run, build_parser
from hanzocloud.config import OPTIONS, load_settings
from hanzocloud.host import build_host
from hanzocloud.server import serve
from testsubsystems import TEST_NAMES, TEST_REGISTRY

args = build_parser().parse_args(sys.argv[1:])
settings = load_settings({n: getattr(args, n, None) for n in OPTIONS}, known=TEST_NAMES)
cloud_logging.configure("info")
sys.exit(_run(serve(build_host(settings, registry=TEST_REGISTRY))))
