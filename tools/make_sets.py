"""Rebuild assets/sets/ from the emoji dataset:  python tools/make_sets.py [data/emoji64]"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gan.dataset import load_dataset  # noqa: E402
from gan.sets import build_sets  # noqa: E402

if __name__ == "__main__":
    print(build_sets(load_dataset(sys.argv[1] if len(sys.argv) > 1 else "data/emoji64")))
