"""A process that writes audit lines, for the tests of a log file shared by several
(tests/unit/test_audit_lines.py).  A spawned process finds its target by module name, so
it lives in a support module of its own, not in a test module."""

from __future__ import annotations

import json

from modelpack.gateway.state.audit import AuditLog


def write_lines(path: str, writer: int, count: int, max_bytes: int) -> None:
    log = AuditLog(path, max_bytes=max_bytes, backups=50)
    for i in range(count):
        log.write(json.dumps({"writer": writer, "i": i, "pad": "x" * 200}))
    log.close()
