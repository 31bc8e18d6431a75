"""Model families built from plugins (GPT first)."""
