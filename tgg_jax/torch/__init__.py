"""tgg_jax.torch: TinyGroundingGPT in PyTorch from a `tgg-convert export-hf` directory (the
optional `torch` extra: pip install tgg_jax[torch]).

    model = TinyGroundingGPT.from_pretrained(DIR)
    processor = TGGProcessor.from_pretrained(DIR)
    inputs = processor(["Output the coordinate of the red circle."], images=["scene.png"])
    print(processor.decode(model.generate(**inputs, max_new_tokens=32)))
"""

from tgg_jax.torch.model import TGGExportConfig, TinyGroundingGPT
from tgg_jax.torch.processor import TGGProcessor

__all__ = ["TGGExportConfig", "TGGProcessor", "TinyGroundingGPT"]
