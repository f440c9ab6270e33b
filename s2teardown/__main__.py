"""``python -m s2teardown``."""

from s2teardown.cli import main

if __name__ == "__main__":
    main()
