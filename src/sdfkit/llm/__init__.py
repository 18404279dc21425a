"""Talking to models: Message Batches, run pins, tokenizers, chat formats, the offline stand-in."""
