"""Rebuild assets/sets/ from the emoji dataset:  python -m tools.make_sets [data/emoji64] [set names...]"""
import sys

from gan.dataset import load_dataset
from gan.sets import build_sets

if __name__ == "__main__":
    data = sys.argv[1] if len(sys.argv) > 1 else "data/emoji64"
    print(build_sets(load_dataset(data), names=tuple(sys.argv[2:]) or None))
