import sys

from ._cli import main

if __name__ == "__main__":  # Lightning's DDP re-runs the entry point per process
    sys.exit(main())
