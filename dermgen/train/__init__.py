"""Training code: classifier validation of generated data (`classifier`) and LoRA fine-tuning.

Modules are imported on demand (``from dermgen.train.classifier import run_validation``); importing this
package imports nothing heavy.
"""
