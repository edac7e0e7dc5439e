import os

# Tests run on the CPU; keep XLA from grabbing every core's worth of threads per process.
os.environ.setdefault("JAX_PLATFORMS", "cpu")


def run_cli(args, capsys):
    """Run the `jaxmeta` command in-process: (exit code, stdout, stderr)."""
    from jaxmeta import cli

    try:
        code = cli.main(args)
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err
