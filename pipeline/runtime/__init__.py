"""The stream runtime: faust-streaming 0.15.3, behind one door.

Everything that knows faust lives here: the app and its tables (``app``), the batching consumer
(``consumer``), the RocksDB table stores (``stores``) and the narrow patches of faust's
recovery (``fixes``, applied by :func:`build_app`, never on import; any faust but the pinned
release is refused with :class:`UnsupportedFaustVersion`). The rest of the processor sees the
runtime only through ``pipeline.ports`` (``StreamRuntime``, ``StateTable``). May import:
``pipeline`` (core, sink, restore, ports, settings), ``metering``. Nothing outside this package
imports faust or touches a private faust attribute (``tests/unit/pipeline/test_faust_door.py``).
"""

from pipeline.runtime.app import ProcessorApp, build_app, run_worker
from pipeline.runtime.fixes import FAUST_VERSION, UnsupportedFaustVersion

__all__ = ["FAUST_VERSION", "ProcessorApp", "UnsupportedFaustVersion", "build_app", "run_worker"]
