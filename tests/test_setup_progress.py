"""scripts/_quiet.sh, the setup scripts' progress: a long stage shows its elapsed time while it
runs (every ``$AUTODECO_PROGRESS_EVERY`` seconds, 30 by default; here 1), then ``done in``;
a failing stage names the log and shows its last lines; a short stage prints nothing."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(tmp_path, body: str):
    script = tmp_path / "s.sh"
    script.write_text(f'set -euo pipefail\nLOG="{tmp_path}/logs/x.log"\nPREFIX=t\n. "{ROOT}/scripts/_quiet.sh"\n{body}\n')
    env = {"PATH": "/usr/bin:/bin", "AUTODECO_PROGRESS_EVERY": "1"}
    return subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=60, env=env)


def test_a_long_stage_shows_its_elapsed_time(tmp_path):
    out = _run(tmp_path, 'stage "waiting"\nquietly sh -c "echo hidden; sleep 3.3"\nquietly true\necho end')
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "t: waiting" and lines[-1] == "end"
    ticks = [line for line in lines if "still running" in line]
    assert [t.split("running, ")[1].split(" ")[0] for t in ticks][:3] == ["0m01s", "0m02s", "0m03s"]
    assert f"(log: {tmp_path}/logs/x.log)" in ticks[0]
    assert lines[-2].startswith("t:   done in 0m0") and "hidden" not in out.stdout
    assert "hidden" in (tmp_path / "logs" / "x.log").read_text()


def test_a_failing_stage_names_the_log_and_its_tail(tmp_path):
    out = _run(tmp_path, 'quietly sh -c "echo boom; exit 3"\necho never')
    assert out.returncode == 1 and "never" not in out.stdout and "done in" not in out.stdout
    assert "t: FAILED: sh -c echo boom; exit 3" in out.stderr and "    boom" in out.stderr
