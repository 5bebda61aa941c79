"""The NNCF 2.19 adapter: the `attribution_matching` and `saliency_guided` algorithms for NNCF's JSON-configured
compression-aware training, its training loop, checkpoints and export route.

Importing it (which `import nncf_wcam` does on NNCF 2.x) registers both algorithms: their schemas join NNCF's
config schema and their builders NNCF's algorithm registry, so a config block and `import nncf_wcam` before
`create_compressed_model` are all a project needs.
"""

from nncf_wcam.generation import enable_legacy_tracing
from nncf_wcam.generation import require_nncf_generation

require_nncf_generation(2, "nncf_wcam.nncf2 (the attribution_matching config block and the nncf-wcam command line)")
enable_legacy_tracing()  # before nncf.torch is first imported

from nncf_wcam.nncf2.tested_torch import hide_torch_notice_if_tested  # noqa: E402

hide_torch_notice_if_tested()

from nncf_wcam.nncf2.registration import register_schemas  # noqa: E402
from nncf_wcam.nncf_common import second_order  # noqa: E402

register_schemas()
second_order.install()  # double backprop through NNCF's quantizers on CUDA, as on CPU

from nncf_wcam.nncf2 import attribution_matching  # noqa: E402,F401  (registers the builder)
from nncf_wcam.nncf2 import saliency_guided  # noqa: E402,F401  (registers the builder)
