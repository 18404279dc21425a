"""Balanced selection and tokenized training shards."""
