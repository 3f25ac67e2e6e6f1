"""Alias kept so that the documented `python -m ttc.flashbench` keeps working: it runs
`python -m ttc.engine.llama.flashbench`, where the measurement lives."""

if __name__ == "__main__":
    import sys

    from ttc.engine.llama.flashbench import main

    sys.exit(main())
