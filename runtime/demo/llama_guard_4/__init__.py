"""The demo Llama Guard 4: a tiny trained Llama 4 guard built offline on first use (plugin.py)."""
