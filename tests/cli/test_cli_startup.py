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
