"""``python -m backend.evaluate``: a short name for the evaluation harness, ``backend/tools/evaluate.py``."""
import sys

from backend.tools.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
