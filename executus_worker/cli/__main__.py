"""``python -m executus_worker.cli``: the console script without the installed entry point."""

from executus_worker.cli import main

if __name__ == "__main__":
    main()
