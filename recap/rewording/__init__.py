"""Rewording a prompt: LLM client, prompts and parsing, synonyms and WordNet, multi-turn pipelines, checks."""
