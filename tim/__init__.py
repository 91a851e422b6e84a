"""The `tim` command (cli.py) and the whole loop at demo size (demo.py): the top floor.

May import: anything in the project. These are the only modules that import the stages
(synth, train, evaluation, serve), and nothing imports them. The ground the stages share is
`tutorkit`.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tim-tutor")
except PackageNotFoundError:  # a checkout that was never installed
    __version__ = "0+unknown"
