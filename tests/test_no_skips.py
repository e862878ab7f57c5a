"""The suite's own rule: a skip fails the run (tests/conftest.py), so no green run tested less than it says."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SKIPS_IN_TESTS = '''
import pytest

def test_skipped_by_a_call():
    pytest.skip("no fixture")

@pytest.mark.skip(reason="marked")
def test_skipped_by_a_mark():
    pass

def test_skipped_by_a_missing_module():
    pytest.importorskip("not_a_module_anywhere")

def test_that_runs():
    pass
'''
SKIP_AT_COLLECTION = 'import pytest\npytest.skip("no browser", allow_module_level=True)\n'


@pytest.mark.parametrize("source, closing, reason", [
    (SKIPS_IN_TESTS, "2 failed, 1 passed, 1 error", "no fixture"),  # a mark skips at setup: an error
    (SKIP_AT_COLLECTION, "1 error", "no browser"),
])
def test_a_skip_fails_with_its_reason(tmp_path, source, closing, reason):
    shutil.copyfile(Path(__file__).with_name("conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_skips.py").write_text(source)
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    closing_line = result.stdout.splitlines()[-1]
    assert result.returncode != 0 and closing in closing_line and "skipped" not in closing_line
    assert f"skipped, and no test may skip: Skipped: {reason}" in result.stdout
