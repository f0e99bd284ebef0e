"""A history that fits the model: estimate, budget, fitting, compaction.

See docs/long-conversations.md.
"""
