"""``python -m backend.bench``: a short name for the benchmark, ``backend/tools/bench.py``."""
import sys

from backend.tools.bench import main

if __name__ == "__main__":
    sys.exit(main())
