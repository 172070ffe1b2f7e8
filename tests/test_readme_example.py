"""The README's Keras example runs as written, in a fresh process."""
import os
import re
import subprocess
import sys

from tests.conftest import REPO


def test_readme_keras_example_runs(tmp_path):
    readme = open(os.path.join(REPO, "README.md")).read()
    block = re.search(r"<!-- keras-example:start -->\s*```python\n(.*?)```", readme, re.S)
    assert block, "the README lost its Keras example"
    script = tmp_path / "example.py"
    script.write_text(block.group(1))
    result = subprocess.run([sys.executable, str(script)], cwd=str(tmp_path), capture_output=True, text=True,
                            timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [l for l in result.stdout.splitlines() if "% of weights" in l]
    assert [l.split("%")[0] for l in lines] == ["100.0", "80.1", "64.2"]  # output layer pruned at 10%
    assert all(float(l.split()[-1]) > 0.5 for l in lines)  # it learns


def test_readme_is_a_guide_with_the_two_commands_first():
    readme = open(os.path.join(REPO, "README.md")).read()
    assert len(readme.splitlines()) <= 250
    first_block = re.search(r"```bash\n(.*?)```", readme, re.S).group(1)
    assert "tools/env.sh python -m lt_keras.bin.imp --flagfile=flags/quickstart.flags" in first_block
    assert "tools/env.sh python -m pytest" in first_block
    assert "/work/" not in readme and "lt_keras._keras" not in readme  # no machine paths, no private module
    for link in re.findall(r"\]\(((?:docs/)[^)#]+)", readme):
        assert os.path.exists(os.path.join(REPO, link)), link
