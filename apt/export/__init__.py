"""Export a checkpoint: ``python -m apt.export ckpt=<path> out=<dir> [format=hf|safetensors] [verify=true]``.

``format=hf`` (default) writes a Hugging Face model directory that transformers loads with
no custom code (GPT-2 for the reference block, Llama for rope/RMSNorm/SwiGLU), checked
against APT's own logits before it is kept; ``format=safetensors`` writes any model's
weights with APT's config. Needs the export extra: ``pip install "apt[export]"``.
"""

from apt.export.architectures import ExportError
from apt.export.exporter import FORMATS, export_checkpoint

__all__ = ["FORMATS", "ExportError", "export_checkpoint"]
