"""The model layer: which model (spec: specs, the demo fallback; hub: is a pretrained tag to be had), loading it
(loading; checkpoint: weights files; quantize: int8), the resident service that encodes images and texts,
classification scores (scoring), batching, device and precision, prompt templates."""
