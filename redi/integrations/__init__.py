"""Integrations of the fused losses into other trainers (each needs its own extra):
``redi.integrations.trl`` (extra ``trl``)."""
