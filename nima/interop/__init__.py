"""Moving weights between NIMA and other ecosystems (Hugging Face GPT-2: nima.interop.hf)."""
