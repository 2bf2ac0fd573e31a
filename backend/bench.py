"""``python -m backend.bench``: the benchmark under the name issue 9 uses; see backend/tools/bench.py."""
import sys

from backend.tools.bench import main

if __name__ == "__main__":
    sys.exit(main())
