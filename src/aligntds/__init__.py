"""aligntds: what did alignment tuning change? Token distribution shifts between a base LLM and its aligned version.

The pipeline (each stage is a script under src/ that calls one function of this package):

    src/logit_analysis.py --mode i2i ...   aligned model on its chat prompt       -> shards/<pair>-i2i.[s:e].pkl
    src/logit_analysis.py --mode i2b ...   base model on the bare query, same ids -> shards/<pair>-i2b.[s:e].pkl
    src/logit_analysis.py --mode pair ...  both models, exact divergences          -> shards/<pair>-pair.[s:e].pkl
    src/scripts/merge_logits.py DIR PAIR MODE                                    -> DIR/<pair>-<mode>.pkl
"""

__version__ = "0.1.0"
