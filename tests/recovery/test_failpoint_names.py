"""A server started with ERQPY_FAILPOINT set to a name no fail point has refuses to start,
rather than running a crash test that never crashes."""

import os
import subprocess
import sys


def test_a_server_started_with_a_misspelt_failpoint_refuses_to_start(tmp_path):
    env = dict(os.environ, ERQPY_FAILPOINT="rewrite-befor-rename")
    command = [sys.executable, "-m", "erqpy", "serve", "--host", "127.0.0.1", "--port", "0",
               "--data-dir", str(tmp_path / "data")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode != 0
    assert "listening on" not in result.stdout
    assert "ERQPY_FAILPOINT='rewrite-befor-rename' names no fail point" in result.stderr
