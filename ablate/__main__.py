"""``python -m ablate``: the same command as ``ablate``."""

from ablate.cli import console

if __name__ == "__main__":
    console()
