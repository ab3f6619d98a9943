"""What every console script of the project shares: absl's ``app.run`` with a useful --help.

Entry points stay thin (``main(argv)`` reads flags, checks them and calls one library
function); this only starts them. It lives in ``records`` because that is the package
every other one may import.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from absl import app, flags


def run(main: Callable[[list[str]], object], module_name: str, define_flags=None) -> None:
    """Defines the entry point's flags if needed, then runs ``main`` under absl.

    A console script's ``__main__`` is a generated stub with no docstring and no flags of
    its own, so absl's ``--help`` would show neither; this points it at the entry
    module's usage text and flags (``python -m`` runs need nothing).

    Args:
      main: The absl main function.
      module_name: ``__name__`` of the entry module (whose docstring and flags to show).
      define_flags: Called first, for modules that define their flags on demand rather
        than at import (so that importing several entry points in one process, as the
        tests do, never defines a flag twice).
    """
    if define_flags is not None:
        define_flags()
    module = sys.modules[module_name]
    main_module = sys.modules["__main__"]
    if main_module is not module:
        if not main_module.__doc__:
            main_module.__doc__ = module.__doc__
        for flag in flags.FLAGS.get_flags_for_module(module_name):
            flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    app.run(main)
