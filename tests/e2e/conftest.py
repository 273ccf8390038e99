import sys
from pathlib import Path

# the tests import helpers from the top-level conftest
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
