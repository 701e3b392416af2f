"""`python -m pipeline.cli`: the `pipeline` command."""

from pipeline.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
