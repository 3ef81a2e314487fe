"""The CLI's light commands, every bad-flag error and a mistyped data path start without importing torch or timm."""
import json
import subprocess
import sys

import pytest

PROBE = """
import json, sys
from showdown.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps({name: name in sys.modules for name in ("torch", "timm")}), file=sys.__stderr__)
"""


@pytest.mark.parametrize("args", [["--help"], ["presets"], ["models"], ["runs", "list"],
                                  ["run", "--head-dropout", "1.5"], ["run", "--lr", "fast"],
                                  ["run", "--data", "no/such/folder"]])
def test_light_commands_do_not_import_torch(args, tmp_path):
    result = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, cwd=tmp_path,
                            env={"SHOWDOWN_DB": str(tmp_path / "showdown.db"), "PATH": ""})
    imported = json.loads(result.stderr.strip().splitlines()[-1])
    assert imported == {"torch": False, "timm": False}, result.stderr


@pytest.mark.parametrize("args, message", [
    (["predict", "/no/such/run", "x.jpg"], "/no/such/run does not exist"),
    (["explain", "/no/such/run", "x.jpg"], "x.jpg does not exist"),
])
def test_a_heavy_command_failing_after_its_imports_prints_one_line_in_its_own_process(args, message, tmp_path):
    """What the imports of torch, timm, ONNX Runtime and the rest may print (a warning, a log line) shows only in
    a new process: the other tests of these errors run the command in theirs."""
    result = subprocess.run([sys.executable, "-m", "showdown", *args], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
