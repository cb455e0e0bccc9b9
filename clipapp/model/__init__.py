"""The model layer: which model (spec), loading it, the resident service that encodes images and texts, batching,
device and precision, prompt templates."""
