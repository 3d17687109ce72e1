"""tests/arch checks the source tree itself (imports.py builds the module import graph)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
